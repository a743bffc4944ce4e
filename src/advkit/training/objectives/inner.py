"""The inner maximization of TRADES and MART: signed (or L2-normalized) ascent from x + 0.001 N(0, 1)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from advkit._guard import model_state
from advkit.attacks.threat import Norm, threat_model

__all__ = ["START_NOISE", "ascend", "gaussian_start"]

START_NOISE = 0.001
"""Standard deviation of the Gaussian start around the clean inputs, as in trades.py/mart.py."""


def gaussian_start(inputs: Tensor) -> Tensor:
    """``x + 0.001 * N(0, 1)`` from the global torch RNG, *not* clipped to the bounds (as the
    authors' code: the first gradient is taken there, the first step projects)."""
    noise = torch.randn(inputs.shape, dtype=inputs.dtype, device=inputs.device)
    return inputs.detach() + START_NOISE * noise


def ascend(
    model: nn.Module,
    inputs: Tensor,
    objective: Callable[[Tensor], Tensor],
    *,
    eps: float,
    alpha: float,
    steps: int,
    norm: Norm,
    bounds: tuple[float, float],
) -> Tensor:
    """Maximize ``objective(model(x'))`` over the ball around ``inputs``, model in eval mode.

    From :func:`gaussian_start`, ``steps`` times ``x' <- project(x' + alpha * d)`` with ``d``
    the threat model's ascent direction (``sign(grad)`` for L-inf, ``grad / ||grad||_2`` for L2)
    and ``project`` the ball around ``inputs`` intersected with ``bounds``. Gradients are taken
    with respect to ``x'`` only; no parameter gradient is written and every submodule's mode is
    restored.

    Args:
        model: The plain model.
        inputs: Clean inputs (the center of the ball).
        objective: ``objective(logits) -> scalar`` to ascend.
        eps, alpha, steps: Radius, step size and number of steps.
        norm: ``"Linf"`` or ``"L2"``.
        bounds: The box ``(lo, hi)``.

    Returns:
        The adversarial inputs, detached.
    """
    inputs = inputs.detach()
    if eps == 0:
        return inputs
    radius = torch.full((), eps, dtype=inputs.dtype, device=inputs.device)
    ball = threat_model(norm)(inputs, radius, bounds)
    x = gaussian_start(inputs)
    with model_state(model), torch.enable_grad():
        for _ in range(steps):
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(objective(model(x)), x)
            x = ball.step(x.detach(), grad, alpha)
    return x.detach()
