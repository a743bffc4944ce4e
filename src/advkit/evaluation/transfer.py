"""Transferability: robust accuracy of every target under attacks crafted on every surrogate."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from advkit._checks import check_confidence, check_model
from advkit._plot import new_axes
from advkit.attacks import Attack, CheckOutcome
from advkit.evaluation._runtime import (
    JsonResult,
    WorkCount,
    check_same_total,
    checks_markdown,
    markdown_table,
    nested,
    predict_correct,
)
from advkit.evaluation.loop import SanityLoop, attack_batch
from advkit.evaluation.metrics import AccuracyEstimate, check_cell, estimates
from advkit.evaluation.robust import check_attack

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["TransferMatrix", "transfer_matrix"]


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

    _kind = "advkit.TransferMatrix"
    _readers = JsonResult._readers | {
        "surrogates": nested(depth=1),
        "targets": nested(depth=1),
        "clean": nested(AccuracyEstimate.from_dict, 1),
        "robust": nested(AccuracyEstimate.from_dict, 2),
    }

    def __post_init__(self) -> None:
        self._check_shared()
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
        first = self.clean[0]
        for j, clean in enumerate(self.clean):
            if not isinstance(clean, AccuracyEstimate):
                raise TypeError(f"clean[{j}] must be an AccuracyEstimate")
            check_same_total(clean, first, f"clean[{j}]")
            for i, row in enumerate(self.robust):
                check_cell(row[j], clean, f"robust[{i}][{j}]", of="the target's clean")

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
        return super().to_dict()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransferMatrix:
        """Inverse of :meth:`to_dict`.

        Raises:
            TypeError: If a field has the wrong type (nothing is coerced).
            ValueError: If a field is missing or impossible, or the fields contradict each
                other (a cell above its target's clean accuracy, other totals, a ragged row).
        """
        return super().from_dict(data)

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
        generator: Randomness for attacks with random starts, one seeded generator per batch
            (see :mod:`advkit.evaluation.distributed`).
        progress: Show a progress bar.
        confidence: Coverage of the reported Wilson intervals.
        distributed: Shard the loader among the ``torchrun`` processes: ``None`` when several
            run, ``False`` never, ``True`` always (see :mod:`advkit.evaluation.distributed`).

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
    named = {f"surrogate {k!r}": m for k, m in sources.items()} | {
        f"target {k!r}": m for k, m in sinks.items()
    }
    robust = torch.zeros(len(sources), len(sinks), dtype=torch.long)
    with SanityLoop(
        loader, list(sinks.values()), attack, named, description="transfer",
        call=f"transfer_matrix({list(sources)}, {list(sinks)}, {attack!r})",
        distributed=distributed, generator=generator, progress=progress,
    ) as loop:  # fmt: skip
        for batch in loop:
            # Craft only for samples some target gets right: the others are lost anyway.
            needed = batch.correct.any(dim=0)
            for i, surrogate in enumerate(sources.values()):
                crafted = attack_batch(
                    surrogate, batch.inputs, batch.labels, attack, attacked=needed,
                    generator=batch.generator, early_stop=False, threat=loop.threat,
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
                    loop.work += WorkCount.forward(kept.numel())
    totals = loop.totals({"robust": robust})
    return TransferMatrix(
        attack=repr(attack),
        surrogates=tuple(sources),
        targets=tuple(sinks),
        clean=estimates(totals.clean, totals.total, confidence),
        robust=estimates(totals.counts["robust"].tolist(), totals.total, confidence),
        work=totals.work,
        checks=loop.checks(),
    )
