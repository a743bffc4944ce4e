"""Threat models: the set of inputs an attack may visit around each clean input.

A threat model is a small object built per batch from the clean inputs ``x0``, a per-sample
radius and the box the inputs live in. Every attack reaches it through four verbs:
:meth:`~ThreatModel.project`, :meth:`~ThreatModel.direction` (steepest ascent in the norm),
:meth:`~ThreatModel.step` and :meth:`~ThreatModel.random_point`, plus
:meth:`~ThreatModel.subset` for the samples an attack keeps working on.
"""

from __future__ import annotations

import abc
import math
from functools import cached_property
from typing import Literal

import torch
from torch import Tensor

__all__ = ["L2Ball", "LinfBall", "Norm", "ThreatModel", "threat_model"]

Norm = Literal["Linf", "L2"]
"""The norm of a threat model: ``"Linf"`` or ``"L2"``."""


def _batch_norm2(values: Tensor) -> Tensor:
    """Per-sample L2 norm of ``values`` ``[N, ...]``, shaped ``[N, 1, ..., 1]``."""
    norms = torch.linalg.vector_norm(values.reshape(values.shape[0], -1), dim=1)
    return norms.view(-1, *(1,) * (values.ndim - 1))


class ThreatModel(abc.ABC):
    """A norm ball of radius ``eps`` around each clean input, intersected with a box.

    Args:
        center: The clean inputs ``x0``, shape ``[N, ...]``.
        eps: Radius, a tensor broadcastable to ``center`` (e.g. ``[N, 1, 1, 1]``).
        bounds: The box ``(lo, hi)`` every input lives in.
    """

    norm: Norm

    def __init__(self, center: Tensor, eps: Tensor, bounds: tuple[float, float]) -> None:
        self.center = center
        self.eps = eps
        self.bounds = bounds

    @abc.abstractmethod
    def project(self, inputs: Tensor) -> Tensor:
        """A point of the set close to ``inputs`` (see each class for which one)."""

    @staticmethod
    @abc.abstractmethod
    def direction(grad: Tensor) -> Tensor:
        """The steepest-ascent direction of unit size in this norm, per sample."""

    @abc.abstractmethod
    def random_point(self, generator: torch.Generator | None = None) -> Tensor:
        """A uniform draw from the ball around ``x0``, clipped to the box (PGD's start)."""

    def step(self, inputs: Tensor, grad: Tensor, alpha: Tensor | float) -> Tensor:
        """One projected step: ``project(x + alpha * direction(grad))``."""
        if isinstance(alpha, Tensor):
            return self.project(torch.addcmul(inputs, self.direction(grad), alpha))
        return self.project(torch.add(inputs, self.direction(grad), alpha=alpha))

    def step_from_center(self, grad: Tensor) -> Tensor:
        """``step(x0, grad, eps)``: the one full step of FGSM."""
        return self.step(self.center, grad, self.eps)

    @classmethod
    def distance(cls, inputs: Tensor, center: Tensor) -> Tensor:
        """Per-sample distance ``||inputs - center||`` in this threat model's norm, shape ``[N]``.

        The norm a ball check must measure: L-inf for :class:`LinfBall`, L2 for :class:`L2Ball`.
        Callable on the class (``attack.threat_model.distance(x_adv, x)``) or on a ball
        (``ball.distance(x_adv, ball.center)``).

        Args:
            inputs: Points ``[N, ...]``, e.g. adversarial examples.
            center: Their clean inputs, the same shape.

        Raises:
            TypeError: If either is not a tensor.
            ValueError: If their shapes differ or they hold no sample dimension.

        Example:
            >>> import torch
            >>> from advkit.attacks import L2Ball, LinfBall
            >>> x, x_adv = torch.zeros(1, 4), torch.full((1, 4), 0.5)
            >>> float(LinfBall.distance(x_adv, x)), float(L2Ball.distance(x_adv, x))
            (0.5, 1.0)
        """
        if not isinstance(inputs, Tensor) or not isinstance(center, Tensor):
            raise TypeError(
                "distance needs two tensors, got "
                f"{type(inputs).__name__} and {type(center).__name__}"
            )
        if inputs.shape != center.shape or inputs.ndim == 0:
            raise ValueError(
                "distance needs inputs and center of one shape [N, ...], got "
                f"{list(inputs.shape)} and {list(center.shape)}"
            )
        flat = (inputs - center).reshape(inputs.shape[0], -1)
        order = math.inf if cls.norm == "Linf" else 2
        return torch.linalg.vector_norm(flat, ord=order, dim=1)

    def subset(self, keep: Tensor) -> ThreatModel:
        """The same constraint restricted to the samples selected by the boolean mask ``keep``."""
        eps = self.eps[keep] if self.eps.shape[0] == keep.shape[0] else self.eps
        sub = type(self)(self.center[keep], eps, self.bounds)
        for name, value in self.__dict__.items():  # carry over cached per-sample tensors
            if name not in ("center", "eps", "bounds") and isinstance(value, Tensor):
                sub.__dict__[name] = value[keep]
        return sub


