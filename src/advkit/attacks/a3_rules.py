"""The rules of Adaptive Auto Attack (A3) that APGD takes as options, each on its own.

- **Online statistics-based discarding** (OSD, :func:`keep_highest`): before each run after
  the first, only the still-robust samples whose highest margin so far (:func:`margin_loss`, over
  every point visited) ranks in the top share are attacked; the rest, the ones furthest from
  the boundary, are skipped for that run. A sample is never counted fooled by it: discarding
  can only keep a sample robust that a run would have fooled, never the reverse.
- **Adaptive direction initialization** (ADI, :func:`adi_weights`): a run starts with a few
  steps of full radius (``ball.step(x, grad, ball.eps)``) along the gradient of ``w . f(x)``,
  a random weighting ``w`` of the logits (Output Diversified Initialization), biased towards
  the run's target class and away from or towards the label by the statistics of the samples
  the earlier, unbiased steps fooled (:class:`DirectionStats`).

Both follow the authors' code (``liuye6666/adaptive_auto_attack``,
``Adaptive_Auto_Attack_main.py``); the deviations are in each function's docstring.

References:
    Liu et al., "Practical Evaluation of Adversarial Robustness via
    Adaptive Auto Attack", CVPR 2022. Tashiro, Song and Ermon, "Diversity can be Transferred:
    Output Diversification for White- and Black-box Attacks", NeurIPS 2020 (ODI).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from advkit._checks import check_bool_tensor, check_int, check_real
from advkit.attacks.losses import check_logits_and_labels

__all__ = [
    "ADI_TARGET_WEIGHT",
    "DirectionStats",
    "adi_weights",
    "keep_highest",
    "margin_loss",
]

ADI_TARGET_WEIGHT = 0.8
"""The weight of the target class in a biased direction, times ``C / 10`` (the authors')."""


def margin_loss(logits: Tensor, labels: Tensor) -> Tensor:
    r"""The margin loss of A3, per sample: :math:`\max_{j \ne y} z_j - z_y`.

    Positive exactly when the sample is misclassified (ties aside); OSD ranks samples by its
    highest value over the points visited.

    Args:
        logits: ``[N, C]`` logits.
        labels: ``[N]`` labels.

    Returns:
        ``[N]`` margins.

    Raises:
        ValueError: If ``logits`` is not ``[N, C]`` with ``C >= 2`` or ``labels`` not ``[N]``.
    """
    check_logits_and_labels(logits, labels, 2, "margin_loss")
    own = logits.gather(1, labels[:, None])
    others = logits.scatter(1, labels[:, None], -math.inf)
    return (others.amax(dim=1, keepdim=True) - own).squeeze(1)


def keep_highest(candidates: Tensor, scores: Tensor, share: float) -> Tensor:
    """OSD: the ``ceil(share * n)`` of the ``n`` ``candidates`` of highest score.

    The authors keep at least 100 samples of the whole data set; here the rule runs per
    attacked batch, so the floor is one sample (a batch may hold fewer than 100).

    Args:
        candidates: ``[N]`` bool, the samples that could be attacked (still robust).
        scores: ``[N]`` the highest margin of each sample so far.
        share: The share kept, in ``(0, 1]``.

    Returns:
        ``[N]`` bool, a subset of ``candidates``; all of them when ``share`` is 1.

    Raises:
        TypeError: If ``candidates`` is not a bool tensor or ``share`` not a number.
        ValueError: If the shapes are not one ``[N]`` or ``share`` is outside ``(0, 1]``.
    """
    share = check_real(share, "share", low=0.0, high=1.0, open_low=True)
    check_bool_tensor(candidates, "candidates")
    if candidates.ndim != 1 or scores.shape != candidates.shape:
        raise ValueError(
            "candidates and scores must both have shape [N], got "
            f"{list(candidates.shape)} and {list(scores.shape)}"
        )
    count = int(candidates.sum())
    kept = min(count, max(1, math.ceil(share * count)))
    if kept == count:
        return candidates
    ranked = torch.where(candidates, scores, -math.inf).topk(kept).indices
    return torch.zeros_like(candidates).index_fill_(0, ranked, True)


@dataclass
class DirectionStats:
    """What the unbiased ADI steps of one call learned: over the samples they fooled, the
    summed weight ``w`` gave the class each was misclassified as, and its label.

    A positive first sum says pushing towards the eventual wrong class helped; the second's
    sign says whether pulling the label's logit up (positive) or down helped (the authors'
    ``wrong_logits_direct`` and ``correct_logits_direct``).
    """

    toward_fooling: float = 0.0
    toward_label: float = 0.0
    fooled: int = 0

    def update(self, weights: Tensor, labels: Tensor, predicted: Tensor, fooled: Tensor) -> None:
        """Add the samples of the ``fooled`` mask, given their ``weights`` ``[N, C]``."""
        if not bool(fooled.any()):
            return
        rows = weights[fooled]
        self.toward_fooling += float(rows.gather(1, predicted[fooled][:, None]).sum())
        self.toward_label += float(rows.gather(1, labels[fooled][:, None]).sum())
        self.fooled += int(fooled.sum())


def adi_weights(
    labels: Tensor,
    targets: Tensor | None,
    num_classes: int,
    stats: DirectionStats | None,
    generator: torch.Generator | None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The logit weighting ``w`` ``[N, C]`` of one run's ADI steps.

    Every entry is drawn uniform in ``[-1, 1]`` (ODI). Without ``stats`` (the first run, the
    one that gathers them) that is all. Otherwise, as the authors' biased initialization, with
    ``s = C / 10``: the target's entry is set to ``0.8 s`` if pushing towards the wrong class
    helped the fooled samples so far (``toward_fooling >= 0``), else to ``-0.8 s``; the
    label's entry is drawn from ``s * U(-0.1, 0.5)`` if pulling the label up helped
    (``toward_label > 0``), else from ``s * U(-0.5, 0.1)``. Deviation: the authors draw the
    label's entry once per batch; here per sample, from the same interval.

    Args:
        labels: ``[N]`` true labels.
        targets: ``[N]`` the run's target classes (required with ``stats``).
        num_classes: ``C``.
        stats: What the unbiased steps learned, or ``None`` for unbiased weights.
        generator: The attack's generator.
        dtype: The weights' dtype.

    Returns:
        ``[N, C]`` weights on the labels' device.

    Raises:
        TypeError: If ``num_classes`` is not an int.
        ValueError: If ``num_classes < 2``, ``labels`` is not ``[N]``, ``targets`` is missing
            with ``stats`` or not shaped like ``labels``.
    """
    check_int(num_classes, "num_classes", minimum=2)
    if labels.ndim != 1:
        raise ValueError(f"labels must have shape [N], got {list(labels.shape)}")
    shape = (labels.shape[0], num_classes)
    device = labels.device
    uniform = torch.rand(shape, generator=generator, device=device, dtype=dtype) * 2 - 1
    if stats is None:
        return uniform
    if targets is None:
        raise ValueError("biased ADI weights need the run's target classes")
    if targets.shape != labels.shape:
        raise ValueError(
            f"targets must have the labels' shape {list(labels.shape)}, got {list(targets.shape)}"
        )
    scale = num_classes / 10
    toward = ADI_TARGET_WEIGHT if stats.toward_fooling >= 0 else -ADI_TARGET_WEIGHT
    low, high = (-0.1, 0.5) if stats.toward_label > 0 else (-0.5, 0.1)
    draw = torch.rand((labels.shape[0],), generator=generator, device=device, dtype=dtype)
    weights = uniform.scatter(1, labels[:, None], (scale * (low + (high - low) * draw))[:, None])
    return weights.scatter(1, targets[:, None], scale * toward)
