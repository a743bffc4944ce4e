"""Running sums of per-sample metrics, kept on the device and read once at the end."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from advkit.training.distributed import ProcessContext

__all__ = ["RunningSums"]


class RunningSums:
    """Sums of named per-batch totals (e.g. correct predictions) and the number of samples.

    Adding a batch queues one small kernel and never waits for the device; the sample count
    is a host integer. :meth:`means` sums over processes first, so a distributed mean is the
    global one (sum of totals over sum of counts), not a mean of per-process means.

    Args:
        names: One name per summed quantity.
        device: Where the sums live (the device of the values added).
    """

    def __init__(self, names: Sequence[str], device: torch.device) -> None:
        self.names = tuple(names)
        self.totals = torch.zeros(len(self.names), dtype=torch.float64, device=device)
        self.count = 0

    def add(self, count: int, values: Sequence[Tensor]) -> None:
        """Add one batch's totals (float32 scalars, in the order of ``names``) of ``count`` samples."""
        self.totals += torch.stack(values)
        self.count += count

    def mean(self, name: str) -> float:
        """The running mean of one quantity over this process's samples (syncs the device)."""
        return float(self.totals[self.names.index(name)].item()) / max(self.count, 1)

    def means(self, context: ProcessContext) -> tuple[dict[str, float], int]:
        """Global means of every quantity and the global sample count."""
        count = torch.tensor([float(self.count)], dtype=torch.float64, device=self.totals.device)
        reduced = context.all_reduce_sum(torch.cat([self.totals, count])).tolist()
        total = int(reduced[-1])
        means = {
            name: value / total if total else float("nan")
            for name, value in zip(self.names, reduced[:-1], strict=True)
        }
        return means, total
