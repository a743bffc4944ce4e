"""I-FGSM (BIM): repeated steepest-ascent steps projected onto the ball (L-inf or L2)."""

from __future__ import annotations

from typing import Any

from advkit._checks import EpsArg
from advkit.attacks.gradient import GradientAttack

__all__ = ["BIM", "IFGSM"]


class IFGSM(GradientAttack):
    r"""Iterative FGSM, also known as the Basic Iterative Method (BIM).

    From :math:`x_0 = x`, each step is

    .. math::
        x_{t+1} = \mathrm{clip}_{[lo, hi]}\Big(\mathrm{clip}_{[x - \epsilon,\, x + \epsilon]}
        \big(x_t + \alpha\,\mathrm{sign}(\nabla_x L(x_t, y))\big)\Big)

    The result agrees element for element with torchattacks' ``BIM``. With ``norm="L2"`` each
    step follows :math:`\nabla_x L / \|\nabla_x L\|_2` and is projected onto the L2 ball and
    the box.

    Args:
        eps: Radius in the norm ``norm`` (L-inf by default), a float or a per-sample tensor
            ``[N]``.
        steps: Number of iterations, >= 1; 10 by default, as in torchattacks.
        alpha: Step size; default ``eps / steps``, so the last iterate can just reach the
            border of the ball.
        **kwargs: ``norm`` (``"Linf"`` or ``"L2"``), ``bounds``, ``loss``, ``targeted`` and
            ``model_mode`` of :class:`~advkit.attacks.Attack`, and ``autocast`` of
            :class:`~advkit.attacks.GradientAttack`.

    References:
        Kurakin, Goodfellow and Bengio, "Adversarial Examples in the Physical World",
        ICLR Workshop 2017.
    """

    def __init__(
        self, *, eps: EpsArg, steps: int = 10, alpha: EpsArg | None = None, **kwargs: Any
    ) -> None:
        self._record_settings(eps=eps, steps=steps, alpha=alpha, **kwargs)
        super().__init__(eps=eps, steps=steps, alpha=alpha, **kwargs)


BIM = IFGSM
