"""Running sums of per-sample metrics, kept on the device and read once at the end."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from advkit._process import ProcessContext

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
        # Samples behind each name: a name may be missing from some batches (add_some).
        self.counts = [0] * len(self.names)

    def add(self, count: int, values: Sequence[Tensor]) -> None:
        """Add one batch's totals (float32 scalars, in the order of ``names``) of ``count`` samples."""
        self.totals += torch.stack(values)
        self.count += count
        self.counts = [c + count for c in self.counts]

    def add_some(self, count: int, values: Mapping[str, Tensor]) -> None:
        """Add the totals of the names in ``values`` (a subset of ``names``) for ``count`` samples.

        Each name's mean is then over the samples of the batches that reported it.
        """
        index = [self.names.index(name) for name in values]
        if len(index) == len(self.names):
            self.add(count, [values[name] for name in self.names])
            return
        self.totals[index] += torch.stack(list(values.values()))
        self.count += count
        for i in index:
            self.counts[i] += count

    def mean(self, name: str) -> float:
        """The running mean of one quantity over this process's samples (syncs the device)."""
        index = self.names.index(name)
        return float(self.totals[index].item()) / max(self.counts[index], 1)

    def means(self, context: ProcessContext) -> tuple[dict[str, float], int]:
        """Global means of every quantity some batch reported, and the global sample count."""
        counts = torch.tensor(
            [float(c) for c in self.counts] + [float(self.count)],
            dtype=torch.float64,
            device=self.totals.device,
        )
        reduced = context.all_reduce_sum(torch.cat([self.totals, counts])).tolist()
        size = len(self.names)
        total = int(reduced[-1])
        # A name that no batch reported is left out; with no samples at all every mean is NaN.
        means = {
            name: value / count if count else float("nan")
            for name, value, count in zip(
                self.names, reduced[:size], reduced[size : 2 * size], strict=True
            )
            if count or not total
        }
        return means, total
