"""Robust accuracy over an eps x steps grid, all eps values of a row in one batched attack."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from advkit._checks import check_bool, check_confidence, check_int
from advkit.attacks import Attack, CheckOutcome
from advkit.attacks.outcome import warn_failed
from advkit.evaluation._grid import (
    attack_factory,
    check_eps_values,
    check_steps_values,
    grid_batch,
    plan_grid,
)
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
    read_list,
    read_nested,
)
from advkit.evaluation.loop import EvaluationLoop
from advkit.evaluation.metrics import AccuracyEstimate
from advkit.evaluation.robust import check_attack
from advkit.evaluation.sanity import (
    MonotoneTally,
    ThreatModelCheck,
    check_eval_mode,
    check_zero_eps,
    surrogates,
)
from advkit.evaluation.trajectories import Cell, Ride

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["GridResult", "evaluate_grid"]

_KIND = "advkit.GridResult"


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

    def __post_init__(self) -> None:
        if not isinstance(self.attack, str):
            raise TypeError(f"attack must be a str, got {type(self.attack).__name__}")
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
        if not isinstance(self.work, WorkCount):
            raise TypeError(f"work must be a WorkCount, got {type(self.work).__name__}")
        for check in self.checks:
            if not isinstance(check, CheckOutcome):
                raise TypeError(f"checks must be CheckOutcome objects, got {type(check).__name__}")
        shape = f"{len(self.steps)} rows (steps) of {len(self.eps)} cells (eps)"
        if len(self.robust) != len(self.steps):
            raise ValueError(f"robust must have {shape}, got {len(self.robust)} rows")
        for i, row in enumerate(self.robust):
            if len(row) != len(self.eps):
                raise ValueError(f"robust must have {shape}, got {len(row)} cells in row {i}")
            for j, cell in enumerate(row):
                where = f"robust[{i}][{j}] (steps={self.steps[i]}, eps={self.eps[j]:g})"
                if not isinstance(cell, AccuracyEstimate):
                    raise TypeError(f"{where} must be an AccuracyEstimate")
                check_same_total(cell, self.clean, where)
                if cell.correct > self.clean.correct:
                    raise ValueError(
                        f"{where}: robust accuracy cannot exceed clean accuracy: "
                        f"{cell.correct} > {self.clean.correct} of {self.clean.total}"
                    )

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
        return {
            "kind": _KIND,
            "attack": self.attack,
            "eps": list(self.eps),
            "steps": list(self.steps),
            "clean": self.clean.to_dict(),
            "robust": [[cell.to_dict() for cell in row] for row in self.robust],
            "early_stop": self.early_stop,
            "max_batch": self.max_batch,
            "work": self.work.to_dict(),
            "checks": [check.to_dict() for check in self.checks],
        }

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
        check_kind(data, _KIND)

        def read(key: str) -> Any:
            return field_of(data, key, "GridResult")

        steps = read_list(read("steps"), "steps")
        return cls(
            attack=read("attack"),
            eps=tuple(read_list(read("eps"), "eps")),
            steps=tuple(steps),
            clean=read_nested("clean", AccuracyEstimate.from_dict, read("clean")),
            robust=tuple(
                tuple(
                    read_nested(f"robust[{i}][{j}]", AccuracyEstimate.from_dict, cell)
                    for j, cell in enumerate(read_list(row, f"robust[{i}]"))
                )
                for i, row in enumerate(read_list(read("robust"), "robust"))
            ),
            early_stop=read("early_stop"),
            max_batch=read("max_batch"),
            work=read_nested("work", WorkCount.from_dict, read("work")),
            checks=tuple(
                read_nested(f"checks[{i}]", CheckOutcome.from_dict, check)
                for i, check in enumerate(read_list(read("checks"), "checks"))
            ),
        )

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
            line = ax.plot(xs, [100 * c.value for c in row], marker="o", label=label)[0]
            ax.fill_between(
                xs,
                [100 * c.interval[0] for c in row],
                [100 * c.interval[1] for c in row],
                color=line.get_color(),
                alpha=0.15,
            )
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
    eps_values, steps_values = check_eps_values(eps), check_steps_values(steps)
    make, _ = attack_factory(attack, True, attack_kwargs)
    probe = make(torch.zeros(1), steps_values[0])
    rides = plan_grid(make, probe, eps_values, steps_values, dtype)
    every = {(s, j) for s in steps_values if s is not None for j in range(len(eps_values))}
    return every - set(rides)


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
    model. In the same eps column (a step size given in ``attack_kwargs`` or the template,
    not derived from ``steps``) every point is shared; in a larger column (I-FGSM's
    ``eps / steps`` at 1/255 x 5 and 2/255 x 10), all but the last, which the cell takes
    itself from the longer cell's iterate and pays a forward pass for, where rounding
    provably cannot push the shared points out of its smaller ball. ``max_batch`` bounds the
    size of one attack call; a larger batch is split, which changes no result. With
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
        generator: Randomness for attacks with random starts: drawn from once, then each
            batch's starts come from a generator seeded by that draw and the batch's index, so
            the result does not depend on the number of processes.
        progress: Show a progress bar.
        confidence: Coverage of the reported Wilson intervals.
        distributed: ``None`` to share the loader among the processes exactly when several
            run (``torchrun``), ``False`` to evaluate all of it in this process, ``True`` to
            require several processes.

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
    eps_values = check_eps_values(eps)
    steps_values = check_steps_values(steps)
    make, description = attack_factory(attack, steps is not None, attack_kwargs)
    check_bool(early_stop, "early_stop")
    if max_batch is not None:
        check_int(max_batch, "max_batch", minimum=1)
    check_confidence(confidence)

    probe = make(torch.zeros(1), steps_values[0])
    check_attack(probe, scalar_eps=False)
    others = surrogates(probe)
    mode_check = check_eval_mode(
        {"model": model} | {f"surrogate{i}": m for i, m in enumerate(others)}, [probe]
    )
    threat = ThreatModelCheck(probe)
    tally = MonotoneTally(eps_values, steps_values)
    counts = torch.zeros(len(steps_values), len(eps_values), dtype=torch.long)
    plans: dict[torch.dtype, dict[Cell, Ride]] = {}  # which cells ride, per input dtype
    call = f"evaluate_grid({description}, eps={list(eps_values)}, steps={list(steps_values)})"
    with EvaluationLoop(
        loader,
        [model],
        call=call,
        bounds=probe.bounds,
        held=others,
        distributed=distributed,
        generator=generator,
        progress=progress,
        description="grid",
    ) as loop:
        for batch in loop:
            correct = batch.correct[0]
            x, y = batch.inputs[correct], batch.labels[correct]
            if y.shape[0] == 0:
                continue
            if x.dtype not in plans:
                plans[x.dtype] = plan_grid(make, probe, eps_values, steps_values, x.dtype)
            robust_cells, cost = grid_batch(
                model, make, probe, x, y, eps_values, steps_values, rides=plans[x.dtype],
                early_stop=early_stop, max_batch=max_batch, generator=batch.generator,
                threat=threat,
            )  # fmt: skip
            loop.work += cost
            tally.update(robust_cells)
            counts += robust_cells.sum(dim=-1).cpu()
    totals = loop.totals({"counts": counts})
    (clean,), total, work = totals.clean, totals.total, totals.work
    counts = totals.counts["counts"]
    tally.all_reduce(loop.shard)
    threat.all_reduce(loop.shard)

    zero_eps = (
        {
            f"steps={_steps_label(s)}": int(row[eps_values.index(0.0)])
            for s, row in zip(steps_values, counts, strict=True)
        }
        if 0.0 in eps_values
        else None
    )
    checks = (mode_check, check_zero_eps(clean, zero_eps), *tally.results(), *threat.results())
    warn_failed(checks)
    return GridResult(
        attack=description,
        eps=eps_values,
        steps=steps_values,
        clean=AccuracyEstimate(clean, total, confidence),
        robust=tuple(
            tuple(AccuracyEstimate(count, total, confidence) for count in row)
            for row in counts.tolist()
        ),
        early_stop=early_stop,
        max_batch=max_batch,
        work=work,
        checks=checks,
    )