class LinfBall(ThreatModel):
    r"""The set :math:`\{x : \|x - x_0\|_\infty \le \epsilon,\ lo \le x \le hi\}`, per sample.

    The ball and the box are intersected once, when first needed, so :meth:`project` is a
    single clamp that equals ``clamp(clamp(x, x0 - eps, x0 + eps), lo, hi)`` element for
    element: the exact Euclidean projection onto the set.

    Args:
        center: The clean inputs ``x0``, shape ``[N, ...]``.
        eps: Radius, a tensor broadcastable to ``center`` (e.g. ``[N, 1, 1, 1]``).
        bounds: The box ``(lo, hi)`` every input lives in.
    """

    norm: Norm = "Linf"

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
        """``x0 + U(-eps, eps)`` per element, clipped to the box."""
        x0 = self.center
        unit = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return self.project(x0 + (2 * unit - 1) * self.eps)

    @staticmethod
    def direction(grad: Tensor) -> Tensor:
        """The steepest-ascent direction under the L-inf norm: ``sign(grad)``."""
        return grad.sign()

    def step_from_center(self, grad: Tensor) -> Tensor:
        """``step(x0, grad, eps)``, the FGSM step, element for element, at lower cost.

        ``x0 + eps * sign`` computes exactly ``x0 + eps`` or ``x0 - eps`` (or ``x0``), the
        values the ball's bounds are made of, so only the box can clip it: the ball's bounds are
        never built.
        """
        lo, hi = self.bounds
        return torch.clamp(torch.addcmul(self.center, self.direction(grad), self.eps), lo, hi)


class L2Ball(ThreatModel):
    r"""The set :math:`\{x : \|x - x_0\|_2 \le \epsilon,\ lo \le x \le hi\}`, per sample.

    :meth:`project` scales the perturbation into the ball, then clips to the box, as
    torchattacks' ``PGDL2`` and Madry et al.'s code do. Clipping moves every coordinate towards
    ``x0`` (which lies in the box), so the result stays in the ball: it is a point of the set,
    though not always the closest one (the exact projection onto ball and box needs a search).

    Args:
        center: The clean inputs ``x0``, shape ``[N, ...]``.
        eps: Radius, a tensor broadcastable to ``center`` (e.g. ``[N, 1, 1, 1]``).
        bounds: The box ``(lo, hi)`` every input lives in.
    """

    norm: Norm = "L2"

    def project(self, inputs: Tensor) -> Tensor:
        """``clip_box(x0 + delta * min(1, eps / ||delta||_2))`` with ``delta = inputs - x0``."""
        delta = inputs - self.center
        norms = _batch_norm2(delta)
        # Scale only what lies outside: no 0 / 0 where eps and the perturbation are both zero.
        factor = torch.where(norms > self.eps, self.eps / norms, torch.ones_like(norms))
        return torch.clamp(self.center + delta * factor, *self.bounds)

    @staticmethod
    def direction(grad: Tensor) -> Tensor:
        """``grad / ||grad||_2`` per sample; a zero gradient gives a zero direction."""
        norms = _batch_norm2(grad)
        return torch.where(norms > 0, grad / norms, torch.zeros_like(grad))

    def random_point(self, generator: torch.Generator | None = None) -> Tensor:
        r"""A uniform draw from the ball, clipped to the box.

        The direction is uniform on the sphere (a normalized Gaussian) and the radius is
        :math:`\epsilon\, u^{1/d}` for :math:`u \sim U(0, 1)` and ``d`` the input dimension,
        which makes the point uniform in the ball. (torchattacks' ``PGDL2`` draws the radius
        uniformly, which crowds its starts near the center in high dimension.)
        """
        x0 = self.center
        gaussian = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        per_sample = (x0.shape[0],) + (1,) * (x0.ndim - 1)
        unit = torch.rand(per_sample, generator=generator, device=x0.device, dtype=x0.dtype)
        radius = self.eps * unit ** (1.0 / math.prod(x0.shape[1:]))
        return self.project(x0 + self.direction(gaussian) * radius)


_THREAT_MODELS: dict[str, type[ThreatModel]] = {"Linf": LinfBall, "L2": L2Ball}


def threat_model(norm: Norm) -> type[ThreatModel]:
    """The threat-model class of ``norm``: :class:`LinfBall` for ``"Linf"``, :class:`L2Ball`
    for ``"L2"``.

    Raises:
        ValueError: If ``norm`` is neither.
    """
    if norm not in _THREAT_MODELS:
        raise ValueError(f"norm must be one of {sorted(_THREAT_MODELS)}, got {norm!r}")
    return _THREAT_MODELS[norm]
