"""The machinery of an eps x steps grid: its arguments, the attack of each row, and one batch.

Each batch attacks a row's cells in one batched call and reads the cells that ride on another
cell's trajectory (see :mod:`advkit.evaluation.trajectories`) off their carriers' walks.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from advkit._checks import check_int, check_real
from advkit.attacks import Attack, GradientAttack, Step
from advkit.evaluation._runtime import WorkCount
from advkit.evaluation.sanity import ThreatModelCheck
from advkit.evaluation.trajectories import Cell, Ride, plan_rides

AttackFactory = Callable[[Tensor, "int | None"], Attack]


def check_eps_values(eps: Sequence[float]) -> tuple[float, ...]:
    """Validate the grid's radii: a non-empty sequence of distinct finite reals >= 0; sorted."""
    checked = _check_values(eps, "eps", "floats", partial(check_real, low=0))
    return tuple(sorted(float(value) for value in checked))


def check_steps_values(steps: Sequence[int] | None) -> tuple[int | None, ...]:
    """Validate the grid's iteration counts: distinct ints >= 1, sorted; ``(None,)`` for None."""
    if steps is None:
        return (None,)
    check = partial(check_int, minimum=1)
    return tuple(sorted(_check_values(steps, "steps", "ints or None", check, " (or be None)")))


def _check_values(
    values: Sequence[Any], name: str, kind: str, check: Callable[[Any, str], Any], empty: str = ""
) -> Sequence[Any]:
    """``values`` if it is a non-empty sequence of distinct values that each pass ``check``."""
    if isinstance(values, str | Tensor) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a sequence of {kind}, got {type(values).__name__}")
    if len(values) == 0:
        raise ValueError(f"{name} must list at least one value{empty}, got an empty sequence")
    for value in values:
        check(value, f"{name} values")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} values must be distinct, got {list(values)}")
    return values


def attack_factory(
    attack: type[Attack] | Attack, iterative: bool, attack_kwargs: Mapping[str, Any] | None
) -> tuple[AttackFactory, str]:
    """A function ``(eps tensor, steps) -> attack``, and a description of the attack.

    ``attack`` is a class built as ``attack(eps=..., steps=..., **attack_kwargs)``, or an object
    used as a template through ``attack.replace(eps=..., steps=...)``.
    """
    kwargs = dict(attack_kwargs or {})
    for name in ("eps", "steps"):
        if name in kwargs:
            raise ValueError(f"attack_kwargs may not set {name!r}: the grid sets it")
    if isinstance(attack, Attack):
        if kwargs:
            raise ValueError("attack_kwargs only apply to an attack class, not an attack object")
        attack_class: type = type(attack)
        kwargs = {k: v for k, v in attack.settings.items() if k not in ("eps", "steps")}
    elif isinstance(attack, type) and issubclass(attack, Attack):
        attack_class = attack
        if iterative and "steps" not in inspect.signature(attack.__init__).parameters:
            raise ValueError(
                f"{attack.__name__} is not iterative (its constructor takes no steps): "
                "pass steps=None for an eps-only grid"
            )
    else:
        raise TypeError(
            f"attack must be an Attack class (e.g. IFGSM) or object, got {type(attack).__name__}"
        )
    for name, value in kwargs.items():
        if isinstance(value, Tensor):
            raise ValueError(f"grid attack settings must be scalars, got a tensor for {name!r}")

    def make(eps: Tensor, steps: int | None) -> Attack:
        changes: dict[str, Any] = {"eps": eps} if steps is None else {"eps": eps, "steps": steps}
        if isinstance(attack, Attack):
            return attack.replace(**changes)
        return attack(**kwargs, **changes)

    if isinstance(attack, Attack) and iterative:
        try:
            make(torch.zeros(1), 1)
        except TypeError as err:
            raise ValueError(
                f"{attack!r} is not iterative (it takes no steps): pass steps=None for an "
                f"eps-only grid ({err})"
            ) from None
    if isinstance(attack, Attack) and not attack.settings:
        return make, repr(attack)  # a composite (WorstCase, Transfer) shows its members
    shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return make, f"{attack_class.__name__}({shown})"


