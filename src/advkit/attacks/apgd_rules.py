"""The rules of Auto-PGD (APGD), each on its own: the checkpoint schedule, the halving condition,
one momentum step and the random start, as in the authors' reference implementation
(``fra31/auto-attack``, ``autoattack/autopgd_base.py``).

References:
    Croce and Hein, "Reliable Evaluation of Adversarial Robustness with an Ensemble of Diverse
    Parameter-free Attacks", ICML 2020.
"""

from __future__ import annotations

import torch
from torch import Tensor

from advkit._checks import check_steps
from advkit.attacks.threat import ThreatModel

__all__ = [
    "MOMENTUM",
    "checkpoint_schedule",
    "checkpoint_windows",
    "momentum_step",
    "reference_start",
    "should_halve",
]

MOMENTUM = 0.75
"""The weight ``alpha`` of the new step against the previous one (the paper's momentum)."""


def checkpoint_schedule(steps: int) -> list[int]:
    r"""The iterations after which APGD checks whether to halve its step size.

    The paper places checkpoints at :math:`w_j = \lceil p_j N \rceil` for :math:`p_0 = 0`,
    :math:`p_1 = 0.22`, :math:`p_{j+1} = p_j + \max(p_j - p_{j-1} - 0.03, 0.06)`. The reference
    implementation, followed here, computes it in whole iterations: the first window is
    ``max(int(0.22 N), 1)`` steps, each next window ``max(int(0.03 N), 1)`` steps shorter, but
    never shorter than ``max(int(0.06 N), 1)`` (for ``N = 100`` both give 22, 41, 57, 70, 80, 87,
    93, 99).

    Args:
        steps: The number of iterations ``N`` of a run, >= 1.

    Returns:
        The checkpoints ``w_1 < w_2 < ... <= steps``: the step size is checked after step ``w_j``
        (counting steps from 1). The window of checkpoint ``j`` is ``w_j - w_{j-1}``, ``w_0 = 0``.

    Example:
        >>> checkpoint_schedule(100)
        [22, 41, 57, 70, 80, 87, 93, 99]
    """
    steps = check_steps(steps)
    window = max(int(0.22 * steps), 1)
    shrink = max(int(0.03 * steps), 1)
    shortest = max(int(0.06 * steps), 1)
    points: list[int] = []
    at = 0
    while at + window <= steps:
        at += window
        points.append(at)
        window = max(window - shrink, shortest)
    return points


def should_halve(
    increases: Tensor,
    window: int,
    rho: float,
    halved_before: Tensor,
    best_before: Tensor,
    best_now: Tensor,
) -> Tensor:
    """APGD's two conditions for halving the step size at a checkpoint, per sample.

    1. The loss increased in at most ``rho * window`` of the ``window`` steps since the last
       checkpoint (the reference's ``<=``; the paper writes "fewer than").
    2. The step size was not halved at the last checkpoint and the best loss has not improved
       since it.

    Args:
        increases: How many steps since the last checkpoint increased the loss, ``[N]``.
        window: The number of steps since the last checkpoint.
        rho: The fraction of the first condition, in ``(0, 1]``.
        halved_before: Whether the step size was halved at the last checkpoint, ``[N]`` bool.
            The reference counts the start of the run as a halving, so condition 2 cannot fire
            at the first checkpoint.
        best_before: The best loss at the last checkpoint (at the start of the run for the
            first), ``[N]``.
        best_now: The best loss now, ``[N]``.

    Returns:
        ``[N]`` bool: halve the step size of these samples and restart them from their best point.
    """
    oscillating = increases <= rho * window
    stalled = ~halved_before & (best_before >= best_now)
    return oscillating | stalled


def momentum_step(
    ball: ThreatModel, x: Tensor, previous: Tensor, grad: Tensor, step_size: Tensor, alpha: float
) -> Tensor:
    r"""One APGD step: a projected steepest-ascent step, then momentum, then projection again.

    .. math::
        z = P(x + \eta\, d(g)), \qquad
        x' = P\big(x + \alpha (z - x) + (1 - \alpha)(x - x_{prev})\big)

    with ``d`` the threat model's steepest-ascent direction (``sign`` for L-inf, ``g/||g||_2``
    for L2) and ``P`` its projection; the operations in the reference's order. The first step of
    a run uses ``alpha = 1`` (no momentum).

    Args:
        ball: The threat model of the samples.
        x: The current iterate.
        previous: The iterate before it (``x`` itself at the first step).
        grad: The loss gradient at ``x``.
        step_size: Per-sample step size ``eta``, ``[N, 1, ..., 1]``.
        alpha: The weight of the new step, ``0.75`` (:data:`MOMENTUM`), ``1`` at the first step.
    """
    z = ball.step(x, grad, step_size)
    return ball.project(x + (z - x) * alpha + (x - previous) * (1 - alpha))


def reference_start(ball: ThreatModel, generator: torch.Generator | None) -> Tensor:
    """The random start of the reference implementation, clipped to the box.

    L-inf: ``x0 + eps * u / max|u|`` with ``u`` uniform in ``[-1, 1]`` per element (a corner
    of the direction ``u`` on the ball's surface). L2: ``x0 + eps * g / ||g||_2`` with ``g``
    Gaussian (uniform on the sphere). Unlike :meth:`~advkit.attacks.ThreatModel.random_point`,
    the perturbation has norm ``eps`` before clipping, as in the reference.
    """
    x0 = ball.center
    flat_shape = (x0.shape[0],) + (1,) * (x0.ndim - 1)
    if ball.norm == "Linf":
        noise = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        noise = 2 * noise - 1
        scale = noise.abs().reshape(x0.shape[0], -1).amax(dim=1).view(flat_shape)
    else:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        scale = torch.linalg.vector_norm(noise.reshape(x0.shape[0], -1), dim=1).view(flat_shape)
    return ball.project(x0 + ball.eps * noise / (scale + 1e-12))


def checkpoint_windows(steps: int) -> dict[int, int]:
    """``checkpoint -> window`` (steps since the previous checkpoint) of :func:`checkpoint_schedule`."""
    points = checkpoint_schedule(steps)
    return {point: point - before for point, before in zip(points, [0, *points[:-1]], strict=True)}
