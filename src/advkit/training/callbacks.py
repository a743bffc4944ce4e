"""Callbacks: code that runs at fixed points of ``Trainer.fit`` without changing the loop.

Subclass :class:`Callback` and override the hooks you need; all of them do nothing by default.
A callback stops training by setting ``trainer.should_stop = True``: the current epoch finishes
(and is checkpointed) and ``fit`` returns. A callback with state that must survive a resume
implements :meth:`Callback.state_dict` and :meth:`Callback.load_state_dict`; checkpoints keep
each callback's state under its :attr:`Callback.state_key` (as Lightning does), so a resumed
run with more, fewer or reordered callbacks still gets every matching state back.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from advkit._checks import check_int, check_real
from advkit.training.history import Mode, infer_mode

if TYPE_CHECKING:
    from advkit.training.trainer import Trainer

__all__ = ["BestCheckpoint", "Callback", "EarlyStopping"]


class Callback:
    """Base class of Trainer callbacks; every hook is a no-op until overridden.

    Under DistributedDataParallel every process runs every hook, with the same (globally
    reduced) metrics, so decisions taken from metrics agree across processes.
    """

    @property
    def state_key(self) -> str:
        """The key of this callback's state in a checkpoint: by default the class's name.

        A callback of which several instances can run together includes what tells them apart
        (as :class:`EarlyStopping` includes its monitored metric). Callbacks that still share a
        key are told apart by their order among those sharing it.
        """
        return type(self).__qualname__

    def _generate_state_key(self, **settings: Any) -> str:
        """``ClassName{'setting': value, ...}``: a key naming the settings that identify it."""
        return f"{type(self).__qualname__}{settings!r}"

    def on_fit_start(self, trainer: Trainer) -> None:
        """Called once when ``fit`` starts, after loading the ``resume_from`` checkpoint."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """Called once when ``fit`` returns, normally or after ``should_stop``."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Called before the first batch of epoch ``epoch`` (0-based)."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: Mapping[str, float]) -> None:
        """Called after the epoch's validation, with the record just added to the history."""

    def on_batch_start(
        self, trainer: Trainer, batch_index: int, batch: tuple[Tensor, Tensor]
    ) -> None:
        """Called with the (inputs, labels) batch, already on the device, before its step."""

    def on_before_optimizer_step(self, trainer: Trainer) -> None:
        """Called after backward with the (unscaled) gradients, e.g. to clip them."""

    def on_batch_end(self, trainer: Trainer, batch_index: int, loss: Tensor) -> None:
        """Called after the optimizer step with the detached loss (reading it syncs the device)."""

    def on_validation_end(self, trainer: Trainer, epoch: int, metrics: Mapping[str, float]) -> None:
        """Called after validation with the ``val_*`` metrics of epoch ``epoch``."""

    def state_dict(self) -> dict[str, Any]:
        """State saved in checkpoints (tensors, numbers, strings and containers of them)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the state returned by :meth:`state_dict`."""


class _Monitor(Callback):
    """What :class:`EarlyStopping` and :class:`BestCheckpoint` share: the watched metric and
    its best value so far (NaN never counts as an improvement)."""

    def __init__(self, monitor: str, mode: Mode | None) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(f"monitor must be a metric name, got {monitor!r}")
        if mode is not None and mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        self.mode: Mode = infer_mode(monitor) if mode is None else mode
        self._min_delta = 0.0
        self._best = math.inf if self.mode == "min" else -math.inf

    def _improved(self, metrics: Mapping[str, float]) -> bool:
        """Whether the epoch's monitored value beats the best by more than the minimum delta;
        if so, it becomes the best."""
        if self.monitor not in metrics:
            raise ValueError(
                f"the monitored metric {self.monitor!r} is not among this epoch's metrics "
                f"{sorted(metrics)}; validation metrics need a val_loader (and robust ones a "
                "val_attack)"
            )
        value, delta = float(metrics[self.monitor]), self._min_delta
        better = value < self._best - delta if self.mode == "min" else value > self._best + delta
        if better:
            self._best = value
        return better


class EarlyStopping(_Monitor):
    """Stop training when a metric has not improved for ``patience`` epochs.

    Args:
        monitor: Metric of the epoch record to watch, e.g. ``"val_loss"`` or
            ``"val_robust_accuracy"``.
        patience: Epochs without improvement after which training stops, >= 1.
        mode: ``"min"`` or ``"max"``; by default ``"min"`` for losses, else ``"max"``.
        min_delta: How much better than the best so far a value must be to count.

    Raises:
        ValueError: On ``patience < 1``, ``min_delta < 0`` or an unknown mode; at the end of
            an epoch, if ``monitor`` is not among the metrics.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        *,
        patience: int = 3,
        mode: Mode | None = None,
        min_delta: float = 0.0,
    ) -> None:
        super().__init__(monitor, mode)
        check_int(patience, "patience", minimum=1)
        self._min_delta = check_real(min_delta, "min_delta", low=0)
        self.patience = patience
        self.wait = 0
        self.stopped_epoch: int | None = None

    @property
    def best(self) -> float:
        """The best value of the monitored metric so far."""
        return self._best

    @property
    def state_key(self) -> str:
        """``EarlyStopping{'monitor': ..., 'mode': ...}``."""
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: Mapping[str, float]) -> None:
        """Count epochs without improvement and stop the trainer after ``patience`` of them."""
        if self._improved(metrics):
            self.wait = 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        """Best value, epochs waited and the stopping epoch."""
        return {"best": self._best, "wait": self.wait, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the counters saved by :meth:`state_dict`."""
        self._best = float(state["best"])
        self.wait = int(state["wait"])
        self.stopped_epoch = state["stopped_epoch"]


class BestCheckpoint(_Monitor):
    """Write a full checkpoint each time a metric reaches a new best (e.g. robust accuracy).

    The file is written with :meth:`~advkit.training.Trainer.save` (atomically, by rank 0
    only); load its weights with :func:`advkit.training.load_weights`.

    Args:
        path: Checkpoint file to (over)write.
        monitor: Metric of the epoch record to watch, e.g. ``"val_robust_accuracy"``.
        mode: ``"min"`` or ``"max"``; by default ``"min"`` for losses, else ``"max"``.

    Attributes:
        best: The best value so far.
        best_epoch: The 1-based epoch that reached it, or ``None``.
    """

    def __init__(
        self, path: str | os.PathLike[str], monitor: str, *, mode: Mode | None = None
    ) -> None:
        self.path = Path(path)
        super().__init__(monitor, mode)
        self.best_epoch: int | None = None

    @property
    def best(self) -> float:
        """The best value of the monitored metric so far."""
        return self._best

    @property
    def state_key(self) -> str:
        """``BestCheckpoint{'monitor': ..., 'mode': ..., 'file': ...}``."""
        return self._generate_state_key(monitor=self.monitor, mode=self.mode, file=self.path.name)

    def replay(self, history: Sequence[Mapping[str, float]]) -> None:
        """Set the best value and epoch from the records of a history, as if it had run.

        Records without the monitored metric are passed over.
        """
        self._best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = None
        for index, record in enumerate(history):
            if self.monitor in record and self._improved(record):
                self.best_epoch = index + 1

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: Mapping[str, float]) -> None:
        """Save the trainer when the monitored metric improved."""
        if self._improved(metrics):
            self.best_epoch = epoch + 1
            trainer.save(self.path)

    def state_dict(self) -> dict[str, Any]:
        """Best value and its epoch."""
        return {"best": self._best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the values saved by :meth:`state_dict`."""
        self._best = float(state["best"])
        self.best_epoch = state["best_epoch"]
