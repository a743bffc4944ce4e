"""Prune a (robust) model and fine-tune it adversarially, with a before/after report.

:func:`robust_prune` is :func:`~advkit.recipes.iterative_prune` followed by an evaluation of
the model before and after: parameters, FLOPs, and clean and robust accuracy with Wilson
intervals (:func:`advkit.evaluation.robust_accuracy`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from advkit.attacks import Attack
from advkit.evaluation import AccuracyEstimate, accuracy, robust_accuracy
from advkit.pruning.importance import Importance, l1_filter_norm
from advkit.recipes.robust_importance import PlannedImportance
from advkit.recipes.schedule import PruningSchedule, iterative_prune

__all__ = ["ModelSummary", "RobustPruneResult", "robust_prune", "summarize_model"]


@dataclass(frozen=True)
class ModelSummary:
    """Size and accuracy of one model.

    Attributes:
        params: Parameter count.
        flops: FLOPs (multiply-accumulates of conv and linear layers) on the example inputs.
        clean: Clean accuracy with its interval, or ``None`` if not evaluated.
        robust: Robust accuracy under the evaluation attack, or ``None``.
    """

    params: int
    flops: int
    clean: AccuracyEstimate | None = None
    robust: AccuracyEstimate | None = None


@dataclass(frozen=True)
class RobustPruneResult:
    """What :func:`robust_prune` returns.

    Attributes:
        model: The pruned, fine-tuned model.
        schedule: Every step's plan, widths and cost.
        before: The model before pruning.
        after: The pruned, fine-tuned model.
        attack: ``repr`` of the evaluation attack, or ``None``.
    """

    model: nn.Module
    schedule: PruningSchedule
    before: ModelSummary
    after: ModelSummary
    attack: str | None = None

    def to_markdown(self) -> str:
        """A before/after table (accuracies in %, 95% Wilson intervals in brackets)."""

        def acc(value: AccuracyEstimate | None) -> str:
            return value.format() if value is not None else "-"

        lines = [
            "| model | parameters | FLOPs | clean acc. (%) | robust acc. (%) |",
            "|---|---:|---:|---|---|",
        ]
        for label, summary in (("before", self.before), ("after", self.after)):
            lines.append(
                f"| {label} | {summary.params:,} | {summary.flops:,} | {acc(summary.clean)} | "
                f"{acc(summary.robust)} |"
            )
        cost = self.schedule.seconds
        lines.append("")
        lines.append(
            f"Importance {self.schedule.importance}, ratio {self.schedule.ratio:g} in "
            f"{len(self.schedule.steps)} step(s); scoring {cost['importance']:.1f} s, "
            f"fine-tuning {cost['finetune']:.1f} s"
            + (f"; robust accuracy under {self.attack}" if self.attack else "")
        )
        return "\n".join(lines)


def summarize_model(
    model: nn.Module,
    *,
    params: int,
    flops: int,
    loader: Iterable[Any] | None = None,
    attack: Attack | None = None,
) -> ModelSummary:
    """Clean (and, with ``attack``, robust) accuracy of ``model`` on ``loader``, with its size.

    Args:
        model: The model to evaluate (in eval mode; its flags are restored).
        params: Its parameter count.
        flops: Its FLOPs.
        loader: Evaluation batches, or ``None`` to report the size only.
        attack: The attack for robust accuracy, or ``None`` for clean accuracy only.
    """
    if loader is None:
        return ModelSummary(params, flops)
    if attack is None:
        return ModelSummary(params, flops, accuracy(model, loader, progress=False))
    result = robust_accuracy(model, loader, attack, progress=False)
    return ModelSummary(params, flops, result.clean, result.robust)


def robust_prune(
    model: nn.Module,
    example_inputs: Tensor | Sequence[Tensor],
    *,
    ratio: float,
    targets: str | Sequence[str],
    importance: Importance | PlannedImportance = l1_filter_norm,
    finetune: Callable[[nn.Module], Any] | None = None,
    steps: int = 1,
    eval_loader: Iterable[Any] | None = None,
    eval_attack: Attack | None = None,
    strict: bool = True,
    leaf_types: Iterable[type[nn.Module]] = (),
) -> RobustPruneResult:
    """Prune ``model``, fine-tune it, and measure what that cost in accuracy and robustness.

    Args:
        model: The (adversarially trained) network; it is not changed.
        example_inputs: One input batch, for the analysis and the FLOP counts.
        ratio: Final fraction of each selected group's channels removed, in ``[0, 1)``.
        targets: Module-name patterns selecting the layers to prune.
        importance: How channels are ranked: :func:`~advkit.pruning.l1_filter_norm`,
            :class:`~advkit.recipes.AdversarialTaylor`,
            :class:`~advkit.recipes.RobustScoreLearner`, or any importance.
        finetune: The fine-tune after each step, usually a :class:`~advkit.recipes.FineTune`.
        steps: Number of pruning steps (see :func:`~advkit.recipes.iterative_prune`).
        eval_loader: Batches to evaluate on before and after, or ``None`` to skip.
        eval_attack: Attack for robust accuracy (the strongest you have), or ``None``;
            needs ``eval_loader``.
        strict: If ``False``, selected layers that cannot be pruned are skipped.
        leaf_types: Module types the tracer keeps opaque.

    Returns:
        The pruned model, its schedule, and the before/after summaries.

    Example:
        >>> import torch
        >>> from advkit.attacks import PGD
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3),
        ...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> data = [(torch.rand(8, 3, 8, 8), torch.randint(0, 2, (8,)))]
        >>> result = robust_prune(net, torch.rand(1, 3, 8, 8), ratio=0.5, targets="0",
        ...                       eval_loader=data, eval_attack=PGD(eps=2 / 255, steps=2))
        >>> result.after.params < result.before.params, result.after.robust.total
        (True, 8)

    Raises:
        ValueError: If ``eval_attack`` is given without ``eval_loader`` (it would be ignored),
            and as :func:`~advkit.recipes.iterative_prune`.
    """
    if eval_attack is not None and eval_loader is None:
        raise ValueError(
            "eval_attack needs eval_loader: without batches to evaluate on, the attack would "
            "be ignored; pass eval_loader=... or drop eval_attack"
        )
    pruned, schedule = iterative_prune(
        model,
        example_inputs,
        ratio=ratio,
        targets=targets,
        importance=importance,
        steps=steps,
        finetune=finetune,
        strict=strict,
        leaf_types=leaf_types,
    )
    before = summarize_model(
        model,
        params=schedule.params_before,
        flops=schedule.flops_before,
        loader=eval_loader,
        attack=eval_attack,
    )
    after = summarize_model(
        pruned,
        params=schedule.params_after,
        flops=schedule.flops_after,
        loader=eval_loader,
        attack=eval_attack,
    )
    return RobustPruneResult(
        pruned, schedule, before, after, repr(eval_attack) if eval_attack is not None else None
    )
