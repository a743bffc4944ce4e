"""Robust accuracy over an eps x steps grid, all eps values of a row in one batched attack."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from advkit._checks import check_bool, check_confidence, check_int, check_model
from advkit._plot import accuracy_band, new_axes
from advkit.attacks import Attack, CheckOutcome
from advkit.evaluation._grid import (
    GridAttack,
    check_eps_values,
    check_steps_values,
    grid_attack,
    grid_batch,
)
from advkit.evaluation._runtime import (
    JsonResult,
    WorkCount,
    checks_markdown,
    markdown_table,
    nested,
)
from advkit.evaluation.loop import SanityLoop
from advkit.evaluation.metrics import AccuracyEstimate, check_cell, estimates
from advkit.evaluation.robust import check_attack
from advkit.evaluation.sanity import MonotoneTally, check_zero_eps, with_surrogates

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["GridResult", "evaluate_grid"]


def _eps_label(eps: float, unit: float | None) -> str:
    if unit is None:
        return f"{eps:g}"
    return f"{round(eps * unit, 4):g}/{unit:g}"


def _steps_label(steps: int | None) -> str:
    return "-" if steps is None else str(steps)


@dataclass(frozen=True)
class GridResult(JsonResult):
    """Robust accuracy for every (steps, eps) cell of a grid, with intervals and checks.

    Attributes:
        attack: Description of the attack, e.g. ``"IFGSM(alpha=None)"``.
        eps: The eps values, increasing.
        steps: The steps values, increasing; ``(None,)`` for an attack without steps.
        clean: Clean accuracy.
        robust: ``robust[i][j]`` is the robust accuracy at ``steps[i]`` and ``eps[j]``.
        early_stop: Whether fooled samples were dropped from the attacks early.
        max_batch: The bound on the batch size of one attack call, or ``None``.
        work: Passes through the model.
        checks: The sanity checks and their outcome.
    """

    attack: str
    eps: tuple[float, ...]
    steps: tuple[int | None, ...]
    clean: AccuracyEstimate
    robust: tuple[tuple[AccuracyEstimate, ...], ...]
    early_stop: bool
    max_batch: int | None
    work: WorkCount
    checks: tuple[CheckOutcome, ...]

    _kind = "advkit.GridResult"
    _readers = JsonResult._readers | {
        "eps": nested(depth=1),
        "steps": nested(depth=1),
        "clean": nested(AccuracyEstimate.from_dict),
        "robust": nested(AccuracyEstimate.from_dict, 2),
    }

    def __post_init__(self) -> None:
        self._check_shared()
        check_eps_values(self.eps)
        if self.steps != (None,):
            check_steps_values(self.steps)
        for name, values in (("eps", self.eps), ("steps", self.steps)):
            if list(values) != sorted(values, key=lambda v: -1 if v is None else v):
                raise ValueError(f"{name} must be increasing, got {list(values)}")
        check_bool(self.early_stop, "early_stop")
        if self.max_batch is not None:
            check_int(self.max_batch, "max_batch", minimum=1)
        if not isinstance(self.clean, AccuracyEstimate):
            raise TypeError(f"clean must be an AccuracyEstimate, got {type(self.clean).__name__}")
        shape = f"{len(self.steps)} rows (steps) of {len(self.eps)} cells (eps)"
        if len(self.robust) != len(self.steps):
            raise ValueError(f"robust must have {shape}, got {len(self.robust)} rows")
        for i, row in enumerate(self.robust):
            if len(row) != len(self.eps):
                raise ValueError(f"robust must have {shape}, got {len(row)} cells in row {i}")
            for j, cell in enumerate(row):
                where = f"robust[{i}][{j}] (steps={self.steps[i]}, eps={self.eps[j]:g})"
                check_cell(cell, self.clean, where)

    @property
    def passed(self) -> bool:
        """Whether no sanity check failed."""
        return all(check.passed is not False for check in self.checks)

    def accuracy(self, eps: float, steps: int | None = None) -> AccuracyEstimate:
        """The cell at ``eps`` and ``steps`` (``steps`` may be left out for a single row).

        Raises:
            KeyError: If the grid has no such cell.
        """
        if steps is None and len(self.steps) == 1:
            steps = self.steps[0]
        try:
            return self.robust[self.steps.index(steps)][self.eps.index(eps)]
        except ValueError:
            raise KeyError(
                f"no cell at eps={eps}, steps={steps}; the grid has eps {list(self.eps)} "
                f"and steps {list(self.steps)}"
            ) from None

    def to_markdown(self, ci: bool = True, eps_unit: float | None = 255.0) -> str:
        """Steps as rows, eps as columns, accuracies in % with Wilson intervals in brackets.

        Args:
            ci: Show the confidence intervals.
            eps_unit: Show eps as multiples of ``1 / eps_unit`` (``None`` for plain numbers).
        """
        header = ["steps \\ eps", *(_eps_label(e, eps_unit) for e in self.eps)]
        rows = [
            [_steps_label(steps), *(cell.format(ci) for cell in row)]
            for steps, row in zip(self.steps, self.robust, strict=True)
        ]
        return (
            f"Robust accuracy (%) under {self.attack}; clean accuracy {self.clean.format(ci)} "
            f"(n={self.clean.total}).\n\n{markdown_table(header, rows)}\n\n"
            f"Sanity checks:\n\n{checks_markdown(self.checks)}\n"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` reads it back."""
        return super().to_dict()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GridResult:
        """Inverse of :meth:`to_dict`.

        Raises:
            TypeError: If a field has the wrong type (nothing is coerced: a count ``7.9``,
                ``"7"`` or ``true``, ``early_stop: "false"``, a step count ``2.0``).
            ValueError: If a field is missing or impossible (eps NaN, negative or repeated,
                steps < 1, ``max_batch`` < 1, negative work, a ragged row), or a cell
                contradicts the clean accuracy (more correct, another total).
        """
        return super().from_dict(data)

    def plot(self, ax: Axes | None = None, eps_unit: float | None = 255.0) -> Figure:
        """Robust accuracy against eps, one curve per steps value, with Wilson bands.

        Args:
            ax: Axes to draw on; a new figure is made if ``None`` (pyplot is not used).
            eps_unit: Plot eps in multiples of ``1 / eps_unit`` (``None`` for plain numbers).

        Returns:
            The figure drawn on.

        Raises:
            ImportError: If matplotlib (an optional dependency) is not installed.
        """
        figure, ax = new_axes(ax)
        scale = eps_unit or 1.0
        xs = [e * scale for e in self.eps]
        for steps, row in zip(self.steps, self.robust, strict=True):
            label = self.attack if steps is None else f"{steps} steps"
            accuracy_band(ax, xs, row, label=label)
        ax.axhline(100 * self.clean.value, color="gray", linestyle="--", label="clean")
        ax.set_xlabel("eps" if eps_unit is None else f"eps (x 1/{eps_unit:g})")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title(self.attack)
        ax.legend()
        return figure


