"""Which grid cells ride on another's trajectory, and the rounding bound that allows it."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from advkit.attacks import IFGSM
from advkit.attacks.threat import LinfBall
from advkit.evaluation import attacked_cells
from advkit.evaluation.trajectories import Ride, plan_rides, prefix_stays_inside

BOX = (0.0, 1.0)


def step_sizes(eps: list[float], steps: list[int], dtype: torch.dtype, alpha: float | None):  # type: ignore[no-untyped-def]
    """I-FGSM's step size of every cell, rounded as the attack rounds it."""
    return {
        (s, j): float(torch.tensor(e, dtype=dtype) / s) if alpha is None else alpha
        for s in steps
        for j, e in enumerate(eps)
    }


def test_the_benchmark_grid_rides_twice_with_the_default_step_size() -> None:
    eps, steps = [e / 255 for e in (1, 2, 4, 8)], [1, 3, 5, 10]
    rides = plan_rides(step_sizes(eps, steps, torch.float32, None), eps, BOX, torch.float32)
    # eps x 5 steps by 0.2 eps, as 2 eps x 10 does: every cell of the 5-step row but 8/255.
    assert rides == {(5, j): Ride(5, j, 10, j + 1) for j in range(3)}
    assert not any(ride.same_ball for ride in rides.values())


def test_a_given_step_size_makes_each_column_one_trajectory() -> None:
    eps, steps = [e / 255 for e in (1, 2, 4, 8)], [1, 3, 5, 10]
    sizes = step_sizes(eps, steps, torch.float32, 1 / 255)
    rides = plan_rides(sizes, eps, BOX, torch.float32)
    assert set(rides) == {(s, j) for s in (1, 3, 5) for j in range(4)}
    assert all(ride.same_ball and ride.carrier_steps == 10 for ride in rides.values())


def test_half_precision_inputs_ride_only_where_no_rounding_bound_is_needed() -> None:
    # In float16 a step of 0.2/255 is within a few roundings of the ball's border: unsafe.
    eps, steps = [e / 255 for e in (1, 2)], [5, 10]
    sizes = step_sizes(eps, steps, torch.float16, None)
    assert plan_rides(sizes, eps, BOX, torch.float16) == {}
    assert plan_rides(step_sizes(eps, steps, torch.float32, None), eps, BOX, torch.float32)
    # One step needs no bound: its only iterate is its own last one.
    assert prefix_stays_inside(1.0, 1, 0.0, BOX, torch.float16)


def test_only_larger_balls_and_longer_runs_carry() -> None:
    eps, steps = [1 / 255, 3 / 255], [5, 10]  # steps 0.2, 0.6, 0.1 and 0.3 /255: no ride
    sizes = step_sizes(eps, steps, torch.float32, None)
    assert plan_rides(sizes, eps, BOX, torch.float32) == {}
    # The same step size in a smaller ball cannot carry a larger one (its points would be
    # clipped where the larger ball's are not).
    eps, steps = [1 / 255, 2 / 255], [10, 5]
    sizes = {(10, 0): 0.1, (10, 1): 0.5, (5, 0): 0.3, (5, 1): 0.1}
    assert plan_rides(sizes, eps, BOX, torch.float32) == {}


@settings(max_examples=60, deadline=None)
@given(
    steps=st.integers(2, 12),
    eps_255=st.floats(0.05, 16),
    carrier_factor=st.integers(2, 4),
    double=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_the_rounding_bound_keeps_the_prefix_inside_the_smaller_ball(
    steps: int, eps_255: float, carrier_factor: int, double: bool, seed: int
) -> None:
    """Where the bound says so, a larger ball's iterates stay inside the smaller one."""
    dtype = torch.float64 if double else torch.float32
    eps = torch.tensor(eps_255 / 255, dtype=dtype)
    alpha = eps / steps
    assume(prefix_stays_inside(float(alpha), steps, float(eps), BOX, dtype))
    gen = torch.Generator().manual_seed(seed)
    # Centres near the box's edges and mid-range, where rounding differs.
    center = torch.rand(4096, generator=gen, dtype=dtype)
    center[:64] = torch.linspace(0, 1, 64, dtype=dtype)
    inner = LinfBall(center, eps.expand(4096), BOX)
    outer = LinfBall(center, (eps * carrier_factor).expand(4096), BOX)
    x = center
    for _ in range(steps - 1):
        # The worst case for the bound: always the same direction, and random ones.
        sign = torch.randint(-1, 2, (4096,), generator=gen).to(dtype)
        sign[:2048] = 1 if seed % 2 else -1
        x = outer.step(x, sign, alpha.expand(4096))
        assert torch.equal(inner.project(x), x)


def test_attacked_cells_names_the_cells_the_grid_attacks() -> None:
    """With a fixed step size each eps column is one trajectory: only its longest row is
    attacked; with eps / steps, 1/255 x 2 rides on 2/255 x 4."""
    fixed = attacked_cells(
        IFGSM, eps=[1 / 255, 2 / 255], steps=[1, 2, 4], attack_kwargs={"alpha": 1 / 255}
    )
    assert fixed == {(4, 0), (4, 1)}
    derived = attacked_cells(IFGSM, eps=[1 / 255, 2 / 255], steps=[2, 4])
    assert derived == {(4, 0), (4, 1), (2, 1)}
    with pytest.raises(ValueError, match="steps values must be >= 1, got 0"):
        attacked_cells(IFGSM, eps=[0.1], steps=[0])
