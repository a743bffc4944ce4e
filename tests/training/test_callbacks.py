"""Callbacks: hook order, stopping, early stopping and best-checkpoint selection."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from torch import Tensor
from training_helpers import loader, one_thread, quiet_trainer, split_blobs, weights  # noqa: F401

from advkit.training import BestCheckpoint, Callback, EarlyStopping, History, Trainer, load_weights
from conftest import tiny_model


class _Recorder(Callback):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_fit_start(self, trainer: Trainer) -> None:
        self.calls.append("fit_start")

    def on_fit_end(self, trainer: Trainer) -> None:
        self.calls.append("fit_end")

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        self.calls.append(f"epoch_start {epoch}")

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: Mapping[str, float]) -> None:
        self.calls.append(f"epoch_end {epoch} {sorted(metrics)}")

    def on_batch_start(
        self, trainer: Trainer, batch_index: int, batch: tuple[Tensor, Tensor]
    ) -> None:
        self.calls.append(f"batch_start {batch_index} {list(batch[0].shape)}")

    def on_batch_end(self, trainer: Trainer, batch_index: int, loss: Tensor) -> None:
        assert loss.ndim == 0 and not loss.requires_grad
        self.calls.append(f"batch_end {batch_index}")

    def on_validation_end(self, trainer: Trainer, epoch: int, metrics: Mapping[str, float]) -> None:
        self.calls.append(f"validation_end {epoch} {sorted(metrics)}")


@pytest.fixture(scope="module")
def data() -> tuple:
    train_set, val_set = split_blobs(32, 16)
    return loader(train_set, batch_size=16), loader(val_set, batch_size=16)


def test_hooks_run_in_order_with_the_epoch_metrics(data: tuple) -> None:
    recorder = _Recorder()
    quiet_trainer(tiny_model(), callbacks=[recorder]).fit(*data, epochs=2)
    val = ["val_accuracy", "val_loss"]
    record = sorted(["epoch", "lr", "train_accuracy", "train_loss", *val])
    per_epoch = [
        [
            f"epoch_start {e}",
            "batch_start 0 [16, 3, 8, 8]",
            "batch_end 0",
            "batch_start 1 [16, 3, 8, 8]",
            "batch_end 1",
            f"validation_end {e} {val}",
            f"epoch_end {e} {record}",
        ]
        for e in range(2)
    ]
    assert recorder.calls == ["fit_start", *per_epoch[0], *per_epoch[1], "fit_end"]


def test_the_base_callback_does_nothing(data: tuple) -> None:
    trainer = quiet_trainer(tiny_model(), callbacks=[Callback()])
    assert len(trainer.fit(*data, epochs=1)) == 1
    assert Callback().state_dict() == {}


class _StopAfter(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: Mapping[str, float]) -> None:
        if epoch == self.epoch:
            trainer.should_stop = True


def test_a_callback_stops_training_after_the_epoch(data: tuple, tmp_path: Path) -> None:
    trainer = quiet_trainer(tiny_model(), callbacks=[_StopAfter(1)], checkpoint_dir=tmp_path)
    history = trainer.fit(*data, epochs=10)
    assert len(history) == 2 and trainer.epoch == 2
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 2
    # A later fit starts afresh: should_stop is reset.
    assert len(trainer.fit(*data, epochs=3)) == 3


def test_early_stopping_counts_epochs_without_improvement(data: tuple) -> None:
    # lr = 0 and no BatchNorm: the validation loss never changes, only epoch 1 improves it.
    stopper = EarlyStopping("val_loss", patience=2)
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    trainer = quiet_trainer(linear, lambda p: torch.optim.SGD(p, lr=0.0), callbacks=[stopper])
    history = trainer.fit(*data, epochs=10)
    assert len(history) == 3
    assert stopper.stopped_epoch == 2 and stopper.wait == 2
    assert stopper.best == history["val_loss"][0]


@pytest.mark.parametrize(("min_delta", "stop_epoch"), [(0.0, 3), (0.6, 3), (1.5, 2)])
def test_early_stopping_on_a_given_sequence(min_delta: float, stop_epoch: int) -> None:
    trainer = quiet_trainer(tiny_model())
    stopper = EarlyStopping("val_loss", patience=2, min_delta=min_delta)
    for epoch, value in enumerate([3.0, 2.0, 2.5, 2.0, 1.0]):
        stopper.on_epoch_end(trainer, epoch, {"val_loss": value})
        if trainer.should_stop:
            break
    assert stopper.stopped_epoch == stop_epoch


def test_early_stopping_waits_while_the_metric_improves(data: tuple) -> None:
    stopper = EarlyStopping("train_loss", patience=1)
    history = quiet_trainer(tiny_model(), callbacks=[stopper]).fit(*data, epochs=4)
    losses = history["train_loss"]
    assert all(later < earlier for earlier, later in itertools.pairwise(losses))
    assert len(history) == 4 and stopper.stopped_epoch is None


def test_best_checkpoint_keeps_the_weights_of_the_best_epoch(data: tuple, tmp_path: Path) -> None:
    snapshots: list[dict[str, Tensor]] = []

    class Snapshot(Callback):
        def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: Mapping[str, float]) -> None:
            snapshots.append(weights(trainer.model))

    trainer = quiet_trainer(
        tiny_model(),
        lambda p: torch.optim.SGD(p, lr=0.5),  # large steps: the metric goes up and down
        callbacks=[Snapshot()],
        checkpoint_dir=tmp_path,
        best_metric="val_loss",
    )
    history = trainer.fit(*data, epochs=5)
    best = history.best("val_loss")
    selector = trainer.callbacks[-1]
    assert isinstance(selector, BestCheckpoint)
    assert selector.best_epoch == best["epoch"] and selector.best == best["val_loss"]
    restored = load_weights(tiny_model(seed=3), tmp_path / "best.pt")
    for name, tensor in snapshots[best["epoch"] - 1].items():
        assert torch.equal(restored.state_dict()[name], tensor), name
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == best["epoch"]


def test_monitoring_an_absent_metric_is_a_clear_error(data: tuple, tmp_path: Path) -> None:
    trainer = quiet_trainer(
        tiny_model(), checkpoint_dir=tmp_path, best_metric="val_robust_accuracy"
    )
    with pytest.raises(ValueError, match=r"'val_robust_accuracy' is not among.*val_attack"):
        trainer.fit(*data, epochs=1)
    with pytest.raises(ValueError, match=r"'val_loss' is not among.*val_loader"):
        quiet_trainer(tiny_model(), callbacks=[EarlyStopping()]).fit(data[0], epochs=1)


def test_callback_options_are_checked() -> None:
    with pytest.raises(ValueError, match="patience must be >= 1, got 0"):
        EarlyStopping(patience=0)
    with pytest.raises(ValueError, match="mode must be 'min' or 'max', got 'up'"):
        EarlyStopping(mode="up")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"min_delta must be finite and >= 0, got -1\.0"):
        EarlyStopping(min_delta=-1.0)
    with pytest.raises(TypeError, match="monitor must be a metric name"):
        BestCheckpoint("best.pt", monitor="")
    with pytest.raises(TypeError, match="callbacks must be Callback objects, got function"):
        quiet_trainer(tiny_model(), callbacks=[lambda trainer: None])


def test_history_lookup_and_best() -> None:
    history = History([{"epoch": 1, "val_loss": 2.0, "val_accuracy": 0.5}])
    history.append({"epoch": 2, "val_loss": 1.0})
    history.append({"epoch": 3, "val_loss": 1.0, "val_accuracy": 0.5})
    assert history.metrics == ["epoch", "val_loss", "val_accuracy"]
    assert history["val_accuracy"][0] == 0.5 and math.isnan(history["val_accuracy"][1])
    assert history.best("val_loss")["epoch"] == 2  # earliest of the ties, minimized
    assert history.best("val_accuracy")["epoch"] == 1
    assert history.best("val_loss", mode="max")["epoch"] == 1
    assert History.from_state_dict(history.state_dict()).epochs == history.epochs
    with pytest.raises(KeyError, match="no metric 'val_robust_accuracy'"):
        history["val_robust_accuracy"]


class _ClipGradients(Callback):
    """Clips the gradient norm before every step and records what it saw."""

    def __init__(self, max_norm: float) -> None:
        self.max_norm = max_norm
        self.norms: list[float] = []

    def on_before_optimizer_step(self, trainer: Trainer) -> None:
        params = [p for p in trainer.model.parameters() if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, self.max_norm)
        self.norms.append(
            torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])).item()
        )


def test_a_callback_sees_and_changes_the_gradients_before_the_step(data: tuple) -> None:
    clipper = _ClipGradients(max_norm=1e-3)
    model = tiny_model()
    start = weights(model)
    trainer = quiet_trainer(model, lambda p: torch.optim.SGD(p, lr=1.0), callbacks=[clipper])
    trainer.fit(data[0], epochs=1)
    assert len(clipper.norms) == 2 and max(clipper.norms) <= 1e-3 * (1 + 1e-4)
    # Plain SGD with lr 1 moves the parameters by at most the clipped norm in total.
    moved = torch.stack(
        [
            (model.state_dict()[name] - tensor).norm()
            for name, tensor in start.items()
            if "running" not in name and "num_batches" not in name
        ]
    )
    assert torch.linalg.vector_norm(moved).item() <= 2 * 1e-3 * (1 + 1e-4)
