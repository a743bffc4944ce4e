"""Transferability: robust accuracy of every target under attacks crafted on every surrogate."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from advkit._checks import check_confidence
from advkit.attacks import Attack, CheckOutcome
from advkit.attacks.outcome import warn_failed
from advkit.evaluation._runtime import (
    JsonResult,
    WorkCount,
    check_kind,
    check_model,
    check_same_total,
    checks_markdown,
    field_of,
    markdown_table,
    new_axes,
    predict_correct,
    read_list,
    read_nested,
)
from advkit.evaluation.loop import EvaluationLoop, attack_batch
from advkit.evaluation.metrics import AccuracyEstimate
from advkit.evaluation.robust import check_attack
from advkit.evaluation.sanity import (
    ThreatModelCheck,
    check_eval_mode,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["TransferMatrix", "transfer_matrix"]

_KIND = "advkit.TransferMatrix"


@dataclass(frozen=True)
class TransferMatrix(JsonResult):
    """Robust accuracy of each target under adversarial examples crafted on each surrogate.

    Attributes:
        attack: ``repr`` of the attack run on the surrogates.
        surrogates: Names of the surrogate models (rows).
        targets: Names of the target models (columns).
        clean: Clean accuracy of each target.
        robust: ``robust[i][j]``: accuracy of ``targets[j]`` under examples crafted on
            ``surrogates[i]``. Where a surrogate is its target, this is the white-box number.
        work: Passes through the models (the attack's passes are the surrogates').
        checks: The sanity checks and their outcome.
    """

    attack: str
    surrogates: tuple[str, ...]
    targets: tuple[str, ...]
    clean: tuple[AccuracyEstimate, ...]
    robust: tuple[tuple[AccuracyEstimate, ...], ...]
    work: WorkCount
    checks: tuple[CheckOutcome, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.attack, str):
            raise TypeError(f"attack must be a str, got {type(self.attack).__name__}")
        for role, names in (("surrogates", self.surrogates), ("targets", self.targets)):
            if not names or not all(isinstance(name, str) for name in names):
                raise TypeError(f"{role} must be a non-empty sequence of names (str)")
            if len(set(names)) != len(names):
                raise ValueError(f"{role} must be distinct, got {list(names)}")
        if len(self.clean) != len(self.targets):
            raise ValueError(
                f"clean must hold one accuracy per target ({len(self.targets)}), got "
                f"{len(self.clean)}"
            )
        if len(self.robust) != len(self.surrogates) or any(
            len(row) != len(self.targets) for row in self.robust
        ):
            raise ValueError(
                f"robust must have {len(self.surrogates)} rows (surrogates) of "
                f"{len(self.targets)} cells (targets)"
            )
        if not isinstance(self.work, WorkCount):
            raise TypeError(f"work must be a WorkCount, got {type(self.work).__name__}")
        for check in self.checks:
            if not isinstance(check, CheckOutcome):
                raise TypeError(f"checks must be CheckOutcome objects, got {type(check).__name__}")
        first = self.clean[0]
        for j, clean in enumerate(self.clean):
            if not isinstance(clean, AccuracyEstimate):
                raise TypeError(f"clean[{j}] must be an AccuracyEstimate")
            check_same_total(clean, first, f"clean[{j}]")
            for i, row in enumerate(self.robust):
                cell = row[j]
                where = f"robust[{i}][{j}]"
                if not isinstance(cell, AccuracyEstimate):
                    raise TypeError(f"{where} must be an AccuracyEstimate")
                check_same_total(cell, first, where)
                if cell.correct > clean.correct:
                    raise ValueError(
                        f"{where}: robust accuracy cannot exceed the target's clean accuracy: "
                        f"{cell.correct} > {clean.correct} of {clean.total}"
                    )

    @property
    def passed(self) -> bool:
        """Whether no sanity check failed."""
        return all(check.passed is not False for check in self.checks)

    def to_markdown(self, ci: bool = True) -> str:
        """Surrogates as rows, targets as columns, accuracies in % with Wilson intervals."""
        header = ["surrogate \\ target", *self.targets]
        rows = [["(clean)", *(c.format(ci) for c in self.clean)]] + [
            [name, *(cell.format(ci) for cell in row)]
            for name, row in zip(self.surrogates, self.robust, strict=True)
        ]
        return (
            f"Robust accuracy (%) of each target under {self.attack} crafted on each surrogate.\n\n"
            f"{markdown_table(header, rows)}\n\nSanity checks:\n\n{checks_markdown(self.checks)}\n"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` reads it back."""
        return {
            "kind": _KIND,
            "attack": self.attack,
            "surrogates": list(self.surrogates),
            "targets": list(self.targets),
            "clean": [c.to_dict() for c in self.clean],
            "robust": [[cell.to_dict() for cell in row] for row in self.robust],
            "work": self.work.to_dict(),
            "checks": [check.to_dict() for check in self.checks],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransferMatrix:
        """Inverse of :meth:`to_dict`.

        Raises:
            TypeError: If a field has the wrong type (nothing is coerced).
            ValueError: If a field is missing or impossible, or the fields contradict each
                other (a cell above its target's clean accuracy, other totals, a ragged row).
        """
        check_kind(data, _KIND)

        def read(key: str) -> Any:
            return field_of(data, key, "TransferMatrix")

        return cls(
            attack=read("attack"),
            surrogates=tuple(read_list(read("surrogates"), "surrogates")),
            targets=tuple(read_list(read("targets"), "targets")),
            clean=tuple(
                read_nested(f"clean[{j}]", AccuracyEstimate.from_dict, c)
                for j, c in enumerate(read_list(read("clean"), "clean"))
            ),
            robust=tuple(
                tuple(
                    read_nested(f"robust[{i}][{j}]", AccuracyEstimate.from_dict, cell)
                    for j, cell in enumerate(read_list(row, f"robust[{i}]"))
                )
                for i, row in enumerate(read_list(read("robust"), "robust"))
            ),
            work=read_nested("work", WorkCount.from_dict, read("work")),
            checks=tuple(
                read_nested(f"checks[{i}]", CheckOutcome.from_dict, check)
                for i, check in enumerate(read_list(read("checks"), "checks"))
            ),
        )

    def plot(self, ax: Axes | None = None) -> Figure:
        """A heat map of the robust accuracies, each cell annotated in %.

        Raises:
            ImportError: If matplotlib (an optional dependency) is not installed.
        """
        size = (1.5 + 1.2 * len(self.targets), 1.0 + 0.8 * len(self.surrogates))
        figure, ax = new_axes(ax, size)
        values = [[100 * cell.value for cell in row] for row in self.robust]
        image = ax.imshow(values, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        for i, row in enumerate(values):
            for j, value in enumerate(row):
                color = "black" if value > 60 else "white"
                ax.text(j, i, f"{value:.1f}", ha="center", va="center", color=color)
        ax.set_xticks(range(len(self.targets)), list(self.targets))
        ax.set_yticks(range(len(self.surrogates)), list(self.surrogates))
        ax.set_xlabel("target")
        ax.set_ylabel("surrogate")
        ax.set_title(f"robust accuracy (%) under {self.attack}")
        figure.colorbar(image, ax=ax, label="accuracy (%)")
        return figure


def _named(
    models: Mapping[str, nn.Module] | Sequence[nn.Module], role: str
) -> dict[str, nn.Module]:
    if isinstance(models, nn.Module):
        raise TypeError(f"{role}s must be a mapping or sequence of models, got a single module")
    if isinstance(models, Mapping):
        named = {str(name): model for name, model in models.items()}
    elif isinstance(models, Sequence):
        named = {f"{role}{i}": model for i, model in enumerate(models)}
    else:
        raise TypeError(
            f"{role}s must be a mapping of names to models or a sequence of models, "
            f"got {type(models).__name__}"
        )
    if not named:
        raise ValueError(f"{role}s must hold at least one model, got none")
    for name, model in named.items():
        check_model(model, f"{role} {name!r}")
    return named


def transfer_matrix(
    surrogates: Mapping[str, nn.Module] | Sequence[nn.Module],
    targets: Mapping[str, nn.Module] | Sequence[nn.Module],
    loader: Iterable[Any],
    attack: Attack,
    *,
    generator: torch.Generator | None = None,
    progress: bool = True,
    confidence: float = 0.95,
    distributed: bool | None = None,
) -> TransferMatrix:
    """Accuracy of every target under adversarial examples crafted on every surrogate.

    Each batch is attacked once per surrogate and the examples are shown to every target, so
    the matrix costs one attack per surrogate, not per pair. Cell ``(s, t)`` equals
    ``robust_accuracy(t, loader, Transfer(s, attack))``: a sample is robust if target ``t``
    classifies it correctly both clean and after the transfer. All models run in eval mode on
    the device of the inputs' first target and get their flags back. Under ``torchrun`` every
    process attacks its share of the loader and returns the matrix of the whole of it (see
    :mod:`advkit.evaluation.distributed`).

    Args:
        surrogates: Models to craft on, by name (or a sequence, named ``surrogate0``, ...).
        targets: Models to evaluate, by name (or a sequence, named ``target0``, ...). A model
            may be both; its diagonal cell is then the white-box robust accuracy.
        loader: Iterable of ``(inputs, labels)`` batches; it is iterated once.
        attack: An untargeted attack with a scalar eps, run on each surrogate to its end.
        generator: Randomness for attacks with random starts: drawn from once, then each
            batch's starts come from a generator seeded by that draw and the batch's index, so
            the result does not depend on the number of processes.
        progress: Show a progress bar.
        confidence: Coverage of the reported Wilson intervals.
        distributed: ``None`` to share the loader among the processes exactly when several
            run (``torchrun``), ``False`` to evaluate all of it in this process, ``True`` to
            require several processes.

    Returns:
        A :class:`TransferMatrix`.

    Raises:
        TypeError: If a model or the attack has the wrong type, or the loader yields
            something else than ``(inputs, labels)`` tensor pairs.
        ValueError: If there is no surrogate or target, the attack is targeted or has a
            per-sample eps, or the loader is empty or yields a malformed batch, or the
            processes under ``torchrun`` were called differently.
        RuntimeError: Under ``torchrun``, if another process failed or did not start the
            evaluation.

    References:
        Papernot, McDaniel and Goodfellow, "Transferability in Machine Learning: from Phenomena
        to Black-Box Attacks using Adversarial Samples", arXiv:1605.07277, 2016.
    """
    sources = _named(surrogates, "surrogate")
    sinks = _named(targets, "target")
    check_attack(attack)
    check_confidence(confidence)
    mode_check = check_eval_mode(
        {f"surrogate {k!r}": m for k, m in sources.items()}
        | {f"target {k!r}": m for k, m in sinks.items()},
        [attack],
    )
    threat = ThreatModelCheck(attack)
    robust = torch.zeros(len(sources), len(sinks), dtype=torch.long)
    call = f"transfer_matrix({list(sources)}, {list(sinks)}, {attack!r})"
    with EvaluationLoop(
        loader,
        list(sinks.values()),
        call=call,
        bounds=attack.bounds,
        held=list(sources.values()),
        distributed=distributed,
        generator=generator,
        progress=progress,
        description="transfer",
    ) as loop:
        for batch in loop:
            # Craft only for samples some target gets right: the others are lost anyway.
            needed = batch.correct.any(dim=0)
            for i, surrogate in enumerate(sources.values()):
                crafted = attack_batch(
                    surrogate, batch.inputs, batch.labels, attack, attacked=needed,
                    generator=batch.generator, early_stop=False, threat=threat,
                )  # fmt: skip
                if crafted.result is None:
                    break  # no sample needed: nothing to craft for any surrogate
                loop.work += crafted.work
                kept = needed.nonzero().flatten()
                for j, target in enumerate(sinks.values()):
                    survived = predict_correct(
                        target, crafted.result.adversarial, batch.labels[kept]
                    )
                    robust[i, j] += int((survived & batch.correct[j, kept]).sum())
                    loop.work += WorkCount(forward_calls=1, forward_samples=kept.numel())
    totals = loop.totals({"robust": robust})
    clean, total, work = totals.clean, totals.total, totals.work
    robust_counts = totals.counts["robust"].tolist()

    threat.all_reduce(loop.shard)
    checks = (mode_check, *threat.results())
    warn_failed(checks)
    return TransferMatrix(
        attack=repr(attack),
        surrogates=tuple(sources),
        targets=tuple(sinks),
        clean=tuple(AccuracyEstimate(c, total, confidence) for c in clean),
        robust=tuple(
            tuple(AccuracyEstimate(c, total, confidence) for c in row) for row in robust_counts
        ),
        work=work,
        checks=checks,
    )
