"""The L-inf threat model shared by the iterative attacks."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["LinfBall"]


class LinfBall:
    r"""The set :math:`\{x : \|x - x_0\|_\infty \le \epsilon,\ lo \le x \le hi\}`, per sample.

    The ball and the box are intersected once at construction, so :meth:`project` is a single
    clamp that equals ``clamp(clamp(x, x0 - eps, x0 + eps), lo, hi)`` element for element.

    Args:
        center: The clean inputs ``x0``, shape ``[N, ...]``.
        eps: Radius, a tensor broadcastable to ``center`` (e.g. ``[N, 1, 1, 1]``).
        bounds: The box ``(lo, hi)`` every input lives in.
    """

    def __init__(self, center: Tensor, eps: Tensor, bounds: tuple[float, float]) -> None:
        self.center = center
        self.eps = eps
        self.bounds = bounds
        lo, hi = bounds
        self.lower = torch.clamp(center - eps, min=lo)
        self.upper = torch.clamp(center + eps, max=hi)

    def project(self, inputs: Tensor) -> Tensor:
        """The closest point of the set to ``inputs`` in every coordinate."""
        return torch.clamp(inputs, self.lower, self.upper)

    def random_point(self, generator: torch.Generator | None = None) -> Tensor:
        """A uniform draw from the ball around ``x0``, clipped to the box (PGD's start)."""
        unit = torch.rand(
            self.center.shape,
            generator=generator,
            device=self.center.device,
            dtype=self.center.dtype,
        )
        return self.project(self.center + (2 * unit - 1) * self.eps)

    @staticmethod
    def direction(grad: Tensor) -> Tensor:
        """The steepest-ascent direction under the L-inf norm: ``sign(grad)``."""
        return grad.sign()

    def step(self, inputs: Tensor, grad: Tensor, alpha: Tensor | float) -> Tensor:
        """One projected step: ``project(x + alpha * direction(grad))``."""
        return self.project(inputs + alpha * self.direction(grad))

    def subset(self, keep: Tensor) -> LinfBall:
        """The same constraint restricted to the samples selected by the boolean mask ``keep``."""
        sub = object.__new__(LinfBall)
        sub.center, sub.bounds = self.center[keep], self.bounds
        sub.eps = self.eps[keep] if self.eps.shape[0] == keep.shape[0] else self.eps
        sub.lower, sub.upper = self.lower[keep], self.upper[keep]
        return sub
