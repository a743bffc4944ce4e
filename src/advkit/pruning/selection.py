"""Which channels go: per group at one ratio, or globally with normalized scores and a floor.

Per group, ``round(ratio * C)`` of a group's ``C`` channels go (never all). Globally, every
selected group's scores are normalized so that groups compete fairly, the lowest-scoring
channels of all groups go until ``round(ratio * total)`` are removed, and no group drops below
its floor. A group that runs through a grouped convolution loses as many channels from each of
its cells (see :class:`~advkit.pruning.ChannelGroup`), so every convolution group keeps the same
width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from advkit.pruning.channels import ChannelGroup

__all__ = ["Normalization", "global_removals", "keep_lowest_removed", "normalize_scores"]

Normalization = Literal["mean", "lamp"]
"""How scores are made comparable across groups: divided by the group's mean, or LAMP."""


def normalize_scores(scores: Tensor, method: Normalization) -> Tensor:
    """Make one group's scores comparable with other groups'.

    ``"mean"`` divides by the group's mean score. ``"lamp"`` gives each channel its squared
    score divided by the sum of the squared scores of every channel scoring at least as high,
    so the best channel of every group scores 1.

    References:
        Lee, Park, Mo, Ahn and Shin, "Layer-adaptive Sparsity for the Magnitude-based
        Pruning", ICLR 2021 (LAMP).

    Example:
        >>> normalize_scores(torch.tensor([1.0, 3.0]), "mean")
        tensor([0.5000, 1.5000], dtype=torch.float64)
        >>> normalize_scores(torch.tensor([1.0, 3.0]), "lamp")
        tensor([0.1000, 1.0000], dtype=torch.float64)

    Raises:
        ValueError: If a score is NaN or infinite (no normalization could rank it), or
            ``method`` is not a known name.
    """
    values = scores.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(values).all()):
        bad = values[~torch.isfinite(values)][0].item()
        raise ValueError(f"scores must be finite to normalize, got {bad} among {values.numel()}")
    if method == "mean":
        mean = values.mean()
        return values / mean if mean > 0 else torch.ones_like(values)
    if method == "lamp":
        squared = values**2
        order = torch.argsort(squared, descending=True, stable=True)
        tail = torch.cumsum(squared[order], 0)  # sum over channels scoring at least as high
        lamp = torch.empty_like(values)
        lamp[order] = squared[order] / tail.clamp_min(torch.finfo(torch.float64).tiny)
        return lamp
    raise ValueError(f"normalization must be 'mean' or 'lamp', got {method!r}")


def keep_lowest_removed(
    group: ChannelGroup, scores: Sequence[float], removed: int
) -> tuple[int, ...]:
    """The channels kept when ``removed`` of the lowest-scoring ones go (ties: higher index goes).

    With cells, ``removed`` is spread evenly: ``round(removed / cells)`` from each cell, and
    every cell keeps one channel at least.
    """
    cells = group.cells or (0,) * group.channels
    members: dict[int, list[int]] = {}
    for channel, cell in enumerate(cells):
        members.setdefault(cell, []).append(channel)
    per_cell = removed if len(members) == 1 else round(removed / len(members))
    keep: list[int] = []
    for channels in members.values():
        count = min(per_cell, len(channels) - 1)
        ranked = sorted(channels, key=lambda i: (-scores[i], i))
        keep += ranked[: len(channels) - count]
    return tuple(sorted(keep))


def global_removals(
    groups: Sequence[ChannelGroup], scores: Sequence[Tensor], ratio: float, floor: float
) -> list[int]:
    """How many channels each group loses when ``ratio`` of all their channels go globally.

    The lowest normalized scores go first; a group stops losing channels at its floor,
    ``max(1, ceil(floor * C))`` kept channels (for a group with cells, one per cell at least).
    """
    total = sum(group.channels for group in groups)
    target = round(ratio * total)
    floors = [
        max(1, math.ceil(floor * g.channels), len(set(g.cells)) if g.cells else 1) for g in groups
    ]
    candidates = sorted(
        (value, index, channel)
        for index, group_scores in enumerate(scores)
        for channel, value in enumerate(group_scores.tolist())
    )
    removed = [0] * len(groups)
    left = target
    for _, index, _ in candidates:
        if left == 0:
            break
        if groups[index].channels - removed[index] > floors[index]:
            removed[index] += 1
            left -= 1
    return removed
