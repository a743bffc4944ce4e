"""PGD: I-FGSM from a uniform random start in the ball (L-inf or L2)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from advkit._checks import EpsArg, check_bool, check_real
from advkit.attacks.base import _arguments
from advkit.attacks.ifgsm import IFGSM
from advkit.attacks.threat import ThreatModel

__all__ = ["PGD"]


class PGD(IFGSM):
    r"""Projected Gradient Descent under the L-inf or the L2 norm.

    The I-FGSM step rule, started from a uniform point of the ball clipped to the bounds when
    ``random_start`` is true: :math:`x_0 \sim U(x - \epsilon, x + \epsilon)` for L-inf, and for
    L2 a direction uniform on the sphere at radius :math:`\epsilon u^{1/d}` (see
    :meth:`~advkit.attacks.L2Ball.random_point`). Without a random start, ``norm="L2"`` agrees
    with torchattacks' ``PGDL2(random_start=False)`` to float rounding.

    Args:
        eps: Radius in the norm ``norm`` (L-inf by default), a float or a per-sample tensor
            ``[N]``.
        steps: Number of iterations, >= 1; 10 by default, as in torchattacks.
        alpha: Step size; default ``2.5 * eps / steps``, the usual choice (Madry et al.), which
            lets the iterate cross the ball and come back.
        random_start: Start from a uniform point of the ball instead of the clean input.
            Pass a ``generator`` to :meth:`~advkit.attacks.Attack.run` for reproducible starts.
        start_std: Start instead from :math:`x + \sigma\,\mathcal{N}(0, 1)` with this
            :math:`\sigma` (> 0), not projected onto the ball or the bounds (the first step
            projects): the start of TRADES's and MART's reference code (``0.001``), which
            :class:`~advkit.training.TRADES` and :class:`~advkit.training.MART` use. Replaces
            ``random_start`` when given.
        **kwargs: ``norm`` (``"Linf"`` or ``"L2"``), ``bounds``, ``loss``, ``targeted`` and
            ``model_mode`` of :class:`~advkit.attacks.Attack`, and ``autocast`` of
            :class:`~advkit.attacks.GradientAttack`.

    References:
        Madry, Makelov, Schmidt, Tsipras and Vladu, "Towards Deep Learning Models Resistant
        to Adversarial Attacks", ICLR 2018.
    """

    def __init__(
        self,
        *,
        eps: EpsArg,
        steps: int = 10,
        alpha: EpsArg | None = None,
        random_start: bool = True,
        start_std: float | None = None,
        **kwargs: Any,
    ) -> None:
        self._record_settings(**_arguments(locals()))
        super().__init__(eps=eps, steps=steps, alpha=alpha, **kwargs)
        self.random_start = check_bool(random_start, "random_start")
        self.start_std = (
            None if start_std is None else check_real(start_std, "start_std", low=0, open_low=True)
        )
        # a random (uniform or Gaussian) start is drawn per run
        self.starts_at_center = not random_start and self.start_std is None

    def _default_alpha(self, eps: Tensor) -> Tensor:
        """``2.5 * eps / steps``."""
        return 2.5 * eps / self.steps

    def _start(self, ball: ThreatModel, generator: torch.Generator | None) -> Tensor:
        """A Gaussian point around the input with ``start_std``, else a uniform point of the
        ball, or the clean input without ``random_start``."""
        if self.start_std is not None:
            x0 = ball.center
            noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
            return x0 + self.start_std * noise
        return ball.random_point(generator) if self.random_start else ball.center
