"""FGSM: one steepest-ascent step of size eps (the gradient's sign for L-inf)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from advkit._checks import EpsArg
from advkit.attacks.gradient import GradientAttack
from advkit.attacks.threat import ThreatModel

__all__ = ["FGSM"]


class FGSM(GradientAttack):
    r"""Fast Gradient Sign Method: one step of size eps along the gradient's sign.

    .. math:: x' = \mathrm{clip}_{[lo, hi]}\big(x + \epsilon\,\mathrm{sign}(\nabla_x L(x, y))\big)

    With ``norm="L2"`` the step follows :math:`\nabla_x L / \|\nabla_x L\|_2` instead (the
    fast gradient method of the same paper's L2 variant), projected onto the L2 ball and the box.

    Args:
        eps: Radius in the norm ``norm`` (L-inf by default), a float or a per-sample tensor
            ``[N]``.
        **kwargs: ``norm`` (``"Linf"`` or ``"L2"``), ``bounds``, ``loss``, ``targeted`` and
            ``model_mode`` of :class:`~advkit.attacks.Attack`, and ``autocast`` of
            :class:`~advkit.attacks.GradientAttack`.

    References:
        Goodfellow, Shlens and Szegedy, "Explaining and Harnessing Adversarial Examples",
        ICLR 2015.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
        >>> x, y = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])
        >>> x_adv = FGSM(eps=8 / 255)(model, x, y)
        >>> bool((x_adv - x).abs().max() <= 8 / 255 + 1e-7)
        True
    """

    def __init__(self, *, eps: EpsArg, **kwargs: Any) -> None:
        self._record_settings(eps=eps, **kwargs)
        given = sorted(set(kwargs) & {"steps", "alpha"})
        if given:
            raise TypeError(
                f"FGSM takes no {' or '.join(given)}: it is one step of size eps; for several "
                "steps use IFGSM (BIM) or PGD, e.g. IFGSM(eps=8 / 255, steps=10)"
            )
        super().__init__(eps=eps, steps=1, alpha=None, **kwargs)

    def _default_alpha(self, eps: Tensor) -> Tensor:
        """One step of the full radius."""
        return eps

    def _step(self, ball: ThreatModel, x: Tensor, direction: Tensor, alpha: Tensor) -> Tensor:
        """The one step starts at the center with alpha = eps: only the box can clip it."""
        return ball.step_from_center(direction)
