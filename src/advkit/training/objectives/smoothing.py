"""Training for randomized smoothing: Gaussian augmentation, SmoothAdv, consistency."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from advkit._checks import check_bounds, check_generator, check_inputs, check_int, check_real
from advkit.attacks import PGD
from advkit.certification import SoftSmooth
from advkit.training.objectives.base import Objective, ObjectiveOutput, TrainingModel, accuracy

__all__ = ["Consistency", "GaussianAugmentation", "SmoothAdv", "consistency_loss"]


class _NoiseObjective(Objective):
    """What the three share: ``sigma``, ``m`` noise samples per input, the noise's source."""

    def __init__(
        self,
        sigma: float,
        samples: int,
        bounds: tuple[float, float],
        generator: torch.Generator | None,
    ) -> None:
        self.sigma = check_real(sigma, "sigma", low=0, open_low=True)
        self.samples = check_int(samples, "samples", minimum=1)
        self.bounds = check_bounds(bounds)
        self.generator = check_generator(generator)

    def noise(self, inputs: Tensor, fallback: torch.Generator | None = None) -> Tensor:
        """Noise ``[N, m, ...]`` of standard deviation ``sigma`` for ``inputs`` ``[N, ...]``,
        drawn from this objective's own generator, else from ``fallback`` (the Trainer's),
        else from the global RNG."""
        shape = (inputs.shape[0], self.samples, *inputs.shape[1:])
        generator = self.generator if self.generator is not None else fallback
        noise = torch.randn(shape, generator=generator, device=inputs.device, dtype=inputs.dtype)
        return noise.mul_(self.sigma)

    def check(self, inputs: Tensor, labels: Tensor) -> None:
        """The inputs inside the bounds and integer labels of the right length."""
        check_inputs(inputs, self.bounds)
        if labels.shape != (inputs.shape[0],) or labels.is_floating_point():
            raise ValueError(
                f"labels must be integers of shape [{inputs.shape[0]}], got "
                f"{list(labels.shape)} of {labels.dtype}"
            )

    def state_dict(self) -> dict[str, Any]:
        """The noise generator's state (empty with the global RNG, which the Trainer saves)."""
        return {} if self.generator is None else {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the noise generator's state."""
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"])


class GaussianAugmentation(_NoiseObjective):
    r"""Training with Gaussian data augmentation, the base classifier of Cohen et al.

    .. math:: \mathcal{L} = \mathrm{CE}(f(x + \varepsilon), y),
              \qquad \varepsilon \sim \mathcal{N}(0, \sigma^2 I)

    as in the authors' ``train.py`` (``inputs + torch.randn_like(inputs) * noise_sd``, no
    clipping). Train at the ``sigma`` you will certify with. The noise comes from
    ``generator`` (saved in checkpoints with the objective's state) or, by default, from the
    Trainer's ``generator`` or the global RNG, both of which the Trainer saves and restores
    per process: a resumed run is bit-exact either way.

    Args:
        sigma: The noise level, > 0.
        bounds: The box ``(lo, hi)`` clean inputs live in (checked).
        generator: Source of the noise, on the training device; if ``None``, the Trainer's
            ``generator`` or, without one, the global RNG. An objective's own generator is
            used even when the Trainer has one.

    Metrics: ``noisy_accuracy`` (on the noisy inputs).

    References:
        Cohen, Rosenfeld and Kolter, "Certified Adversarial Robustness via Randomized
        Smoothing", ICML 2019 (code: locuslab/smoothing, ``code/train.py``).

    Example:
        >>> GaussianAugmentation(sigma=0.25).metric_names
        ('noisy_accuracy',)
    """

    def __init__(
        self,
        *,
        sigma: float,
        bounds: tuple[float, float] = (0.0, 1.0),
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(sigma, 1, bounds, generator)

    @property
    def metric_names(self) -> tuple[str, ...]:
        """``noisy_accuracy``."""
        return ("noisy_accuracy",)

    def __call__(
        self, model: TrainingModel, inputs: Tensor, labels: Tensor, eps_scale: float
    ) -> ObjectiveOutput:
        """``CE(f(x + noise), y)``."""
        self.check(inputs, labels)
        logits = model(inputs + self.noise(inputs, model.generator)[:, 0])
        return ObjectiveOutput(
            F.cross_entropy(logits, labels), {"noisy_accuracy": accuracy(logits, labels)}
        )


class SmoothAdv(_NoiseObjective):
    r"""SmoothAdv: adversarial training of the smoothed soft classifier (Salman et al.).

    For each input, ``m = samples`` noise vectors :math:`\varepsilon_j` are drawn once per
    batch. The inner maximization is advkit's L2 :class:`~advkit.attacks.PGD` (no random
    start, step :math:`2\epsilon / K`, ``K = steps``) on the soft smoothed classifier
    :class:`~advkit.certification.SoftSmooth` with those fixed vectors, maximizing

    .. math:: -\log \frac{1}{m} \sum_j \mathrm{softmax}(f(x' + \varepsilon_j))_y

    in eval mode (the authors' ``PGD_L2._attack_mutlinoise``); the outer loss, in train mode,
    is the mean cross-entropy on the same noisy copies,
    :math:`\frac{1}{m}\sum_j \mathrm{CE}(f(x' + \varepsilon_j), y)` (``train_pgd.py``). The
    Trainer's eps warm-up scales ``eps`` (the authors ramp it over the first 10 epochs).
    Deviations from the authors' code, none changing the loss: advkit's L2 step scales into
    the ball and then clips to the box (theirs clips, then rescales), and a zero gradient
    gives no step (theirs steps in a random direction). The authors split a batch of ``B``
    into ``m`` mini-batches of ``B / m`` inputs with ``m`` copies each; here every input of
    the batch gets ``m`` copies, so pass batches of ``B / m`` to match their cost.

    Args:
        sigma: The noise level, > 0.
        eps: The L2 radius of the attack, >= 0 (the authors use 0.25 to 2.0).
        steps: PGD steps ``K``, >= 1 (1 to 10 in the paper).
        samples: ``m``, noise samples per input, >= 1 (1 to 8 in the paper).
        bounds: The box ``(lo, hi)`` inputs live in.
        generator: Source of the noise, on the training device; if ``None``, the Trainer's
            ``generator`` or, without one, the global RNG. An objective's own generator is
            used even when the Trainer has one.

    Metrics: ``noisy_accuracy`` (on the adversarial noisy copies).

    References:
        Salman, Yang, Li, Zhang, Zhang, Razenshteyn and Bubeck, "Provably Robust Deep Learning
        via Adversarially Trained Smoothed Classifiers", NeurIPS 2019 (code:
        Hadisalman/smoothing-adversarial, ``code/train_pgd.py``, ``code/attacks.py``).

    Example:
        >>> SmoothAdv(sigma=0.25, eps=0.5, steps=2, samples=2).attack(1.0).alpha
        0.5
    """

    def __init__(
        self,
        *,
        sigma: float,
        eps: float,
        steps: int = 1,
        samples: int = 1,
        bounds: tuple[float, float] = (0.0, 1.0),
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(sigma, samples, bounds, generator)
        self.eps_value = check_real(eps, "eps", low=0)
        self.steps = check_int(steps, "steps", minimum=1)

    @property
    def metric_names(self) -> tuple[str, ...]:
        """``noisy_accuracy``."""
        return ("noisy_accuracy",)

    @property
    def eps(self) -> float:
        """The L2 radius of the attack."""
        return self.eps_value

    def attack(self, eps_scale: float) -> PGD:
        """The inner attack at the warm-up's eps scale: L2 PGD, step ``2 eps / steps``."""
        eps = self.eps_value * eps_scale
        return PGD(
            eps=eps,
            steps=self.steps,
            alpha=2 * eps / self.steps,
            random_start=False,
            norm="L2",
            bounds=self.bounds,
        )

    def __call__(
        self, model: TrainingModel, inputs: Tensor, labels: Tensor, eps_scale: float
    ) -> ObjectiveOutput:
        """The attack on the soft smoothed classifier, then CE on the noisy copies."""
        self.check(inputs, labels)
        noise = self.noise(inputs, model.generator)
        adversarial = inputs
        if self.eps_value * eps_scale > 0:
            soft = SoftSmooth(model.module, self.sigma, self.samples, noise=noise)
            adversarial = self.attack(eps_scale)(soft, inputs, labels)
        noisy = (adversarial[:, None] + noise).flatten(0, 1)
        logits = model(noisy)
        repeated = labels.repeat_interleave(self.samples)  # row i * m + j: input i
        return ObjectiveOutput(
            F.cross_entropy(logits, repeated), {"noisy_accuracy": accuracy(logits, repeated)}
        )


def consistency_loss(logits: Tensor, lbd: float, eta: float) -> Tensor:
    r"""Jeong and Shin's consistency regularizer on ``m`` noisy copies of each input.

    With :math:`p_j = \mathrm{softmax}(f(x + \varepsilon_j))` and
    :math:`\hat p = \frac{1}{m}\sum_j p_j`,

    .. math:: \frac{1}{N} \sum_i \Big[\lambda\, \frac{1}{m} \sum_j
              \mathrm{KL}(\hat p \,\|\, p_j) + \eta\, H(\hat p)\Big]

    (``consistency.py``'s ``'default'`` loss; the entropy uses :math:`\hat p` clamped at
    :math:`10^{-20}`; gradients flow through :math:`\hat p` too).

    Args:
        logits: ``[N, m, C]`` logits of the noisy copies.
        lbd: :math:`\lambda`, the weight of the KL term.
        eta: :math:`\eta`, the weight of the entropy term.

    Returns:
        The scalar regularizer.

    References:
        Jeong and Shin, "Consistency Regularization for Certified Robustness of Smoothed
        Classifiers", NeurIPS 2020 (code: jh-jeong/smoothing-consistency, ``consistency.py``).
    """
    if logits.ndim != 3:
        raise ValueError(f"logits must have shape [N, m, C], got {list(logits.shape)}")
    softmax = F.softmax(logits, dim=2)
    mean = softmax.mean(dim=1)
    kl = F.kl_div(F.log_softmax(logits, dim=2), mean[:, None].expand_as(softmax), reduction="none")
    kl = kl.sum(dim=2).mean(dim=1)
    entropy = -(mean * torch.log(mean.clamp(min=1e-20))).sum(dim=1)
    return (lbd * kl + eta * entropy).mean()


class Consistency(_NoiseObjective):
    r"""Consistency regularization for smoothed classifiers (Jeong and Shin).

    .. math:: \mathcal{L} = \frac{1}{m}\sum_j \mathrm{CE}(f(x + \varepsilon_j), y)
              + \frac{1}{N}\sum_i \Big[\lambda\, \frac{1}{m} \sum_j
              \mathrm{KL}(\hat p \,\|\, p_j) + \eta\, H(\hat p)\Big]

    on ``m = samples`` noisy copies of each input (see :func:`~advkit.training.consistency_loss`), as in the
    authors' ``train_consistency.py`` (Gaussian base, without their optional SmoothAdv inner
    attack). As there, a batch of ``N`` inputs makes ``N * m`` rows: the authors split a batch
    of ``B`` into ``m`` mini-batches of ``B / m``; pass batches of ``B / m`` to match.

    Args:
        sigma: The noise level, > 0.
        samples: ``m``, noise samples per input, >= 2 (the paper's default is 2).
        lbd: :math:`\lambda`, >= 0 (10 or 20 in the paper).
        eta: :math:`\eta`, >= 0 (0.5 in the paper).
        bounds: The box ``(lo, hi)`` inputs live in.
        generator: Source of the noise, on the training device; if ``None``, the Trainer's
            ``generator`` or, without one, the global RNG. An objective's own generator is
            used even when the Trainer has one.

    Metrics: ``noisy_accuracy``, ``clean_loss`` (the CE term) and ``consistency`` (the
    regularizer).

    References:
        Jeong and Shin, "Consistency Regularization for Certified Robustness of Smoothed
        Classifiers", NeurIPS 2020 (code: jh-jeong/smoothing-consistency,
        ``code/train_consistency.py``).

    Example:
        >>> Consistency(sigma=0.25, samples=2, lbd=10.0).metric_names
        ('noisy_accuracy', 'clean_loss', 'consistency')
    """

    def __init__(
        self,
        *,
        sigma: float,
        samples: int = 2,
        lbd: float = 10.0,
        eta: float = 0.5,
        bounds: tuple[float, float] = (0.0, 1.0),
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(sigma, samples, bounds, generator)
        check_int(samples, "samples", minimum=2)
        self.lbd = check_real(lbd, "lbd", low=0)
        self.eta = check_real(eta, "eta", low=0)

    @property
    def metric_names(self) -> tuple[str, ...]:
        """``noisy_accuracy``, ``clean_loss``, ``consistency``."""
        return ("noisy_accuracy", "clean_loss", "consistency")

    def __call__(
        self, model: TrainingModel, inputs: Tensor, labels: Tensor, eps_scale: float
    ) -> ObjectiveOutput:
        """Mean CE on the noisy copies plus the consistency regularizer."""
        self.check(inputs, labels)
        noisy = (inputs[:, None] + self.noise(inputs, model.generator)).flatten(0, 1)
        logits = model(noisy)
        repeated = labels.repeat_interleave(self.samples)  # row i * m + j: input i
        clean_loss = F.cross_entropy(logits, repeated)
        regularizer = consistency_loss(
            logits.view(inputs.shape[0], self.samples, -1), self.lbd, self.eta
        )
        return ObjectiveOutput(
            clean_loss + regularizer,
            {
                "noisy_accuracy": accuracy(logits, repeated),
                "clean_loss": clean_loss.detach(),
                "consistency": regularizer.detach(),
            },
        )
