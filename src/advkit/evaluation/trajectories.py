"""Which cells of an eps x steps grid can read their result off another cell's trajectory.

An attack that :meth:`~advkit.attacks.GradientAttack.shares_walks` visits, with step
size ``alpha``, the same first ``k`` points for every number of steps ``>= k``. Two cells
with equal step sizes therefore share a prefix of their trajectories:

- in the same eps column (a step size given, not derived from ``steps``), a shorter cell's
  points are exactly the first points of a longer one's;
- in a larger eps column (e.g. I-FGSM's ``eps / steps`` at 1/255 x 5 and 2/255 x 10), they are
  as long as the longer cell's iterates stay inside the smaller ball, which every iterate but
  the last does when ``(steps - 1) * alpha`` is below ``eps`` by more than rounding can reach.
  The shorter cell's last step is then taken from the longer cell's iterate and direction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

Cell = tuple[int, int]
"""``(steps, eps_index)``: a cell of a grid."""


@dataclass(frozen=True)
class Ride:
    """A cell decided by the trajectory of an attacked cell with more steps (its carrier).

    Attributes:
        steps: The cell's number of steps.
        eps_index: The cell's eps column.
        carrier_steps: The carrier's number of steps.
        carrier_eps_index: The carrier's eps column.
    """

    steps: int
    eps_index: int
    carrier_steps: int
    carrier_eps_index: int

    @property
    def same_ball(self) -> bool:
        """Whether the carrier is in the same eps column: then even the last point is shared."""
        return self.eps_index == self.carrier_eps_index


def prefix_stays_inside(
    alpha: float, steps: int, eps: float, bounds: tuple[float, float], dtype: torch.dtype
) -> bool:
    """Whether iterates ``1 .. steps - 1`` of steps ``alpha`` lie in the ball of radius ``eps``.

    Whatever ball of radius ``>= eps`` (and box) they are projected on: a step moves an element
    by at most ``alpha`` plus the rounding of ``x + alpha`` (``|x| <= max(|lo|, |hi|)``), and
    the ball's bound ``x0 +- eps`` is itself rounded; both rounding terms are doubled for
    margin. ``dtype`` is the inputs' floating-point type.
    """
    if steps <= 1:
        return True
    unit = torch.finfo(dtype).eps / 2
    largest = max(abs(bounds[0]), abs(bounds[1]))
    drift = (steps - 1) * (alpha + 2 * unit * (largest + alpha))
    return drift <= eps - 2 * unit * (largest + eps)


def plan_rides(
    step_sizes: Mapping[Cell, float],
    eps_values: Sequence[float],
    bounds: tuple[float, float],
    dtype: torch.dtype,
) -> dict[Cell, Ride]:
    """The cells that need no attack of their own, each with the attacked cell it rides on.

    Cells are visited longest row first; a cell rides on an attacked cell with more steps and
    the same step size, in its own eps column if there is one, else in a larger column where
    :func:`prefix_stays_inside` holds. Every other cell is attacked.

    Args:
        step_sizes: The step size of every cell, as the attack computes it in ``dtype``.
        eps_values: The grid's radii, indexed by the cells' eps index.
        bounds: The box the inputs live in.
        dtype: The inputs' floating-point type.
    """
    rides: dict[Cell, Ride] = {}
    attacked: list[Cell] = []
    for cell in sorted(step_sizes, key=lambda c: (-c[0], c[1])):
        steps, column = cell
        alpha, eps = step_sizes[cell], eps_values[column]
        carriers = [
            (s, k)
            for s, k in attacked
            if s > steps and step_sizes[(s, k)] == alpha and eps_values[k] >= eps
        ]
        same_column = [c for c in carriers if c[1] == column]
        if same_column:
            carrier = same_column[0]
        elif carriers and prefix_stays_inside(alpha, steps, eps, bounds, dtype):
            carrier = carriers[0]
        else:
            attacked.append(cell)
            continue
        rides[cell] = Ride(steps, column, *carrier)
    return rides
