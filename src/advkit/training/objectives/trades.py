"""TRADES: cross-entropy on clean inputs plus beta times the KL divergence to adversarial ones."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advkit._checks import check_int, check_logits, check_real
from advkit._guard import model_state
from advkit.attacks import PGD
from advkit.attacks.threat import Norm
from advkit.training.objectives.base import (
    AdversarialObjective,
    Forward,
    ObjectiveOutput,
    accuracy,
)

__all__ = ["START_STD", "TRADES", "InnerPGDObjective", "trades_kl"]

START_STD = 0.001
"""Standard deviation of the Gaussian start of TRADES's and MART's inner attack (trades.py,
mart.py): ``x + 0.001 * N(0, 1)``."""


class _KLToClean:
    """``KL(p(x) || p(x'))`` summed over the batch, ``p(x)`` fixed: TRADES's inner loss as an
    attack loss ``loss(logits, labels)`` (the labels are not used). Row ``i`` of the logits
    must be sample ``i`` of the batch: used by a plain attack call, which never narrows it."""

    def __init__(self, clean_probs: Tensor) -> None:
        self.clean_probs = clean_probs

    def __call__(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.kl_div(F.log_softmax(logits, dim=1), self.clean_probs, reduction="sum")


def trades_kl(adv_logits: Tensor, clean_logits: Tensor) -> Tensor:
    r""":math:`\frac{1}{N}\sum_i \mathrm{KL}(p(x_i) \,\|\, p(x'_i))`: the KL divergence summed
    over the batch and divided by its size (``nn.KLDivLoss(size_average=False)(log p(x'), p(x))
    / N`` of trades.py). Gradients flow through both arguments."""
    total = F.kl_div(
        F.log_softmax(adv_logits, dim=1), F.softmax(clean_logits, dim=1), reduction="sum"
    )
    return total / adv_logits.shape[0]


class InnerPGDObjective(AdversarialObjective):
    """What TRADES and MART share: a radius, a weight ``beta`` and the inner attack.

    The inner attack is :class:`~advkit.attacks.PGD` from ``x + 0.001 N(0, 1)`` (trades.py,
    mart.py), the model in eval mode, its radius and step scaled by the eps warm-up and its
    loss given by :meth:`inner_loss`; running it as an attack gives the batch every check of an
    attack (bounds, labels, dtypes, finite logits). A subclass writes
    :meth:`~advkit.training.AdversarialObjective.outer` and, for another inner loss than the
    cross-entropy, :meth:`inner_loss`.

    Args:
        eps: Radius of the threat model.
        steps: Steps of the inner attack, >= 1.
        beta: Weight of the regularization term, >= 0.
        alpha: Step size; ``2.5 * eps / steps`` by default.
        norm: ``"Linf"`` or ``"L2"``.
        bounds: The box ``(lo, hi)`` inputs live in.

    Raises:
        ValueError: If ``beta`` or ``eps`` is negative, ``steps < 1`` or ``alpha <= 0``.
    """

    def __init__(
        self,
        *,
        eps: float,
        steps: int = 10,
        beta: float = 6.0,
        alpha: float | None = None,
        norm: Norm = "Linf",
        bounds: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        self.eps_value = check_real(eps, "eps", low=0)
        self.beta = check_real(beta, "beta", low=0)
        check_int(steps, "steps", minimum=1)
        self.alpha = None if alpha is None else check_real(alpha, "alpha", low=0, open_low=True)
        # Building the attack checks the settings as every attack does (an L-inf eps wider
        # than the bounds is an error).
        self.attack = PGD(
            eps=self.eps_value,
            steps=steps,
            alpha=alpha,
            start_std=START_STD,
            norm=norm,
            bounds=bounds,
        )
        self.steps = self.attack.steps
        self.norm: Norm = norm
        self.bounds = self.attack.bounds

    @property
    def eps(self) -> float:
        """The radius of the threat model."""
        return self.eps_value

    def step_size(self, eps_scale: float = 1.0) -> float:
        """The inner step size at the given eps scale."""
        alpha = 2.5 * self.eps_value / self.steps if self.alpha is None else self.alpha
        return alpha * eps_scale

    def inner_loss(
        self, model: nn.Module, inputs: Tensor, labels: Tensor
    ) -> Callable[[Tensor, Tensor], Tensor] | None:
        """The inner attack's loss ``loss(logits, labels)`` for this batch; ``None`` (the
        default) for the attack's own, the cross-entropy."""
        return None

    def perturb(
        self,
        model: nn.Module,
        inputs: Tensor,
        labels: Tensor,
        eps_scale: float,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The inner attack with :meth:`inner_loss` at the scaled radius and step, its
        Gaussian start drawn from ``generator`` (the global RNG if ``None``)."""
        eps = self.eps_value * eps_scale
        if eps == 0:  # the warm-up's first batch: a ball of radius 0
            return inputs.detach()
        loss = self.inner_loss(model, inputs, labels)
        changes = {"eps": eps, "alpha": self.step_size(eps_scale)}
        attack = self.attack.replace(**changes, **({} if loss is None else {"loss": loss}))
        return attack(model, inputs, labels, generator=generator)  # checkpoints save either


class TRADES(InnerPGDObjective):
    r"""TRADES: trade clean accuracy for robustness through a KL regularizer.

    Inner maximization, with the model in eval mode, from
    :math:`x'_0 = x + 0.001\,\mathcal{N}(0, 1)`:

    .. math:: x'_{k+1} = \Pi_{B(x, \epsilon) \cap [lo, hi]}\big(x'_k + \alpha\, d(\nabla_{x'_k}
              \mathrm{KL}(p(x) \,\|\, p(x'_k)))\big)

    for ``steps`` steps, with ``d = sign`` on L-inf (the Gaussian start drawn from the
    Trainer's ``generator``, or the global RNG without one). Outer loss, in train mode:

    .. math:: \mathcal{L} = \mathrm{CE}(f(x), y)
              + \beta\, \tfrac{1}{N} \textstyle\sum_i \mathrm{KL}(p(x_i) \,\|\, p(x'_i))

    with gradients through both :math:`p(x)` and :math:`p(x')`, exactly as the authors'
    ``trades.py``. Two deviations, neither changing the loss: the clean forward pass runs once
    (trades.py runs it twice in train mode, which updates BatchNorm's running statistics twice
    with the same batch), and the KL is divided by the actual batch size (the first trades.py
    divided by the configured ``batch_size``, which differs on a last, smaller batch).

    On L2 the step is the :class:`~advkit.attacks.L2Ball` step: ``x' + alpha * g / ||g||_2``,
    scaled into the ball, then clipped to the bounds. trades.py's L2 branch takes the same
    normalized step (SGD on ``delta`` with ``lr = 2 * eps / steps``) but clips to the bounds
    before scaling into the ball; both orders give a point of the ball and the box, and agree
    whenever the box does not clip.

    Args:
        eps: Radius of the threat model.
        steps: Steps of the inner maximization (the paper's K), >= 1.
        beta: Weight of the KL term (the paper's 1/lambda), >= 0; 6 is the paper's CIFAR-10
            choice.
        alpha: Step size; ``2.5 * eps / steps`` by default (the authors' CIFAR-10 setting,
            eps 0.031 and 10 steps of 0.007, is close to it).
        norm: ``"Linf"`` or ``"L2"``.
        bounds: The box ``(lo, hi)`` inputs live in.

    Metrics: ``accuracy`` (clean), ``adv_accuracy`` (on ``x'``), ``clean_loss`` (the CE
    term) and ``robust_loss`` (the KL term, before ``beta``).

    Raises:
        ValueError: If ``beta`` or ``eps`` is negative, ``steps < 1`` or ``alpha <= 0``.

    References:
        Zhang, Yu, Jiao, Xing, El Ghaoui and Jordan, "Theoretically Principled Trade-off
        between Robustness and Accuracy", ICML 2019 (code: yaodongyu/TRADES, ``trades.py``).

    Example:
        >>> objective = TRADES(eps=8 / 255, steps=10, beta=6.0)
        >>> objective.metric_names
        ('accuracy', 'adv_accuracy', 'clean_loss', 'robust_loss')
    """

    @property
    def metric_names(self) -> tuple[str, ...]:
        """``accuracy``, ``adv_accuracy``, ``clean_loss``, ``robust_loss``."""
        return ("accuracy", "adv_accuracy", "clean_loss", "robust_loss")

    def inner_loss(self, model: nn.Module, inputs: Tensor, labels: Tensor) -> _KLToClean:
        """``KL(p(x) || p(x'))`` to the clean prediction (one gradient-free clean pass, model
        in eval mode), the inner maximization of trades.py."""
        with model_state(model, no_grad=True):
            clean = model(inputs.detach())
        check_logits(clean, inputs.shape[0], labels)  # the labels' range, finite logits
        return _KLToClean(F.softmax(clean.detach(), dim=1))

    def outer(
        self, forward: Forward, inputs: Tensor, adv_inputs: Tensor | None, labels: Tensor
    ) -> ObjectiveOutput:
        """``CE(f(x), y) + beta * KL(p(x) || p(x'))``, the KL summed over the batch / N."""
        assert adv_inputs is not None  # internal invariant: perturb always returns inputs
        logits = forward(inputs)
        adv_logits = forward(adv_inputs)
        clean_loss = F.cross_entropy(logits, labels)
        robust_loss = trades_kl(adv_logits, logits)
        loss = clean_loss + self.beta * robust_loss
        metrics = {
            "accuracy": accuracy(logits, labels),
            "adv_accuracy": accuracy(adv_logits, labels),
            "clean_loss": clean_loss.detach(),
            "robust_loss": robust_loss.detach(),
        }
        return ObjectiveOutput(loss, metrics)
