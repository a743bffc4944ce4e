"""The Trainer's default objective, ``(1 - lam) * L(x) + lam * L(x_adv)``, and fast (FGSM-RS) AT."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advkit._checks import check_bounds, check_real
from advkit._guard import model_state
from advkit.attacks import PGD, Attack
from advkit.attacks.base import check_attack
from advkit.attacks.threat import Norm
from advkit.training.objectives.base import (
    AdversarialObjective,
    Forward,
    ObjectiveOutput,
    TrainingModel,
    accuracy,
    scalar_loss,
)

__all__ = ["FastAT", "MixedCE", "scaled_attack"]


class MixedCE(AdversarialObjective):
    r"""Standard or adversarial training with a mixed loss (the Trainer's default).

    .. math:: \mathcal{L} = (1 - \lambda)\, L(f(x), y) + \lambda\, L(f(x'), y),
              \qquad x' = \mathrm{attack}(f, x, y)

    Without an attack this is plain supervised training, ``L(f(x), y)``. With ``adv_weight=1``
    it is Madry et al.'s PGD adversarial training (the clean pass is then skipped). The attack
    runs on the plain model in the mode it asks for (``model_mode``, eval by default) and in
    full precision; its eps (and an explicit ``alpha``) shrink with the warm-up's eps scale.

    ``Trainer(attack=..., adv_weight=..., loss_fn=...)`` builds exactly this objective.

    Args:
        attack: Attack that makes the adversarial examples, or ``None`` for standard training.
        adv_weight: The weight ``lam`` in ``[0, 1]`` of the adversarial loss.
        loss_fn: ``loss_fn(logits, labels) -> scalar``; cross-entropy by default.

    Metrics: ``accuracy`` (clean, if the clean pass runs), ``adv_accuracy`` (if the
    adversarial pass runs) and, when both run, ``clean_loss`` and ``adv_loss``.

    References:
        Goodfellow, Shlens and Szegedy, "Explaining and Harnessing Adversarial Examples",
        ICLR 2015 (the mixed loss); Madry, Makelov, Schmidt, Tsipras and Vladu, "Towards Deep
        Learning Models Resistant to Adversarial Attacks", ICLR 2018 (``adv_weight=1``).

    Example:
        >>> from advkit.attacks import PGD
        >>> objective = MixedCE(PGD(eps=8 / 255, steps=3), adv_weight=1.0)
        >>> objective.metric_names
        ('adv_accuracy',)
    """

    def __init__(
        self,
        attack: Attack | None = None,
        *,
        adv_weight: float = 0.5,
        loss_fn: Any = None,
    ) -> None:
        check_attack(attack, optional=True)
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        self.attack = attack
        self.adv_weight = check_real(adv_weight, "adv_weight", low=0, high=1)
        self.loss_fn = loss_fn or F.cross_entropy

    def passes(self) -> tuple[bool, bool]:
        """Which forward passes a training step makes: (clean, adversarial)."""
        adversarial = self.attack is not None and self.adv_weight > 0
        return (not adversarial or self.adv_weight < 1), adversarial

    @property
    def metric_names(self) -> tuple[str, ...]:
        """``accuracy``, ``adv_accuracy``, ``clean_loss``, ``adv_loss``: those that apply."""
        runs_clean, runs_adv = self.passes()
        names = ["accuracy"] if runs_clean else []
        names += ["adv_accuracy"] if runs_adv else []
        names += ["clean_loss", "adv_loss"] if runs_clean and runs_adv else []
        return tuple(names)

    @property
    def eps(self) -> float | None:
        """The attack's eps, if it is one float and the adversarial pass runs."""
        if self.passes()[1] and self.attack is not None and isinstance(self.attack.eps, float):
            return self.attack.eps
        return None

    def perturb(
        self,
        model: nn.Module,
        inputs: Tensor,
        labels: Tensor,
        eps_scale: float,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor | None:
        """The attack's adversarial inputs at the scaled eps (``None`` without the pass),
        its random start drawn from ``generator`` (the global RNG if ``None``)."""
        if not self.passes()[1]:
            return None
        assert self.attack is not None  # internal invariant: passes() checked it
        if eps_scale == 0:
            return inputs  # the warm-up's first batch: a ball of radius 0
        attack = self.attack if eps_scale == 1 else scaled_attack(self.attack, eps_scale)
        return attack(model, inputs, labels, generator=generator)

    def outer(
        self, forward: Forward, inputs: Tensor, adv_inputs: Tensor | None, labels: Tensor
    ) -> ObjectiveOutput:
        """``(1 - lam) * L(f(x), y) + lam * L(f(x'), y)``, skipping a pass of weight 0."""
        clean = forward(inputs) if self.passes()[0] else None
        adv = forward(adv_inputs) if adv_inputs is not None else None
        metrics: dict[str, Tensor] = {}
        if clean is not None:
            metrics["accuracy"] = accuracy(clean, labels)
        if adv is not None:
            metrics["adv_accuracy"] = accuracy(adv, labels)
        if clean is None or adv is None:
            only = clean if clean is not None else adv
            assert only is not None  # internal invariant: at least one pass runs
            return ObjectiveOutput(scalar_loss(self.loss_fn, only, labels), metrics)
        clean_loss = scalar_loss(self.loss_fn, clean, labels)
        adv_loss = scalar_loss(self.loss_fn, adv, labels)
        metrics.update(clean_loss=clean_loss.detach(), adv_loss=adv_loss.detach())
        loss = (1 - self.adv_weight) * clean_loss + self.adv_weight * adv_loss
        return ObjectiveOutput(loss, metrics)


class FastAT(MixedCE):
    r"""Fast adversarial training: FGSM from a uniform random start ("fast is better than free").

    .. math:: x' = \Pi_{B(x, \epsilon)}\big(x_0 + \alpha\,\mathrm{sign}
              \nabla_{x_0} \ell(f(x_0), y)\big),\quad x_0 \sim U(B(x, \epsilon)),
              \qquad \mathcal{L} = \ell(f(x'), y)

    with ``alpha = 1.25 * eps`` by default, as in Wong et al.'s ``train_fgsm.py``: one
    :class:`~advkit.attacks.PGD` step from a random start, projected onto the ball and the
    bounds, then one training pass on ``x'``. The FGSM step runs with the model in train mode,
    as in the authors' code (``model_mode="train"``); unlike there, the attack's pass leaves
    the BatchNorm running statistics untouched (advkit attacks leave no trace), so each batch
    updates them once. The uniform start comes from the Trainer's ``generator`` (the global
    RNG without one). Guard the run against catastrophic overfitting with
    :class:`~advkit.training.OverfittingGuard`. On ``norm="L2"`` the step is the L2 ball's
    normalized-gradient step (see :class:`~advkit.attacks.L2Ball`).

    Args:
        eps: Radius of the training perturbation.
        alpha: FGSM step size; ``1.25 * eps`` by default.
        norm: ``"Linf"`` (the paper's) or ``"L2"``.
        bounds: The box ``(lo, hi)`` inputs live in.
        model_mode: Mode of the model during the FGSM step, ``"train"`` as in the authors' code.
        clean_accuracy: Also log clean accuracy (``train_accuracy``), measured with one extra
            no-grad forward pass in eval mode per batch; ``False`` saves that pass.

    Metrics: ``adv_accuracy`` and, with ``clean_accuracy``, ``accuracy``.

    References:
        Wong, Rice and Kolter, "Fast is better than free: Revisiting adversarial training",
        ICLR 2020 (code: locuslab/fast_adversarial).

    Example:
        >>> objective = FastAT(eps=8 / 255)
        >>> objective.attack.alpha == 1.25 * 8 / 255
        True
    """

    def __init__(
        self,
        *,
        eps: float,
        alpha: float | None = None,
        norm: Norm = "Linf",
        bounds: tuple[float, float] = (0.0, 1.0),
        model_mode: str = "train",
        clean_accuracy: bool = True,
    ) -> None:
        eps = check_real(eps, "eps", low=0)
        if eps == 0:
            raise ValueError("eps must be > 0 for fast adversarial training, got 0")
        alpha = 1.25 * eps if alpha is None else check_real(alpha, "alpha", low=0, open_low=True)
        attack = PGD(
            eps=eps,
            steps=1,
            alpha=alpha,
            random_start=True,
            norm=norm,
            bounds=check_bounds(bounds),
            model_mode=model_mode,  # type: ignore[arg-type]
        )
        super().__init__(attack, adv_weight=1.0)
        self.clean_accuracy = bool(clean_accuracy)

    @property
    def metric_names(self) -> tuple[str, ...]:
        """``accuracy`` (with ``clean_accuracy``) and ``adv_accuracy``."""
        return ("accuracy", "adv_accuracy") if self.clean_accuracy else ("adv_accuracy",)

    def __call__(
        self, model: TrainingModel, inputs: Tensor, labels: Tensor, eps_scale: float
    ) -> ObjectiveOutput:
        """``CE(f(x'), y)``; clean accuracy from a no-grad eval pass if asked for."""
        out = super().__call__(model, inputs, labels, eps_scale)
        if not self.clean_accuracy:
            return out
        return ObjectiveOutput(
            out.loss, {**out.metrics, **clean_metrics(model.module, inputs, labels)}
        )


def clean_metrics(module: nn.Module, inputs: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """``{"accuracy": ...}`` from a no-grad eval-mode pass of ``module``."""
    with model_state(module, no_grad=True):
        return {"accuracy": accuracy(module(inputs), labels)}


def scaled_attack(attack: Attack, scale: float) -> Attack:
    """``attack`` with its eps (and an explicit ``alpha``) multiplied by ``scale``."""
    changes: dict[str, Any] = {"eps": attack.eps * scale}
    alpha = getattr(attack, "alpha", None)
    if alpha is not None:  # an explicit step size shrinks with the ball
        changes["alpha"] = alpha * scale
    return attack.replace(**changes)