@dataclass(frozen=True)
class GridAttack:
    """A grid's checked, sorted radii and step counts, and the attack of each cell.

    Attributes:
        eps: The radii, increasing.
        steps: The step counts, increasing; ``(None,)`` for an attack without steps.
        make: The attack of a cell (see :func:`attack_factory`).
        description: The attack, for results and messages.
        probe: The attack at the first step count: its class, bounds and settings.
    """

    eps: tuple[float, ...]
    steps: tuple[int | None, ...]
    make: AttackFactory
    description: str
    probe: Attack
    plans: dict[torch.dtype, dict[Cell, Ride]] = field(default_factory=dict)

    def rides(self, dtype: torch.dtype) -> dict[Cell, Ride]:
        """The cells that ride on another's trajectory, for inputs of ``dtype`` (planned once
        per dtype).

        Empty unless the attack :meth:`~advkit.attacks.GradientAttack.shares_walks`; else
        :func:`~advkit.evaluation.trajectories.plan_rides` on every cell's step size as its
        attack computes it.
        """
        if dtype in self.plans:
            return self.plans[dtype]
        probe, iterative = self.probe, tuple(s for s in self.steps if s is not None)
        sizes: dict[Cell, float] = {}
        if isinstance(probe, GradientAttack) and probe.shares_walks() and iterative:
            for steps in iterative:
                for column, eps in enumerate(self.eps):
                    radius = torch.tensor([eps], dtype=dtype)  # on the CPU: no device read per cell
                    attack = self.gradient_attack(radius, steps)
                    sizes[(steps, column)] = float(attack.step_size(radius))
        self.plans[dtype] = plan_rides(sizes, self.eps, probe.bounds, dtype)
        return self.plans[dtype]

    def gradient_attack(self, eps: Tensor, steps: int) -> GradientAttack:
        """The attack of a cell of a gradient attack's grid, for its step rule (the step size
        of a planned cell, the judgement of a riding one); never run."""
        attack = self.make(eps, steps)
        assert isinstance(attack, GradientAttack)  # internal invariant: the probe's class
        return attack


def grid_attack(
    attack: type[Attack] | Attack,
    eps: Sequence[float],
    steps: Sequence[int] | None,
    attack_kwargs: Mapping[str, Any] | None,
    iterative: bool,
) -> GridAttack:
    """Check a grid's arguments and build its :class:`GridAttack`."""
    eps_values, steps_values = check_eps_values(eps), check_steps_values(steps)
    make, description = attack_factory(attack, iterative, attack_kwargs)
    probe = make(torch.zeros(1), steps_values[0])
    return GridAttack(eps_values, steps_values, make, description, probe)


Key = tuple[int | None, int]
"""``(steps, eps_index)``, where ``steps`` is ``None`` for an attack without steps."""

# The last iterate of a cell that rides on another's trajectory (per sample), and which
# samples have one: those its carrier still attacked at the cell's last step.
LastSteps = dict[Ride, tuple[Tensor, Tensor]]


def grid_batch(
    model: nn.Module,
    grid: GridAttack,
    inputs: Tensor,
    labels: Tensor,
    *,
    early_stop: bool,
    max_batch: int | None,
    generator: torch.Generator | None,
    threat: ThreatModelCheck,
) -> tuple[Tensor, WorkCount]:
    """Per-sample robustness ``[steps, eps, sample]`` of every cell, and the work it took.

    ``inputs`` are the correctly classified samples of a batch. Where the attack allows it, the
    gradient at the clean inputs is computed once for all cells; the cells that ride (see
    :meth:`GridAttack.rides`) are not attacked but read off their carriers' trajectories.
    """
    make, probe, eps_values, steps_values = grid.make, grid.probe, grid.eps, grid.steps
    rides = grid.rides(inputs.dtype)
    work = WorkCount()
    first = None
    if isinstance(probe, GradientAttack) and probe.shares_walks():
        walk = probe.replace(eps=0.0).iterates(model, inputs, labels)
        start = next(walk)  # the logits and gradient at the clean inputs, whatever the eps
        walk.close()
        first = (start.logits, start.grad)
        work += WorkCount(1, inputs.shape[0], rows=walk.work)

    robust: dict[Key, Tensor] = {}
    success: dict[Key, Tensor] = {}  # success_step of the attacked cells
    for steps in steps_values:
        columns = [j for j in range(len(eps_values)) if (steps, j) not in rides]
        if not columns:
            continue
        riders = {
            ride: grid.gradient_attack(torch.tensor([eps_values[ride.eps_index]]), ride.steps)
            for ride in rides.values()
            if ride.carrier_steps == steps and not ride.same_ball
        }
        steps_of_row, lasts, cost = _attack_row(
            model, make, inputs, labels, eps_values, steps, columns, riders, first=first,
            early_stop=early_stop, max_batch=max_batch, generator=generator, threat=threat,
        )  # fmt: skip
        work += cost
        for column, success_step in zip(columns, steps_of_row, strict=True):
            success[(steps, column)] = success_step
            # (A composite numbers its points across members: only the sign counts.)
            robust[(steps, column)] = success_step < 0
        for ride, last in lasts.items():
            carrier = success[(ride.carrier_steps, ride.carrier_eps_index)]
            robust[(ride.steps, ride.eps_index)], cost = _ride_to_a_new_ball(
                model, riders[ride], inputs, labels, eps_values, ride, carrier, last,
                max_batch=max_batch, threat=threat,
            )  # fmt: skip
            work += cost
    for ride in rides.values():
        if ride.same_ball:  # the carrier visited every point of the cell: its first steps
            carrier = success[(ride.carrier_steps, ride.carrier_eps_index)]
            robust[(ride.steps, ride.eps_index)] = (carrier < 0) | (carrier > ride.steps)
    return torch.stack(
        [torch.stack([robust[(s, j)] for j in range(len(eps_values))]) for s in steps_values]
    ), work


