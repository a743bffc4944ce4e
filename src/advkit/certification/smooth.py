"""The smoothed classifier of randomized smoothing: PREDICT, CERTIFY and its soft version."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advkit._checks import (
    check_bounds,
    check_generator,
    check_inputs,
    check_int,
    check_logits,
    check_model,
    check_real,
)
from advkit._guard import model_state
from advkit.certification.stats import binomial_pvalue, clopper_pearson_lower, normal_quantile

__all__ = ["ABSTAIN", "Certificate", "Smooth", "SmoothPrediction", "SoftSmooth"]

ABSTAIN = -1
"""The class a smoothed classifier answers when it abstains."""

PROBABILITY_TOL = 1e-5
"""Output rows within this of a probability distribution count as probabilities."""


@dataclass(frozen=True)
class SmoothPrediction:
    """What :meth:`Smooth.predict` found for a batch.

    Attributes:
        prediction: Per-input class ``[N]`` (int64), :data:`ABSTAIN` (-1) where the test
            could not separate the top two classes.
        pvalue: Per-input two-sided binomial p-value of the top two counts ``[N]`` (float64).
        counts: Per-input class counts of the base classifier under noise ``[N, C]`` (int64).
    """

    prediction: Tensor
    pvalue: Tensor
    counts: Tensor


@dataclass(frozen=True)
class Certificate:
    """What :meth:`Smooth.certify` found for a batch.

    Attributes:
        prediction: Per-input class ``[N]`` (int64), :data:`ABSTAIN` (-1) where the lower
            bound of the top class's probability is below 1/2.
        radius: Per-input certified L2 radius ``sigma * Phi^-1(pA)`` ``[N]`` (float64), 0 where
            the classifier abstains.
        lower_bound: Per-input one-sided Clopper-Pearson lower bound ``pA`` ``[N]`` (float64).
        selection_counts: The ``n0`` selection samples' class counts ``[N, C]`` (int64).
        counts: The ``n`` estimation samples' class counts ``[N, C]`` (int64).
    """

    prediction: Tensor
    radius: Tensor
    lower_bound: Tensor
    selection_counts: Tensor
    counts: Tensor


class Smooth:
    r"""The smoothed classifier :math:`g(x) = \arg\max_c P(f(x + \varepsilon) = c)`,
    :math:`\varepsilon \sim \mathcal{N}(0, \sigma^2 I)`, of a base classifier ``f``.

    :meth:`predict` is Cohen et al.'s PREDICT and :meth:`certify` their CERTIFY, on a batch of
    inputs at a time. The Monte Carlo samples of all the inputs of a batch are drawn as one
    stream of noisy rows cut into forward passes of ``batch_size`` rows, so that every pass is
    full (several inputs share a pass when ``n`` is small, an input spans several passes when
    it is large): certification runs at the model's forward floor at that batch size. The
    noise is not clipped to the bounds, as in the authors' code (the certificate is a property
    of ``g`` on all of :math:`\mathbb{R}^d`). The model runs in eval mode without gradients
    and gets its flags back afterwards.

    Args:
        model: The base classifier ``f``, returning ``[N, C]`` logits.
        sigma: The noise level, > 0.
        num_classes: ``C``; ``None`` to take it from the model's output.
        bounds: The box ``(lo, hi)`` clean inputs must lie in.

    Raises:
        TypeError: If ``model`` is not an ``nn.Module``.
        ValueError: If ``sigma <= 0`` or ``num_classes < 2``.

    References:
        Cohen, Rosenfeld and Kolter, "Certified Adversarial Robustness via Randomized
        Smoothing", ICML 2019 (code: locuslab/smoothing, ``code/core.py``).

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> smooth = Smooth(model, sigma=0.25)
        >>> g = torch.Generator().manual_seed(0)
        >>> out = smooth.certify(torch.rand(2, 4), n0=10, n=100, alpha=0.001, generator=g)
        >>> out.radius.shape
        torch.Size([2])
    """

    def __init__(
        self,
        model: nn.Module,
        sigma: float,
        num_classes: int | None = None,
        *,
        bounds: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        self.model = check_model(model)
        self.sigma = check_real(sigma, "sigma", low=0, open_low=True)
        if num_classes is not None:
            check_int(num_classes, "num_classes", minimum=2)
        self.num_classes = num_classes
        self.bounds = check_bounds(bounds)

    def __repr__(self) -> str:
        return f"Smooth(sigma={self.sigma!r}, num_classes={self.num_classes!r})"

    # -- the Monte Carlo counts ----------------------------------------------------------------

    def sample_counts(
        self,
        inputs: Tensor,
        samples: tuple[int, ...],
        *,
        batch_size: int = 1000,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Class counts of the base classifier on noisy copies of each input.

        For each input, ``sum(samples)`` noisy copies are classified; the first ``samples[0]``
        are counted in block 0, the next ``samples[1]`` in block 1, and so on (CERTIFY's
        selection and estimation samples are two blocks of one stream).

        Args:
            inputs: Clean inputs ``[N, ...]`` inside the bounds.
            samples: Samples per block, each >= 1.
            batch_size: Rows per forward pass, >= 1.
            generator: Source of the noise, on the inputs' device; the global RNG if ``None``.
                For a fixed ``batch_size`` a seeded generator gives the same counts.

        Returns:
            Counts ``[N, len(samples), C]`` (int64, on the inputs' device).

        Raises:
            ValueError: If an argument is out of range, the inputs lie outside the bounds, the
                model returns probabilities instead of logits, a wrong number of classes or
                non-finite logits.
        """
        check_inputs(inputs, self.bounds)
        for count in samples:
            check_int(count, "n", minimum=1)
        check_int(batch_size, "batch_size", minimum=1)
        check_generator(generator, inputs.device)
        per_input = sum(samples)
        starts = torch.tensor([0, *samples], device=inputs.device).cumsum(0)[:-1]
        total = inputs.shape[0] * per_input
        counts: Tensor | None = None
        classes = self.num_classes
        finite = torch.ones((), dtype=torch.bool, device=inputs.device)
        x = inputs.detach()
        with model_state(self.model, no_grad=True):
            for begin in range(0, total, batch_size):
                rows = torch.arange(begin, min(begin + batch_size, total), device=x.device)
                owner = rows // per_input
                # x + sigma * N(0, I) in one pass: the noise is the one cost beyond the model's
                noisy = torch.normal(x.index_select(0, owner), self.sigma, generator=generator)
                logits = self.model(noisy)
                if counts is None:
                    classes = self._check_first(logits, rows.shape[0])
                    counts = torch.zeros(
                        inputs.shape[0] * len(samples) * classes,
                        dtype=torch.long,
                        device=x.device,
                    )
                else:
                    check_logits(logits, rows.shape[0], None)
                if logits.shape[1] != classes:
                    raise ValueError(
                        f"the model returned {logits.shape[1]} classes, expected {classes}"
                    )
                finite &= torch.isfinite(logits).all()
                block = torch.bucketize(rows % per_input, starts, right=True) - 1
                key = (owner * len(samples) + block) * classes + logits.argmax(dim=1)
                counts.index_add_(0, key, torch.ones_like(key))
        assert counts is not None and classes is not None  # at least one pass runs
        if not bool(finite):
            raise ValueError(
                "the model returned non-finite logits (NaN or inf) on noisy inputs; check the "
                "weights for NaN"
            )
        return counts.view(inputs.shape[0], len(samples), classes)

    def _check_first(self, logits: Tensor, rows: int) -> int:
        """Check the first pass's logits: shape, classes, not probabilities; return ``C``."""
        check_logits(logits, rows, None)
        classes = logits.shape[1]
        if self.num_classes is not None and classes != self.num_classes:
            raise ValueError(
                f"the model returned {classes} classes, but num_classes={self.num_classes}"
            )
        if classes < 2:
            raise ValueError(f"the model must return >= 2 classes, got {classes}")
        probability = (logits >= 0).all() & ((logits.sum(dim=1) - 1).abs() <= PROBABILITY_TOL).all()
        if bool(probability):
            raise ValueError(
                "the model seems to return probabilities (every output row is >= 0 and sums "
                "to 1), not logits; return the logits (remove the final softmax)"
            )
        return classes

    # -- PREDICT and CERTIFY -------------------------------------------------------------------

    def predict(
        self,
        inputs: Tensor,
        n: int,
        alpha: float,
        *,
        batch_size: int = 1000,
        generator: torch.Generator | None = None,
    ) -> SmoothPrediction:
        """Cohen et al.'s PREDICT: the top class, or :data:`ABSTAIN`, for each input.

        With ``nA`` and ``nB`` the two largest of the ``n`` counts (ties: the lower class
        first), the top class is returned when the two-sided binomial test of
        ``nA`` of ``nA + nB`` against ``p = 1/2`` rejects at level ``alpha`` (p-value
        <= ``alpha``); otherwise the classifier abstains. The answer differs from ``g(x)``
        with probability at most ``alpha``.

        Args:
            inputs: Clean inputs ``[N, ...]`` inside the bounds.
            n: Monte Carlo samples per input, >= 1.
            alpha: The error probability, in ``(0, 1)``.
            batch_size: Rows per forward pass.
            generator: Source of the noise, on the inputs' device.

        Returns:
            Per-input predictions, p-values and counts.

        Raises:
            ValueError: If ``n < 1``, ``alpha`` is outside ``(0, 1)``, or the inputs or the
                model's outputs are invalid (see :meth:`sample_counts`).

        References:
            Cohen, Rosenfeld and Kolter, ICML 2019 (Algorithm PREDICT; ``Smooth.predict``).
        """
        check_int(n, "n", minimum=1)
        alpha = check_real(alpha, "alpha", low=0, high=1, open_low=True, open_high=True)
        counts = self.sample_counts(inputs, (n,), batch_size=batch_size, generator=generator)[:, 0]
        ordered = torch.sort(counts, dim=1, descending=True, stable=True)
        top = ordered.values[:, :2].cpu().tolist()
        first = ordered.indices[:, 0].cpu().tolist()
        pvalues = [binomial_pvalue(a, a + b) for a, b in top]
        prediction = [c if p <= alpha else ABSTAIN for c, p in zip(first, pvalues, strict=True)]
        return SmoothPrediction(
            prediction=torch.tensor(prediction, dtype=torch.long),
            pvalue=torch.tensor(pvalues, dtype=torch.float64),
            counts=counts.cpu(),
        )

    def certify(
        self,
        inputs: Tensor,
        n0: int,
        n: int,
        alpha: float,
        *,
        batch_size: int = 1000,
        generator: torch.Generator | None = None,
    ) -> Certificate:
        r"""Cohen et al.'s CERTIFY: a class and a certified L2 radius for each input.

        The class :math:`\hat c_A` is the most frequent of ``n0`` selection samples (ties: the
        lower class); ``n`` fresh samples give its count :math:`n_A` and the one-sided
        Clopper-Pearson lower bound :math:`\underline{p_A}` at level ``alpha``. If
        :math:`\underline{p_A} < 1/2` the classifier abstains (radius 0); otherwise it returns
        :math:`\hat c_A` with radius :math:`\sigma\,\Phi^{-1}(\underline{p_A})`. With
        probability at least ``1 - alpha``, :math:`g(x + \delta) = \hat c_A` for every
        :math:`\|\delta\|_2 <` radius.

        Args:
            inputs: Clean inputs ``[N, ...]`` inside the bounds.
            n0: Selection samples per input, >= 1.
            n: Estimation samples per input, >= 1.
            alpha: The error probability, in ``(0, 1)``.
            batch_size: Rows per forward pass.
            generator: Source of the noise, on the inputs' device.

        Returns:
            Per-input classes, radii, lower bounds and both blocks of counts.

        Raises:
            ValueError: If ``n0`` or ``n`` is < 1, ``alpha`` is outside ``(0, 1)``, or the
                inputs or the model's outputs are invalid (see :meth:`sample_counts`).

        References:
            Cohen, Rosenfeld and Kolter, ICML 2019 (Algorithm CERTIFY, Theorem 1;
            ``Smooth.certify``).
        """
        check_int(n0, "n0", minimum=1)
        check_int(n, "n", minimum=1)
        alpha = check_real(alpha, "alpha", low=0, high=1, open_low=True, open_high=True)
        counts = self.sample_counts(inputs, (n0, n), batch_size=batch_size, generator=generator)
        counts = counts.cpu()
        selection, estimation = counts[:, 0], counts[:, 1]
        chosen = selection.argmax(dim=1)  # the first maximum: ties go to the lower class
        hits = estimation.gather(1, chosen[:, None])[:, 0].tolist()
        bounds = [clopper_pearson_lower(k, n, alpha) for k in hits]
        radii = [self.sigma * normal_quantile(p) if p >= 0.5 else 0.0 for p in bounds]
        abstain = torch.tensor([p < 0.5 for p in bounds], dtype=torch.bool)
        return Certificate(
            prediction=torch.where(abstain, ABSTAIN, chosen),
            radius=torch.tensor(radii, dtype=torch.float64).clamp_(min=0.0),
            lower_bound=torch.tensor(bounds, dtype=torch.float64),
            selection_counts=selection,
            counts=estimation,
        )


