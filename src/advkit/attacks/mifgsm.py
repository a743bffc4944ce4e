"""MI-FGSM: I-FGSM whose step follows an accumulated, L1-normalized gradient."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from advkit._checks import EpsArg, check_real
from advkit.attacks.ifgsm import IFGSM

__all__ = ["MIFGSM"]


class MIFGSM(IFGSM):
    r"""Momentum Iterative FGSM.

    Per sample, :math:`g_{t+1} = \mu\, g_t + \nabla_x L(x_t) / \mathrm{mean}|\nabla_x L(x_t)|`
    and :math:`x_{t+1} = \mathrm{clip}(x_t + \alpha\,\mathrm{sign}(g_{t+1}))`. The mean over the
    non-batch dimensions is the paper's L1 normalization up to a constant factor, which the sign
    ignores; a zero gradient leaves the momentum unchanged instead of producing NaN. Unlike
    foolbox, the momentum accumulates the normalized gradient, not its sign, as in the paper.
    With ``norm="L2"`` the step follows :math:`g_{t+1} / \|g_{t+1}\|_2`, the paper's L2
    variant, and is projected onto the L2 ball.

    Args:
        eps: Radius in the norm ``norm`` (L-inf by default), a float or a per-sample tensor
            ``[N]``.
        steps: Number of iterations, >= 1; 10 by default, as in torchattacks.
        alpha: Step size; default ``eps / steps``.
        decay: Momentum decay factor :math:`\mu` >= 0 (1.0 in the paper).
        **kwargs: ``norm`` (``"Linf"`` or ``"L2"``), ``bounds``, ``loss``, ``targeted`` and
            ``model_mode`` of :class:`~advkit.attacks.Attack`, and ``autocast`` of
            :class:`~advkit.attacks.GradientAttack`.

    References:
        Dong, Liao, Pang, Su, Zhu, Hu and Li, "Boosting Adversarial Attacks with Momentum",
        CVPR 2018.
    """

    def __init__(
        self,
        *,
        eps: EpsArg,
        steps: int = 10,
        alpha: EpsArg | None = None,
        decay: float = 1.0,
        **kwargs: Any,
    ) -> None:
        self._record_settings(eps=eps, steps=steps, alpha=alpha, decay=decay, **kwargs)
        super().__init__(eps=eps, steps=steps, alpha=alpha, **kwargs)
        self.decay = check_real(decay, "decay", low=0)

    def _init_state(self, inputs: Tensor) -> dict[str, Tensor]:
        """The momentum, zero at the start."""
        return {"momentum": torch.zeros_like(inputs)}

    def _direction(self, grad: Tensor, state: dict[str, Tensor]) -> Tensor:
        """Update the momentum in place in ``state`` and return it."""
        dims = tuple(range(1, grad.ndim))
        scale = grad.abs().mean(dim=dims, keepdim=True).clamp_min(torch.finfo(grad.dtype).tiny)
        momentum = grad / scale + self.decay * state["momentum"]
        state["momentum"] = momentum
        return momentum