def attacked_cells(
    attack: type[Attack] | Attack,
    *,
    eps: Sequence[float],
    steps: Sequence[int],
    attack_kwargs: Mapping[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
) -> set[tuple[int, int]]:
    """The ``(steps, eps_index)`` cells :func:`evaluate_grid` attacks, for inputs of ``dtype``.

    Every other cell rides on the trajectory of an attacked cell with more steps and the same
    step size (see :mod:`advkit.evaluation.trajectories`). ``eps_index`` counts the radii in
    increasing order, as the grid sorts them.

    Example:
        >>> from advkit.attacks import IFGSM
        >>> sorted(attacked_cells(IFGSM, eps=[1 / 255, 2 / 255], steps=[1, 2],
        ...                       attack_kwargs={"alpha": 1 / 255}))
        [(2, 0), (2, 1)]
    """
    grid = grid_attack(attack, eps, steps, attack_kwargs, iterative=True)
    every = {(s, j) for s in grid.steps if s is not None for j in range(len(grid.eps))}
    return every - set(grid.rides(dtype))


def evaluate_grid(
    model: nn.Module,
    loader: Iterable[Any],
    attack: type[Attack] | Attack,
    *,
    eps: Sequence[float],
    steps: Sequence[int] | None = None,
    attack_kwargs: Mapping[str, Any] | None = None,
    early_stop: bool = True,
    max_batch: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    confidence: float = 0.95,
    distributed: bool | None = None,
) -> GridResult:
    """Robust accuracy of ``model`` for every eps x steps cell, in one pass over the loader.

    For each batch and steps value, the correctly classified samples are repeated once per eps
    value and attacked in *one* call with a per-sample eps, so a row of the grid costs the
    batched passes of one cell. Every cell's first step is taken at the clean inputs, so where
    the attack starts there (no random start) and runs the model in eval mode, the gradient at
    the clean inputs is computed once per batch and shared by all cells. Such an attack also
    visits, with the same step size, the same first points whatever its number of steps, so
    a cell whose step size equals that of a cell with more steps is not attacked: it reads
    off that cell's trajectory whether an iterate up to its own number of steps fooled the
    model (every point is shared in the same eps column; in a larger one all but the last,
    which the cell takes itself: see :mod:`advkit.evaluation.trajectories`). ``max_batch``
    bounds the size of one attack call; a larger batch is split, which changes no result. With
    ``early_stop``, samples are dropped from the attack as soon as they are fooled. All of it
    gives the same accuracies as evaluating every cell with
    :func:`~advkit.evaluation.robust_accuracy`, for a deterministic attack exactly (an attack
    with a random start draws its starts for another batch layout). Under ``torchrun`` every
    process evaluates its share of the loader and returns every cell and check on the whole
    of it (see :mod:`advkit.evaluation.distributed`).

    A sample is robust at a cell if the model classifies it correctly and the attack never
    fooled it at any point it visited (``AttackResult.fooled``).

    Args:
        model: A classifier returning ``[N, C]`` logits for inputs in the attack's bounds.
        loader: Iterable of ``(inputs, labels)`` batches; it is iterated once.
        attack: An attack class, e.g. :class:`~advkit.attacks.IFGSM`, built for each cell as
            ``attack(eps=..., steps=..., **attack_kwargs)``; or an attack object, used as a
            template through ``attack.replace(eps=..., steps=...)``. It must be untargeted.
        eps: The radii, distinct, >= 0. Include 0 to check that eps = 0 changes nothing.
        steps: The iteration counts, distinct, >= 1; ``None`` for an attack without steps
            (e.g. FGSM), which gives a single row.
        attack_kwargs: Further settings for an attack class (``alpha``, ``loss``, ...).
        early_stop: Stop attacking a sample once it is fooled (exact, less work). It reads
            the fooled mask back to the host once per step, so on a GPU running small
            batches, where the launch of each pass dominates, ``False`` can be faster.
        max_batch: Largest number of samples in one attack call (a memory bound), or ``None``
            for no bound.
        generator: Randomness for attacks with random starts, one seeded generator per batch
            (see :mod:`advkit.evaluation.distributed`).
        progress: Show a progress bar.
        confidence: Coverage of the reported Wilson intervals.
        distributed: Shard the loader among the ``torchrun`` processes: ``None`` when several
            run, ``False`` never, ``True`` always (see :mod:`advkit.evaluation.distributed`).

    Returns:
        A :class:`GridResult` with every cell, the clean accuracy, the work and the checks.

    Raises:
        TypeError: If an argument has the wrong type or the loader yields something else than
            ``(inputs, labels)`` tensor pairs.
        ValueError: If eps or steps are empty, negative, repeated, the attack is not iterative
            but steps are given, the attack is targeted, ``max_batch < 1``, or the loader is
            empty or yields a malformed batch, or the processes under ``torchrun`` were called
            differently.
        RuntimeError: Under ``torchrun``, if another process failed or did not start the
            evaluation.

    Example:
        >>> import torch
        >>> from advkit.attacks import IFGSM
        >>> from advkit.evaluation import evaluate_grid
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
        >>> x = torch.rand(8, 3, 2, 2)
        >>> loader = [(x, model(x).argmax(1))]
        >>> grid = evaluate_grid(model, loader, IFGSM, eps=[0, 0.1], steps=[1, 5], progress=False)
        >>> grid.accuracy(eps=0, steps=5).correct
        8
    """
    check_model(model)
    grid = grid_attack(attack, eps, steps, attack_kwargs, iterative=steps is not None)
    check_bool(early_stop, "early_stop")
    if max_batch is not None:
        check_int(max_batch, "max_batch", minimum=1)
    check_confidence(confidence)
    check_attack(grid.probe, scalar_eps=False)
    tally = MonotoneTally(grid.eps, grid.steps)
    counts = torch.zeros(len(grid.steps), len(grid.eps), dtype=torch.long)
    call = f"evaluate_grid({grid.description}, eps={list(grid.eps)}, steps={list(grid.steps)})"
    with SanityLoop(
        loader, [model], grid.probe, with_surrogates(model, grid.probe), call=call,
        description="grid", distributed=distributed, generator=generator, progress=progress,
    ) as loop:  # fmt: skip
        for batch in loop:
            correct = batch.correct[0]
            if not bool(correct.any()):
                continue
            robust_cells, cost = grid_batch(
                model, grid, batch.inputs[correct], batch.labels[correct], early_stop=early_stop,
                max_batch=max_batch, generator=batch.generator, threat=loop.threat,
            )  # fmt: skip
            loop.work += cost
            tally.update(robust_cells)
            counts += robust_cells.sum(dim=-1).cpu()
    totals = loop.totals({"counts": counts})
    (clean,), counts = totals.clean, totals.counts["counts"]
    tally.all_reduce(loop.shard)
    checks = loop.checks(check_zero_eps(clean, _zero_eps(grid, counts)), *tally.results())
    return GridResult(
        attack=grid.description,
        eps=grid.eps,
        steps=grid.steps,
        clean=AccuracyEstimate(clean, totals.total, confidence),
        robust=estimates(counts.tolist(), totals.total, confidence),
        early_stop=early_stop,
        max_batch=max_batch,
        work=totals.work,
        checks=checks,
    )


def _zero_eps(grid: GridAttack, counts: Tensor) -> dict[str, int] | None:
    """The robust count at eps = 0 of each row, or ``None`` if eps = 0 is not in the grid."""
    if 0.0 not in grid.eps:
        return None
    column = grid.eps.index(0.0)
    return {
        f"steps={_steps_label(s)}": int(row[column])
        for s, row in zip(grid.steps, counts, strict=True)
    }
