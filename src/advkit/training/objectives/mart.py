"""MART: misclassification-aware adversarial training."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from advkit.training.objectives.base import (
    Forward,
    ObjectiveOutput,
    accuracy,
)
from advkit.training.objectives.trades import InnerPGDObjective

__all__ = ["MART", "mart_loss_terms"]


def mart_loss_terms(logits: Tensor, adv_logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    r"""MART's two terms, as in the authors' ``mart.py``: the boosted cross-entropy on the
    adversarial logits,

    .. math:: \mathrm{BCE} = \mathrm{CE}(f(x'), y)
              - \tfrac{1}{N}\textstyle\sum_i \log\big(1.0001 - p_{\hat y_i}(x'_i) + 10^{-12}\big)

    (:math:`\hat y` the most likely wrong class on :math:`x'`), and the misclassification-weighted
    KL term

    .. math:: \tfrac{1}{N}\textstyle\sum_i \mathrm{KL}\big(p(x_i) \,\|\, p(x'_i)\big)
              \,(1.0000001 - p_{y_i}(x_i))

    with ``log(p(x') + 1e-12)`` inside the KL. Returns ``(bce, weighted_kl)``.
    """
    adv_probs = F.softmax(adv_logits, dim=1)
    top2 = torch.argsort(adv_probs, dim=1)[:, -2:]
    wrong = torch.where(top2[:, -1] == labels, top2[:, -2], top2[:, -1])
    bce = F.cross_entropy(adv_logits, labels) + F.nll_loss(
        torch.log(1.0001 - adv_probs + 1e-12), wrong
    )
    nat_probs = F.softmax(logits, dim=1)
    true_probs = torch.gather(nat_probs, 1, labels.unsqueeze(1).long()).squeeze(1)
    kl = F.kl_div(torch.log(adv_probs + 1e-12), nat_probs, reduction="none").sum(dim=1)
    weighted = (1.0 / labels.shape[0]) * torch.sum(kl * (1.0000001 - true_probs))
    return bce, weighted


class MART(InnerPGDObjective):
    r"""MART: boosted cross-entropy on adversarial inputs plus a misclassification-aware KL term.

    .. math:: \mathcal{L} = \mathrm{BCE}(f(x'), y) + \beta\,\tfrac{1}{N}\textstyle\sum_i
              \mathrm{KL}\big(p(x_i) \,\|\, p(x'_i)\big)\,(1 - p_{y_i}(x_i))

    (``mart_loss_terms`` in this module gives the exact terms and their 1e-12 guards). The inner attack
    is ``mart.py``'s PGD: from :math:`x + 0.001\,\mathcal{N}(0, 1)`, ``steps`` signed steps on
    the cross-entropy, each projected onto the ball and the bounds, with the model in eval mode.
    mart.py has no L2 branch; on ``norm="L2"`` the step is the :class:`~advkit.attacks.L2Ball`
    step (normalized gradient, scaled into the ball, then clipped to the bounds).

    Args:
        eps: Radius of the threat model.
        steps: Steps of the inner PGD, >= 1.
        beta: Weight of the KL term, >= 0; 6 is the paper's CIFAR-10 choice.
        alpha: Step size; ``2.5 * eps / steps`` by default (mart.py's CIFAR-10 setting is eps
            0.031 and 10 steps of 0.007).
        norm: ``"Linf"`` or ``"L2"``.
        bounds: The box ``(lo, hi)`` inputs live in.

    Metrics: ``accuracy`` (clean), ``adv_accuracy``, ``adv_loss`` (the BCE term) and
    ``robust_loss`` (the weighted KL term, before ``beta``).

    References:
        Wang, Zou, Yi, Bailey, Ma and Gu, "Improving Adversarial Robustness Requires
        Revisiting Misclassified Examples", ICLR 2020 (code: YisenWang/MART, ``mart.py``).

    Example:
        >>> MART(eps=8 / 255, steps=10).beta
        6.0
    """

    @property
    def metric_names(self) -> tuple[str, ...]:
        """``accuracy``, ``adv_accuracy``, ``adv_loss``, ``robust_loss``."""
        return ("accuracy", "adv_accuracy", "adv_loss", "robust_loss")

    def outer(
        self, forward: Forward, inputs: Tensor, adv_inputs: Tensor | None, labels: Tensor
    ) -> ObjectiveOutput:
        """``BCE(f(x'), y) + beta * weighted KL``, as mart.py's ``mart_loss``."""
        assert adv_inputs is not None  # internal invariant: perturb always returns inputs
        logits = forward(inputs)
        adv_logits = forward(adv_inputs)
        bce, weighted_kl = mart_loss_terms(logits, adv_logits, labels)
        loss = bce + float(self.beta) * weighted_kl
        metrics = {
            "accuracy": accuracy(logits, labels),
            "adv_accuracy": accuracy(adv_logits, labels),
            "adv_loss": bce.detach(),
            "robust_loss": weighted_kl.detach(),
        }
        return ObjectiveOutput(loss, metrics)
