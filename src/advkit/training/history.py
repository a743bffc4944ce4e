"""The per-epoch record of a training run."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

__all__ = ["History", "Mode", "infer_mode"]

Mode = Literal["min", "max"]


def infer_mode(metric: str) -> Mode:
    """``"min"`` for losses, ``"max"`` for everything else (accuracies)."""
    return "min" if "loss" in metric else "max"


class History:
    """Metrics of every finished epoch: one dict per epoch, and one list per metric.

    Each epoch's record holds ``"epoch"`` (1-based) and the metrics of that epoch, e.g.
    ``"train_loss"``, ``"train_accuracy"``, ``"train_adv_accuracy"``, ``"val_accuracy"``,
    ``"val_robust_accuracy"``, ``"lr"``.

    Args:
        epochs: Records to start from, oldest first.

    Example:
        >>> from advkit.training import History
        >>> history = History([{"epoch": 1, "val_accuracy": 0.5}])
        >>> history.append({"epoch": 2, "val_accuracy": 0.8})
        >>> history["val_accuracy"]
        [0.5, 0.8]
        >>> history.best("val_accuracy")["epoch"]
        2
    """

    def __init__(self, epochs: Iterable[Mapping[str, float]] = ()) -> None:
        self.epochs: list[dict[str, float]] = [dict(record) for record in epochs]

    def append(self, metrics: Mapping[str, float]) -> None:
        """Add the record of one more epoch."""
        self.epochs.append(dict(metrics))

    @property
    def metrics(self) -> list[str]:
        """Names of all recorded metrics, in first-seen order."""
        names: dict[str, None] = {}
        for record in self.epochs:
            names.update(dict.fromkeys(record))
        return list(names)

    @property
    def last(self) -> dict[str, float]:
        """The latest epoch's record (empty before the first epoch ends)."""
        return dict(self.epochs[-1]) if self.epochs else {}

    def __getitem__(self, metric: str) -> list[float]:
        """The values of ``metric``, one per epoch (NaN where an epoch did not record it)."""
        if metric not in self.metrics:
            raise KeyError(f"no metric {metric!r} in the history; recorded: {self.metrics}")
        return [record.get(metric, math.nan) for record in self.epochs]

    def best(self, metric: str, mode: Mode | None = None) -> dict[str, float]:
        """The record of the epoch where ``metric`` was best (earliest on ties).

        Args:
            metric: A recorded metric name.
            mode: ``"max"`` or ``"min"``; by default ``"min"`` for losses, else ``"max"``.

        Raises:
            KeyError: If ``metric`` was never recorded.
        """
        values = self[metric]
        mode = mode or infer_mode(metric)
        sign = 1.0 if mode == "max" else -1.0
        scored = [(sign * v, -i) for i, v in enumerate(values) if not math.isnan(v)]
        if not scored:
            raise KeyError(f"metric {metric!r} has no value in any epoch")
        return dict(self.epochs[-max(scored)[1]])

    def state_dict(self) -> dict[str, Any]:
        """A ``weights_only``-loadable copy, for checkpoints."""
        return {"epochs": [dict(record) for record in self.epochs]}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> History:
        """Rebuild a history saved with :meth:`state_dict`."""
        return cls(state["epochs"])

    def __len__(self) -> int:
        return len(self.epochs)

    def __iter__(self) -> Iterator[dict[str, float]]:
        return iter(self.epochs)

    def __repr__(self) -> str:
        return f"History(epochs={len(self)}, metrics={self.metrics})"