def _attack_row(
    model: nn.Module,
    make: AttackFactory,
    inputs: Tensor,
    labels: Tensor,
    eps_values: tuple[float, ...],
    steps: int | None,
    columns: list[int],
    riders: dict[Ride, GradientAttack],
    *,
    first: tuple[Tensor, Tensor] | None,
    early_stop: bool,
    max_batch: int | None,
    generator: torch.Generator | None,
    threat: ThreatModelCheck,
) -> tuple[Tensor, LastSteps, WorkCount]:
    """One row's attacked cells in batched calls: ``success_step`` ``[columns, sample]``.

    Position ``p`` of the repeated batch holds sample ``p % n`` at eps column
    ``columns[p // n]``. ``first`` holds the logits and gradient at the clean inputs, shared
    by every cell, or ``None`` to let each attack compute its own. The last steps of the
    ``riders`` are taken from their carriers' iterates as the carriers pass their last step.
    """
    n = inputs.shape[0]
    eps_table = torch.tensor(
        [eps_values[j] for j in columns], dtype=inputs.dtype, device=inputs.device
    )
    column_table = torch.tensor(columns, device=inputs.device)
    size = n * len(columns)
    chunk = size if max_batch is None else max_batch
    success_step = torch.empty(size, dtype=torch.long, device=inputs.device)
    lasts: LastSteps = {
        ride: (torch.empty_like(inputs), torch.zeros(n, dtype=torch.bool, device=inputs.device))
        for ride in riders
    }
    work = WorkCount()
    for start in range(0, size, chunk):
        positions = torch.arange(start, min(start + chunk, size), device=inputs.device)
        samples, eps = positions % n, eps_table[positions // n]
        attack = make(eps, steps)
        if first is None:
            result = attack.run(
                model, inputs[samples], labels[samples], generator=generator, early_stop=early_stop
            )
        else:
            assert isinstance(attack, GradientAttack)  # internal invariant: first is shared
            logits, grad = first
            walk = attack.iterates(
                model,
                inputs[samples],
                labels[samples],
                start_gradient=(logits[samples], grad[samples]),
            )
            observe = None
            if riders:
                observe = _last_steps_recorder(
                    eps_values, inputs, samples, column_table[positions // n], lasts
                )
            result = walk.follow(early_stop=early_stop, observe=observe)
        success_step[positions] = result.success_step
        threat.update(inputs[samples], result.adversarial, eps)
        work += WorkCount.of_attack(result)
    return success_step.view(len(columns), n), lasts, work


def _last_steps_recorder(
    eps_values: tuple[float, ...],
    inputs: Tensor,
    samples: Tensor,
    columns: Tensor,
    lasts: LastSteps,
) -> Callable[[Step], None]:
    """An observer of the carrier's walk that takes each rider's own last step on the way.

    ``samples`` and ``columns`` give the sample and eps column of each position of the
    carrier's batch; the riders' last iterates go into ``lasts``. A rider's step size equals
    its carrier's (that is what lets it ride), so its last step is the carrier's step rule in
    the rider's ball (:meth:`~advkit.attacks.Step.toward`).
    """

    def observe(step: Step) -> None:
        for ride, (last, reached) in lasts.items():
            if step.last or step.index != ride.steps - 1:
                continue
            mine = columns[step.positions] == ride.carrier_eps_index
            who = samples[step.positions[mine]]
            eps = torch.full((who.numel(),), eps_values[ride.eps_index], dtype=inputs.dtype)
            last[who] = step.toward(eps.to(inputs.device), mine)
            reached[who] = True

    return observe


def _ride_to_a_new_ball(
    model: nn.Module,
    attack: GradientAttack,
    inputs: Tensor,
    labels: Tensor,
    eps_values: tuple[float, ...],
    ride: Ride,
    carrier: Tensor,
    last: tuple[Tensor, Tensor],
    *,
    max_batch: int | None,
    threat: ThreatModelCheck,
) -> tuple[Tensor, WorkCount]:
    """Robustness of a riding cell whose carrier has a larger ball, from the carrier's run.

    Up to its last step the cell visits the carrier's points, so a sample the carrier fooled
    before then is fooled; every other sample is judged at the cell's own last iterate.
    """
    fooled = (carrier >= 0) & (carrier < ride.steps)
    judged = (~fooled).nonzero().flatten()
    iterate, reached = last
    assert bool(reached[judged].all())  # internal invariant: the carrier took that step
    chunk = max(1, judged.numel() if max_batch is None else max_batch)
    work = WorkCount()
    for start in range(0, judged.numel(), chunk):
        who = judged[start : start + chunk]
        fooled[who] = attack.fools(model, iterate[who], labels[who])
        eps = torch.full((who.numel(),), eps_values[ride.eps_index], dtype=inputs.dtype)
        threat.update(inputs[who], iterate[who], eps.to(inputs.device))
        work += WorkCount.forward(who.numel())
    return ~fooled, work
