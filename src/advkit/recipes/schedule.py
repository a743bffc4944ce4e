"""Iterative pruning: reach the final widths in k steps, each followed by a short fine-tune.

:func:`iterative_prune` removes the channels of the selected groups in ``steps`` equal slices
(in channels removed), re-scoring the channels on the current model before every step, and runs
a :class:`FineTune` (any :class:`~advkit.training.Trainer` objective) after each. The final
widths are exactly those of a one-shot ``Pruner(ratio=ratio, targets=targets)``. The result,
:class:`PruningSchedule`, records every step's plan, widths and cost.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from advkit._checks import check_int, check_real
from advkit.attacks import Attack
from advkit.pruning.apply import carry_out
from advkit.pruning.channels import ChannelGroup
from advkit.pruning.importance import Importance, l1_filter_norm
from advkit.pruning.plan import GroupPlan, PruningPlan
from advkit.pruning.pruner import Pruner
from advkit.pruning.stats import count_flops, count_parameters
from advkit.recipes.robust_importance import PlannedImportance
from advkit.training import History, Objective, Trainer

__all__ = ["FineTune", "PruneStep", "PruningSchedule", "iterative_prune", "plan_widths"]


@dataclass
class FineTune:
    """A fine-tuning recipe: what :class:`~advkit.training.Trainer` runs after a pruning step.

    Attributes:
        train_loader: Training batches ``(inputs, labels)``.
        epochs: Epochs per fine-tune (0 skips it).
        optimizer: Factory called with the pruned model's parameters, e.g.
            ``lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9)``.
        objective: A Trainer objective (TRADES, MART, ...), or ``None`` for the default one
            made from ``attack`` and ``adv_weight``.
        attack: Attack of the default objective (``None``: standard fine-tuning).
        adv_weight: Weight of the adversarial loss in the default objective.
        scheduler: Factory called with the optimizer, or ``None``.
        device: Where to train (the Trainer's default if ``None``).
        progress: Show the Trainer's progress bars.
    """

    train_loader: Iterable[Any]
    epochs: int
    optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
    objective: Objective | None = None
    attack: Attack | None = None
    adv_weight: float = 1.0
    scheduler: Callable[[torch.optim.Optimizer], Any] | None = None
    device: torch.device | str | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        check_int(self.epochs, "epochs", minimum=0)
        check_real(self.adv_weight, "adv_weight", low=0, high=1)
        if not callable(self.optimizer):
            raise TypeError(
                "optimizer must be a factory called with the parameters, got "
                f"{type(self.optimizer).__name__}"
            )
        if self.objective is not None and self.attack is not None:
            raise ValueError("give either objective= or attack=/adv_weight=, not both")

    def __call__(self, model: nn.Module) -> History:
        """Fine-tune ``model`` in place and return the Trainer's history."""
        if self.epochs == 0:
            return History()
        options: dict[str, Any] = (
            {"objective": self.objective}
            if self.objective is not None
            else {"attack": self.attack, "adv_weight": self.adv_weight if self.attack else 0.5}
        )
        trainer = Trainer(
            model,
            self.optimizer,
            scheduler=self.scheduler,
            device=self.device,
            progress=self.progress,
            **options,
        )
        return trainer.fit(self.train_loader, epochs=self.epochs)


@dataclass(frozen=True)
class PruneStep:
    """One step of an iterative schedule.

    Attributes:
        index: Step number, from 1.
        plan: The plan of this step, made on the model after the previous step.
        widths: Channels kept in each pruned layer after this step.
        importance_seconds: Wall time of scoring the channels (and planning).
        finetune_seconds: Wall time of the fine-tune after the step.
        history: The fine-tune's metrics per epoch (as plain dicts).
    """

    index: int
    plan: PruningPlan
    widths: dict[str, int]
    importance_seconds: float
    finetune_seconds: float
    history: tuple[dict[str, float], ...] = field(default=())


@dataclass(frozen=True)
class PruningSchedule:
    """An iterative pruning run: the steps, their widths and what they cost.

    Attributes:
        ratio: Final fraction of each group's channels removed.
        targets: The module-name patterns that selected the layers.
        importance: Name of the importance.
        initial_widths: Channels of each pruned layer before the first step.
        steps: The steps, in order.
        params_before: Parameters of the model before pruning.
        params_after: Parameters after the last step.
        flops_before: FLOPs on the example inputs before pruning.
        flops_after: FLOPs after the last step.
    """

    ratio: float
    targets: tuple[str, ...]
    importance: str
    initial_widths: dict[str, int]
    steps: tuple[PruneStep, ...]
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int

    @property
    def final_widths(self) -> dict[str, int]:
        """Channels kept in each pruned layer at the end."""
        return dict(self.steps[-1].widths) if self.steps else dict(self.initial_widths)

    @property
    def seconds(self) -> dict[str, float]:
        """Total wall time of scoring and of fine-tuning."""
        return {
            "importance": sum(step.importance_seconds for step in self.steps),
            "finetune": sum(step.finetune_seconds for step in self.steps),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible built-in types (every step's plan included)."""
        return {
            "ratio": self.ratio,
            "targets": list(self.targets),
            "importance": self.importance,
            "initial_widths": dict(self.initial_widths),
            "steps": [
                {
                    "index": step.index,
                    "plan": step.plan.to_dict(),
                    "widths": dict(step.widths),
                    "importance_seconds": step.importance_seconds,
                    "finetune_seconds": step.finetune_seconds,
                    "history": [dict(row) for row in step.history],
                }
                for step in self.steps
            ],
            "params_before": self.params_before,
            "params_after": self.params_after,
            "flops_before": self.flops_before,
            "flops_after": self.flops_after,
        }

    def summary(self) -> str:
        """One line per step: widths of the first layers, parameters and cost."""
        lines = [
            f"Iterative pruning: ratio {self.ratio:g} in {len(self.steps)} step(s), "
            f"importance {self.importance}, targets {', '.join(self.targets)}"
        ]
        for step in self.steps:
            lines.append(
                f"step {step.index}: {sum(step.widths.values())} of "
                f"{sum(self.initial_widths.values())} filters kept, params "
                f"{step.plan.params_after:,}, scoring {step.importance_seconds:.1f} s, "
                f"fine-tune {step.finetune_seconds:.1f} s"
            )
        lines.append(f"parameters: {self.params_before:,} -> {self.params_after:,}")
        lines.append(f"FLOPs: {self.flops_before:,} -> {self.flops_after:,}")
        return "\n".join(lines)


def plan_widths(
    model: nn.Module,
    example_inputs: Tensor | Sequence[Tensor],
    *,
    targets: str | Sequence[str],
    widths: Mapping[tuple[str, ...], int] | Callable[[int], int],
    importance: Importance | PlannedImportance = l1_filter_norm,
    strict: bool = True,
    leaf_types: Iterable[type[nn.Module]] = (),
) -> PruningPlan:
    """A plan keeping exactly ``widths`` channels of each group, the best by ``importance``.

    Where :class:`~advkit.pruning.Pruner` removes one ratio of every group, this keeps a given
    number per group. Ties go to the lower index, as in the pruner.

    Args:
        model: The network to prune.
        example_inputs: One input batch, as for :meth:`Pruner.plan`.
        targets: Module-name patterns selecting the layers, as for the pruner.
        widths: Channels to keep per group, keyed by the group's producing layers, or a
            function of the group's current channel count.
        importance: An importance, or a :class:`~advkit.recipes.PlannedImportance` (its
            ``prepare`` is called with a plan holding the widths).
        strict: If ``False``, selected layers that cannot be pruned are skipped (and listed
            in the plan's ``skipped``) instead of raising, as for the pruner.
        leaf_types: Module types the tracer keeps opaque.

    Returns:
        The plan, with parameters and FLOPs after pruning measured.

    Raises:
        ValueError: If a width is outside ``[1, channels]`` or a group has no width.
    """
    draft = Pruner(ratio=0.0, targets=targets, strict=strict, leaf_types=leaf_types).plan(
        model, example_inputs
    )
    groups = []
    for group in draft.groups:
        producers = group.layers
        if callable(widths):
            keep = widths(group.channels)
        elif producers in widths:
            keep = widths[producers]
        else:
            raise ValueError(f"no width given for the group made by {producers}")
        check_int(keep, f"width of {producers}")
        if not 1 <= keep <= group.channels:
            raise ValueError(f"width of {producers} must be in [1, {group.channels}], got {keep}")
        groups.append(dataclasses.replace(group, keep=tuple(range(keep))))
    sized = dataclasses.replace(draft, groups=tuple(groups))
    scorer = (
        importance.prepare(model, sized)
        if isinstance(importance, PlannedImportance)
        else importance
    )
    name = getattr(scorer, "__name__", repr(scorer))
    ranked_groups = []
    for group in sized.groups:
        scores = scorer(ChannelGroup(group.channels, group.uses), model)
        if not isinstance(scores, Tensor) or scores.shape != (group.channels,):
            raise ValueError(
                f"importance {name} must return a [{group.channels}] tensor for "
                f"{group.layers}, got {getattr(scores, 'shape', type(scores).__name__)}"
            )
        values = scores.detach().cpu().double().tolist()
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"importance {name} returned non-finite scores for {group.layers}")
        ranked = sorted(range(group.channels), key=lambda i: (-values[i], i))
        ranked_groups.append(
            GroupPlan(group.channels, tuple(sorted(ranked[: len(group.keep)])), group.uses)
        )
    removed = sum(g.channels - len(g.keep) for g in ranked_groups)
    total = sum(g.channels for g in ranked_groups)
    plan = dataclasses.replace(
        sized, groups=tuple(ranked_groups), ratio=removed / total if total else 0.0
    )
    pruned = carry_out(model, plan)
    return dataclasses.replace(
        plan,
        params_after=count_parameters(pruned),
        flops_after=count_flops(pruned, example_inputs),
    )


def iterative_prune(
    model: nn.Module,
    example_inputs: Tensor | Sequence[Tensor],
    *,
    ratio: float,
    targets: str | Sequence[str],
    importance: Importance | PlannedImportance = l1_filter_norm,
    steps: int = 1,
    finetune: Callable[[nn.Module], Any] | None = None,
    strict: bool = True,
    leaf_types: Iterable[type[nn.Module]] = (),
) -> tuple[nn.Module, PruningSchedule]:
    """Prune to ``ratio`` in ``steps`` steps, fine-tuning after each; the model is not changed.

    A group of ``C`` channels ends with ``C - min(round(ratio * C), C - 1)`` channels, the
    widths of a one-shot :class:`~advkit.pruning.Pruner`; after step ``i`` of ``k`` it has
    ``C - round(removed * i / k)``, so every step removes an equal share. Before each step the
    channels are scored on the current (fine-tuned) model.

    Args:
        model: The network to prune (a copy is pruned and fine-tuned).
        example_inputs: One input batch, for the analysis and the FLOP counts.
        ratio: Final fraction of each selected group's channels removed, in ``[0, 1)``.
        targets: Module-name patterns selecting the layers, as for the pruner.
        importance: An importance, or a :class:`~advkit.recipes.PlannedImportance` such as
            :class:`~advkit.recipes.AdversarialTaylor` or
            :class:`~advkit.recipes.RobustScoreLearner`, prepared anew for every step.
        steps: Number of pruning steps.
        finetune: Called with the pruned model after each step, training it in place: a
            :class:`FineTune` or any callable (its result is kept in the history if it is a
            :class:`~advkit.training.History`); ``None`` for no fine-tuning.
        strict: If ``False``, selected layers that cannot be pruned are skipped (listed in
            each step plan's ``skipped``) instead of raising.
        leaf_types: Module types the tracer keeps opaque.

    Returns:
        The pruned (and fine-tuned) model, and the schedule with every step's plan and cost.

    Raises:
        ValueError: If ``ratio`` is outside ``[0, 1)`` or ``steps < 1``.
        TypeError: If ``finetune`` is not callable.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 10, 3), nn.ReLU(), nn.Conv2d(10, 4, 3),
        ...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> pruned, schedule = iterative_prune(net, torch.rand(1, 3, 8, 8), ratio=0.7,
        ...                                    targets="0", steps=3)
        >>> [step.widths["0"] for step in schedule.steps]
        [8, 5, 3]
    """
    check_real(ratio, "ratio", low=0, high=1, open_high=True)
    check_int(steps, "steps", minimum=1)
    if finetune is not None and not callable(finetune):
        raise TypeError(f"finetune must be callable, got {type(finetune).__name__}")
    name = getattr(importance, "__name__", repr(importance))
    start = Pruner(ratio=0.0, targets=targets, strict=strict, leaf_types=leaf_types).plan(
        model, example_inputs
    )
    initial = {group.layers: group.channels for group in start.groups}  # by producing layers
    removed = {  # the one-shot pruner's count, split over the steps
        layers: min(round(ratio * channels), channels - 1) for layers, channels in initial.items()
    }
    current = model
    records: list[PruneStep] = []
    for index in range(1, steps + 1):
        tic = time.perf_counter()
        inputs = _on_device(example_inputs, current)
        plan = plan_widths(
            current,
            inputs,
            targets=targets,
            widths={
                layers: initial[layers] - round(count * index / steps)
                for layers, count in removed.items()
            },
            importance=importance,
            strict=strict,
            leaf_types=leaf_types,
        )
        current = carry_out(current, plan)
        scored = time.perf_counter() - tic
        tic = time.perf_counter()
        outcome = finetune(current) if finetune is not None else None
        tuned = time.perf_counter() - tic
        history = tuple(dict(row) for row in outcome) if isinstance(outcome, History) else ()
        records.append(
            PruneStep(
                index=index,
                plan=plan,
                widths=plan.kept_filters(),
                importance_seconds=scored,
                finetune_seconds=tuned,
                history=history,
            )
        )
    schedule = PruningSchedule(
        ratio=float(ratio),
        targets=start.targets,
        importance=name,
        initial_widths={
            layer: channels for layers, channels in initial.items() for layer in layers
        },
        steps=tuple(records),
        params_before=start.params_before,
        params_after=count_parameters(current),
        flops_before=start.flops_before,
        flops_after=count_flops(current, _on_device(example_inputs, current)),
    )
    return current, schedule


def _on_device(example_inputs: Tensor | Sequence[Tensor], model: nn.Module) -> Any:
    """The example inputs on the device of ``model``'s parameters (where fine-tuning put it)."""
    param = next(model.parameters(), None)
    if param is None:
        return example_inputs
    if isinstance(example_inputs, Tensor):
        return example_inputs.to(param.device)
    return [x.to(param.device) if isinstance(x, Tensor) else x for x in example_inputs]
