"""AWP: adversarial weight perturbation on top of PGD-AT or TRADES."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advkit._checks import check_real
from advkit._guard import model_state
from advkit.training.objectives.base import (
    AdversarialObjective,
    Objective,
    ObjectiveOutput,
    TrainingModel,
)
from advkit.training.objectives.mixed import MixedCE, clean_metrics

__all__ = ["AWP", "awp_parameters"]

_EPS = 1e-20  # the authors' guard against a zero gradient norm


def awp_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The parameters AWP perturbs: trainable ones with ``"weight"`` in their name and at
    least two dimensions (convolution and linear weights; not biases nor BatchNorm), as the
    authors' ``diff_in_weights``."""
    return [
        (name, param)
        for name, param in model.named_parameters()
        if param.requires_grad and param.ndim > 1 and "weight" in name
    ]


class AWP(Objective):
    r"""Adversarial weight perturbation on top of an adversarial objective (PGD-AT or TRADES).

    For every batch, after the base objective's inner maximization gives :math:`x'`, the
    weights are perturbed layer by layer in the direction that increases the base objective's
    outer loss :math:`\mathcal{L}` (computed in train mode),

    .. math:: v_l = \gamma\,\|w_l\|\, \frac{\nabla_{w_l}\mathcal{L}}
              {\|\nabla_{w_l}\mathcal{L}\| + 10^{-20}},

    the training loss is computed at :math:`w + v` and back-propagated, and the weights are
    then restored to exactly :math:`w` (saved copies, bit for bit) before the optimizer step,
    which applies the gradient taken at :math:`w + v`. The authors' ``utils_awp.py`` takes one
    SGD step of a proxy model on :math:`-\mathcal{L}` and rescales the difference, which is
    the same direction; its forward pass in train mode updates the proxy's BatchNorm
    statistics only, and here the model's running statistics are restored after that pass.

    Deviation: the authors restore by subtracting :math:`v` *after* ``optimizer.step()``. Both
    are the paper's update :math:`w \leftarrow w - \eta\nabla_{w+v}` for plain SGD; restoring
    first makes the restoration exact, leaves weight decay acting on :math:`w` (not
    :math:`w + v`), and keeps the weights intact when AMP's scaler skips a step or the
    optimizer is replaced. Under DistributedDataParallel each process perturbs with the
    gradient of its own shard (like a per-process proxy); every process restores the same
    :math:`w`, so the replicas stay identical.

    Args:
        base: The objective perturbed: :class:`~advkit.training.TRADES`, or
            :class:`~advkit.training.MixedCE` with an attack (PGD-AT with ``adv_weight=1``).
        gamma: Relative size of the weight perturbation, >= 0; 0.005 (TRADES-AWP) or 0.01
            (PGD-AT-AWP) in the paper.

    Metrics: those of ``base``, measured at the perturbed weights, and if ``base`` has no
    clean pass (PGD-AT), ``accuracy`` from one no-grad eval-mode pass at :math:`w`.

    Raises:
        TypeError: If ``base`` is not an adversarial objective.
        ValueError: If ``gamma < 0`` or ``base`` makes no adversarial pass.

    References:
        Wu, Xia and Wang, "Adversarial Weight Perturbation Helps Robust Generalization",
        NeurIPS 2020 (code: csdongxian/AWP, ``utils_awp.py``).

    Example:
        >>> from advkit.training import TRADES
        >>> AWP(TRADES(eps=8 / 255), gamma=0.005).metric_names
        ('accuracy', 'adv_accuracy', 'clean_loss', 'robust_loss')
    """

    def __init__(self, base: AdversarialObjective, *, gamma: float = 0.005) -> None:
        if not isinstance(base, AdversarialObjective) or isinstance(base, AWP):
            raise TypeError(
                "base must be an adversarial objective such as TRADES(...) or "
                f"MixedCE(attack, adv_weight=1.0), got {type(base).__name__}"
            )
        if isinstance(base, MixedCE) and not base.passes()[1]:
            raise ValueError(
                "AWP needs an objective with an adversarial pass: MixedCE without an attack "
                "(or with adv_weight=0) has none"
            )
        self.base = base
        self.gamma = check_real(gamma, "gamma", low=0)
        self._saved: list[tuple[nn.Parameter, Tensor]] = []

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The base objective's metrics, and ``accuracy`` if the base has no clean pass."""
        names = self.base.metric_names
        return names if "accuracy" in names else ("accuracy", *names)

    @property
    def eps(self) -> float | None:
        """The base objective's radius."""
        return self.base.eps

    def weight_perturbation(
        self, model: nn.Module, inputs: Tensor, adv_inputs: Tensor | None, labels: Tensor
    ) -> list[tuple[nn.Parameter, Tensor]]:
        """``(parameter, v)`` for every perturbed parameter, from a train-mode pass of the
        plain ``model`` whose BatchNorm statistics are restored afterwards."""
        params = awp_parameters(model)
        if not params or self.gamma == 0:
            return []
        with model_state(model, mode="train"), torch.enable_grad():
            loss = self.base.outer(model, inputs, adv_inputs, labels).loss
            grads = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
        perturbation = []
        for (_, param), grad in zip(params, grads, strict=True):
            if grad is None:
                continue
            scale = self.gamma * param.detach().norm() / (grad.norm() + _EPS)
            perturbation.append((param, scale * grad))
        return perturbation

    def __call__(
        self, model: TrainingModel, inputs: Tensor, labels: Tensor, eps_scale: float
    ) -> ObjectiveOutput:
        """The base objective's loss at the perturbed weights ``w + v``."""
        adv_inputs = self.base.perturb_batch(model, inputs, labels, eps_scale)
        perturbation = self.weight_perturbation(model.module, inputs, adv_inputs, labels)
        clean = {}
        if "accuracy" not in self.base.metric_names:  # at w, before the perturbation
            clean = clean_metrics(model.module, inputs, labels)
        self.after_backward(model)  # undo a previous perturbation that never reached it
        with torch.no_grad():
            self._saved = [(param, param.detach().clone()) for param, _ in perturbation]
            for param, v in perturbation:
                param.add_(v)
        out = self.base.outer(model, inputs, adv_inputs, labels)
        return ObjectiveOutput(out.loss, {**out.metrics, **clean}) if clean else out

    def after_backward(self, model: TrainingModel) -> None:
        """Restore the weights to exactly their values before the perturbation."""
        with torch.no_grad():
            for param, original in self._saved:
                param.copy_(original)
        self._saved = []
