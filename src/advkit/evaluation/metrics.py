"""Accuracy with its binomial confidence interval, and clean accuracy over a loader."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from torch import nn

from advkit._checks import check_confidence, check_int, check_model, check_real
from advkit.evaluation._runtime import check_same_total, field_of
from advkit.evaluation.loop import EvaluationLoop

__all__ = ["AccuracyEstimate", "accuracy", "wilson_interval"]


def wilson_interval(successes: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    r"""Wilson score interval for a binomial proportion.

    With :math:`\hat p = k / n` and :math:`z` the two-sided normal quantile,

    .. math::
        \frac{\hat p + \frac{z^2}{2n} \pm z \sqrt{\frac{\hat p (1 - \hat p)}{n}
        + \frac{z^2}{4n^2}}}{1 + \frac{z^2}{n}}

    Unlike the normal (Wald) interval it stays inside ``[0, 1]`` and is not degenerate at
    0% or 100%, the common values of robust accuracy.

    Args:
        successes: Number of successes ``k``, ``0 <= k <= n``.
        total: Number of trials ``n >= 1``.
        confidence: Coverage of the interval, in ``(0, 1)``.

    Returns:
        The pair ``(low, high)``.

    Raises:
        TypeError: If the counts are not integers.
        ValueError: If ``total < 1``, ``successes`` is outside ``[0, total]``, or ``confidence``
            is outside ``(0, 1)``.

    References:
        Wilson, "Probable Inference, the Law of Succession, and Statistical Inference",
        JASA 1927; Newcombe, "Two-sided confidence intervals for the single proportion",
        Statistics in Medicine 1998.

    Example:
        >>> from advkit.evaluation import wilson_interval
        >>> low, high = wilson_interval(81, 263)
        >>> round(low, 4), round(high, 4)
        (0.2553, 0.3662)
    """
    check_int(successes, "successes")
    check_int(total, "total", minimum=1)
    if not 0 <= successes <= total:
        raise ValueError(f"successes must be in [0, total={total}], got {successes}")
    z = NormalDist().inv_cdf(0.5 + check_confidence(confidence) / 2)
    p, z2 = successes / total, z * z
    denominator = 1 + z2 / total
    center = (p + z2 / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total)) / denominator
    # At k = 0 (k = n) the exact lower (upper) bound is 0 (1); rounding would miss it.
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == total else min(1.0, center + half)
    return low, high


@dataclass(frozen=True)
class AccuracyEstimate:
    """An accuracy measured on a finite sample: ``correct`` of ``total``, with its interval.

    ``float(estimate)`` is the accuracy; ``interval`` the Wilson score interval at
    ``confidence``.

    Attributes:
        correct: Number of correctly classified (or robust) samples.
        total: Number of samples evaluated.
        confidence: Coverage of :attr:`interval`.
    """

    correct: int
    total: int
    confidence: float = 0.95

    def __post_init__(self) -> None:
        wilson_interval(self.correct, self.total, self.confidence)  # validates all three

    @property
    def value(self) -> float:
        """The accuracy ``correct / total``."""
        return self.correct / self.total

    @property
    def interval(self) -> tuple[float, float]:
        """Wilson score interval ``(low, high)``."""
        return wilson_interval(self.correct, self.total, self.confidence)

    def __float__(self) -> float:
        return self.value

    def format(self, ci: bool = True) -> str:
        """Percentages, e.g. ``"91.4 [88.2, 93.8]"``, or just ``"91.4"`` without ``ci``."""
        if not ci:
            return f"{100 * self.value:.1f}"
        low, high = self.interval
        return f"{100 * self.value:.1f} [{100 * low:.1f}, {100 * high:.1f}]"

    def __str__(self) -> str:
        return f"{self.format()} % (n={self.total})"

    def to_dict(self) -> dict[str, Any]:
        """Counts and confidence, plus the derived value and interval for readers of the JSON."""
        low, high = self.interval
        return {
            "correct": self.correct,
            "total": self.total,
            "confidence": self.confidence,
            "value": self.value,
            "low": low,
            "high": high,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AccuracyEstimate:
        """Inverse of :meth:`to_dict` (the derived fields are recomputed, not read).

        Raises:
            TypeError: If ``data`` is not a dict or a field has the wrong type (no coercion:
                ``7.9``, ``"7"`` or ``true`` is not a count).
            ValueError: If a field is missing or out of range (``correct > total``).
        """
        kind = "AccuracyEstimate"
        return cls(
            check_int(field_of(data, "correct", kind), "correct", minimum=0),
            check_int(field_of(data, "total", kind), "total", minimum=1),
            check_real(field_of(data, "confidence", kind), "confidence"),
        )


def check_cell(cell: Any, clean: AccuracyEstimate, where: str, of: str = "clean") -> None:
    """Check a robust accuracy: an estimate over the clean samples, at most the clean count.

    Raises:
        TypeError: If ``cell`` is no :class:`AccuracyEstimate`.
        ValueError: If it counts other samples or more of them correct than ``clean``.
    """
    if not isinstance(cell, AccuracyEstimate):
        raise TypeError(f"{where} must be an AccuracyEstimate")
    check_same_total(cell, clean, where)
    if cell.correct > clean.correct:
        raise ValueError(
            f"{where}: robust accuracy cannot exceed {of} accuracy: "
            f"{cell.correct} > {clean.correct} of {clean.total}"
        )


def estimates(counts: Any, total: int, confidence: float) -> Any:
    """An :class:`AccuracyEstimate` per count of ``counts``, nested lists becoming tuples."""
    if isinstance(counts, list | tuple):
        return tuple(estimates(count, total, confidence) for count in counts)
    return AccuracyEstimate(counts, total, confidence)


def accuracy(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    progress: bool = True,
    confidence: float = 0.95,
    distributed: bool | None = None,
) -> AccuracyEstimate:
    """Clean top-1 accuracy of ``model`` over ``loader``, in eval mode.

    The model runs in eval mode and gets its training flags back afterwards; batches are
    moved to the model's device. Under ``torchrun`` every process evaluates its share of the
    loader and returns the accuracy on the whole of it (see
    :mod:`advkit.evaluation.distributed`).

    Args:
        model: A classifier returning ``[N, C]`` logits.
        loader: Iterable of ``(inputs, labels)`` batches, e.g. a ``DataLoader``.
        progress: Show a progress bar.
        confidence: Coverage of the reported interval.
        distributed: Shard the loader among the ``torchrun`` processes: ``None`` when several
            run, ``False`` never, ``True`` always (see :mod:`advkit.evaluation.distributed`).

    Returns:
        The accuracy with its Wilson interval.

    Raises:
        TypeError: If ``model`` is not a module or the loader yields something else than
            ``(inputs, labels)`` tensor pairs.
        ValueError: If the loader is empty or a batch is malformed, or the processes under
            ``torchrun`` were called differently.
        RuntimeError: Under ``torchrun``, if another process failed or did not start the
            evaluation.

    Example:
        >>> import torch
        >>> from advkit.evaluation import accuracy
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> x = torch.rand(6, 4)
        >>> estimate = accuracy(model, [(x, model(x).argmax(1))], progress=False)
        >>> estimate.correct, estimate.total
        (6, 6)
    """
    check_model(model)
    check_confidence(confidence)
    with EvaluationLoop(
        loader,
        [model],
        call="accuracy()",
        distributed=distributed,
        progress=progress,
        description="accuracy",
    ) as loop:
        for _ in loop:
            pass
    totals = loop.totals()
    return AccuracyEstimate(totals.clean[0], totals.total, confidence)
