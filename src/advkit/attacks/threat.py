"""The L-inf threat model shared by the iterative attacks."""

from __future__ import annotations

from functools import cached_property

import torch
from torch import Tensor

__all__ = ["LinfBall"]


class LinfBall:
    r"""The set :math:`\{x : \|x - x_0\|_\infty \le \epsilon,\ lo \le x \le hi\}`, per sample.

    The ball and the box are intersected once, when first needed, so :meth:`project` is a
    single clamp that equals ``clamp(clamp(x, x0 - eps, x0 + eps), lo, hi)`` element for
    element.

    Args:
        center: The clean inputs ``x0``, shape ``[N, ...]``.
        eps: Radius, a tensor broadcastable to ``center`` (e.g. ``[N, 1, 1, 1]``).
        bounds: The box ``(lo, hi)`` every input lives in.
    """

    def __init__(self, center: Tensor, eps: Tensor, bounds: tuple[float, float]) -> None:
        self.center = center
        self.eps = eps
        self.bounds = bounds

    @cached_property
    def lower(self) -> Tensor:
        """The lowest value each element may take: ``max(x0 - eps, lo)``."""
        return torch.clamp(self.center - self.eps, min=self.bounds[0])

    @cached_property
    def upper(self) -> Tensor:
        """The highest value each element may take: ``min(x0 + eps, hi)``."""
        return torch.clamp(self.center + self.eps, max=self.bounds[1])

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
        # alpha * sign is exact, so one fused pass rounds exactly like x + alpha * sign.
        if isinstance(alpha, Tensor):
            return self.project(torch.addcmul(inputs, self.direction(grad), alpha))
        return self.project(torch.add(inputs, self.direction(grad), alpha=alpha))

    def step_from_center(self, grad: Tensor) -> Tensor:
        """``step(x0, grad, eps)``, the FGSM step, element for element, at lower cost.

        ``x0 + eps * sign`` computes exactly ``x0 + eps`` or ``x0 - eps`` (or ``x0``), the
        values the ball's bounds are made of, so only the box can clip it: the ball's bounds are
        never built.
        """
        lo, hi = self.bounds
        return torch.clamp(torch.addcmul(self.center, self.direction(grad), self.eps), lo, hi)

    def subset(self, keep: Tensor) -> LinfBall:
        """The same constraint restricted to the samples selected by the boolean mask ``keep``."""
        eps = self.eps[keep] if self.eps.shape[0] == keep.shape[0] else self.eps
        sub = LinfBall(self.center[keep], eps, self.bounds)
        for name in ("lower", "upper"):  # carry over bounds already built
            if name in self.__dict__:
                sub.__dict__[name] = self.__dict__[name][keep]
        return sub