class SoftSmooth(nn.Module):
    r"""The soft smoothed classifier :math:`\log \frac{1}{m}\sum_{j=1}^m
    \mathrm{softmax}(f(x + \varepsilon_j))`, a module attacks can differentiate.

    Its outputs are log-probabilities (clamped at :math:`10^{-20}`, as in Salman et al.'s
    code), so the cross-entropy of an attack on them is the negative log-likelihood of the
    averaged softmax: the loss of Salman et al.'s attack on the smoothed classifier. The noise
    is either fixed (``noise``, the same for every forward pass, as in SmoothAdv training) or
    drawn afresh from ``generator`` at every forward pass.

    Args:
        model: The base classifier ``f``.
        sigma: The noise level, > 0.
        samples: ``m``, noise samples per input, >= 1.
        noise: Fixed noise ``[N, m, ...]`` (already scaled by ``sigma``) for batches of
            exactly ``N`` inputs, or ``None`` to draw fresh noise.
        generator: Source of fresh noise (ignored with ``noise``).

    References:
        Salman, Yang, Li, Zhang, Zhang, Razenshteyn and Bubeck, "Provably Robust Deep Learning
        via Adversarially Trained Smoothed Classifiers", NeurIPS 2019 (code:
        Hadisalman/smoothing-adversarial, ``code/attacks.py``, ``PGD_L2``).

    Example:
        >>> import torch
        >>> base = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> soft = SoftSmooth(base, sigma=0.25, samples=8)
        >>> soft(torch.rand(2, 4)).exp().sum(dim=1).round().detach()
        tensor([1., 1.])
    """

    def __init__(
        self,
        model: nn.Module,
        sigma: float,
        samples: int,
        *,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.model = check_model(model)
        self.sigma = check_real(sigma, "sigma", low=0, open_low=True)
        self.samples = check_int(samples, "samples", minimum=1)
        if noise is not None and (
            not isinstance(noise, Tensor) or noise.ndim < 3 or noise.shape[1] != samples
        ):
            shown = list(noise.shape) if isinstance(noise, Tensor) else type(noise).__name__
            raise ValueError(f"noise must have shape [N, m={samples}, ...], got {shown}")
        self.noise = noise
        self.generator = generator

    def forward(self, inputs: Tensor) -> Tensor:
        """Log of the mean softmax over the noise samples, ``[N, C]``."""
        m = self.samples
        if self.noise is not None:
            if self.noise.shape[0] != inputs.shape[0] or self.noise.shape[2:] != inputs.shape[1:]:
                raise ValueError(
                    f"the fixed noise has shape {list(self.noise.shape)}, which does not fit "
                    f"inputs of shape {list(inputs.shape)}"
                )
            noise = self.noise
        else:
            noise = torch.randn(
                (inputs.shape[0], m, *inputs.shape[1:]),
                generator=self.generator,
                device=inputs.device,
                dtype=inputs.dtype,
            ).mul_(self.sigma)
        noisy = (inputs[:, None] + noise).reshape(inputs.shape[0] * m, *inputs.shape[1:])
        logits = self.model(noisy)
        check_logits(logits, noisy.shape[0], None)
        mean = F.softmax(logits, dim=1).view(inputs.shape[0], m, -1).mean(dim=1)
        return torch.log(mean.clamp(min=1e-20))
