"""Checkpoints that cannot get worse: keyed callback states, the best tracker rebuilt on resume,
no silent overwrite of another run's last.pt, and pruned models that reload from a fresh one."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from training_helpers import loader, quiet_trainer, split_blobs

from advkit.pruning import Pruner, count_parameters, load_pruned
from advkit.training import Callback, EarlyStopping, Trainer, load_checkpoint, load_weights
from conftest import tiny_model


def _loaders() -> tuple[Any, Any]:
    train_set, val_set = split_blobs(16, 8)
    return loader(train_set, batch_size=8), loader(val_set, batch_size=8)


def _scripted(trainer: Trainer, accuracies: Iterator[float]) -> Trainer:
    """Validation that reports the given robust accuracies, one per epoch."""

    def evaluate(data: Any, attack: Any = None) -> dict[str, float]:
        return {"loss": 1.0, "accuracy": 0.5, "robust_accuracy": next(accuracies), "samples": 8}

    trainer.evaluate = evaluate  # type: ignore[method-assign]
    return trainer


class _Counter(Callback):
    """A stateful callback of the user's."""

    def __init__(self) -> None:
        self.epochs = 0

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: Any) -> None:
        self.epochs += 1

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs}

    def load_state_dict(self, state: Any) -> None:
        self.epochs = int(state["epochs"])


def test_best_checkpoint_never_gets_worse_after_resuming_with_other_callbacks(
    tmp_path: Path,
) -> None:
    """The issue's run: best 0.10 at epoch 1, resumed with another callback list, then 0.06."""
    first = _scripted(
        quiet_trainer(
            tiny_model(),
            checkpoint_dir=tmp_path,
            best_metric="val_robust_accuracy",
            callbacks=[EarlyStopping("val_loss", patience=9)],
        ),
        iter([0.10, 0.08]),
    )
    first.fit(*_loaders(), epochs=2)
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 1

    resumed = _scripted(
        quiet_trainer(tiny_model(), checkpoint_dir=tmp_path, best_metric="val_robust_accuracy"),
        iter([0.06, 0.12]),
    )
    with pytest.warns(UserWarning, match="callback states are matched by state_key"):
        resumed.fit(*_loaders(), epochs=3, resume_from=tmp_path / "last.pt")
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 1  # 0.06 did not replace 0.10
    resumed.fit(*_loaders(), epochs=4)
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 4  # 0.12 did


def test_callback_states_follow_their_state_key_not_their_position(tmp_path: Path) -> None:
    counter, stopper = _Counter(), EarlyStopping("val_loss", patience=9)
    quiet_trainer(tiny_model(), checkpoint_dir=tmp_path, callbacks=[counter, stopper]).fit(
        *_loaders(), epochs=2
    )
    # Reordered, and with a new callback first: every saved state still finds its owner.
    again = [EarlyStopping("val_accuracy", patience=9), EarlyStopping("val_loss", patience=9)]
    again.append(_Counter())
    trainer = quiet_trainer(tiny_model(), callbacks=again)
    with pytest.warns(UserWarning) as record:
        trainer.load(tmp_path / "last.pt")
    assert again[2].epochs == 2
    assert (again[1].best, again[1].wait) == (stopper.best, stopper.wait)
    assert again[0].best == float("-inf")  # new: starts fresh, and the warning says so
    (warning,) = record
    assert "EarlyStopping{'monitor': 'val_accuracy', 'mode': 'max'}" in str(warning.message)
    assert warning.filename == __file__  # it points at the user's line, not into advkit


def test_repeated_state_keys_are_kept_apart_by_their_order(tmp_path: Path) -> None:
    counters = [_Counter(), _Counter()]
    trainer = quiet_trainer(tiny_model(), checkpoint_dir=tmp_path, callbacks=counters)
    trainer.fit(*_loaders(), epochs=1)
    counters[1].epochs = 7
    trainer.save(tmp_path / "manual.pt")
    assert sorted(load_checkpoint(tmp_path / "manual.pt")["callbacks"]) == [
        "_Counter",
        "_Counter#2",
    ]
    fresh = [_Counter(), _Counter()]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet_trainer(tiny_model(), callbacks=fresh).load(tmp_path / "manual.pt")
    assert [c.epochs for c in fresh] == [1, 7]


def test_a_new_run_does_not_overwrite_the_last_checkpoint_of_another(tmp_path: Path) -> None:
    quiet_trainer(tiny_model(), checkpoint_dir=tmp_path).fit(*_loaders(), epochs=3)
    before = (tmp_path / "last.pt").read_bytes()
    shorter = quiet_trainer(tiny_model(), checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"last\.pt' already exists.*resume_from='auto'"):
        shorter.fit(*_loaders(), epochs=1)
    assert (tmp_path / "last.pt").read_bytes() == before and shorter.epoch == 0

    # "auto" continues the run that is there ...
    history = quiet_trainer(tiny_model(), checkpoint_dir=tmp_path).fit(
        *_loaders(), epochs=4, resume_from="auto"
    )
    assert [record["epoch"] for record in history] == [1, 2, 3, 4]
    # ... and starts afresh where there is none.
    fresh = quiet_trainer(tiny_model(), checkpoint_dir=tmp_path / "new")
    assert len(fresh.fit(*_loaders(), epochs=1, resume_from="auto")) == 1
    # A trainer continuing its own run in the same process is not refused.
    assert len(fresh.fit(*_loaders(), epochs=2)) == 2
    with pytest.raises(ValueError, match="resume_from='auto' needs a checkpoint_dir"):
        quiet_trainer(tiny_model()).fit(*_loaders(), epochs=1, resume_from="auto")


def _pruned_and_trained(folder: Path) -> Trainer:
    model = tiny_model()
    example = torch.rand(2, 3, 8, 8)
    pruner = Pruner(ratio=0.5, targets=["0", "3"])
    pruned = pruner.apply(model, pruner.plan(model, example))
    trainer = quiet_trainer(pruned, checkpoint_dir=folder, best_metric="val_loss")
    trainer.fit(*_loaders(), epochs=2)
    return trainer


def test_a_pruned_models_checkpoint_loads_into_a_fresh_model(tmp_path: Path) -> None:
    trainer = _pruned_and_trained(tmp_path)
    inputs = torch.rand(4, 3, 8, 8)
    expected = trainer.model.eval()(inputs)

    fresh = tiny_model(seed=1)
    assert load_weights(fresh, tmp_path / "last.pt") is fresh
    assert fresh[0].out_channels == 4 and count_parameters(fresh) == count_parameters(trainer.model)
    assert torch.equal(fresh.eval()(inputs), expected)

    copy = load_pruned(tmp_path / "last.pt", tiny_model(seed=1))
    assert torch.equal(copy.eval()(inputs), expected)
    best = load_pruned(tmp_path / "best.pt", tiny_model())
    assert best[3].out_channels == 4


def test_loading_a_pruned_checkpoint_into_another_architecture_changes_nothing(
    tmp_path: Path,
) -> None:
    _pruned_and_trained(tmp_path)
    other = tiny_model()
    other[0] = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)  # same layers, no bias
    before = {name: tensor.clone() for name, tensor in other.state_dict().items()}
    with pytest.raises(ValueError, match="different architecture"):
        load_weights(other, tmp_path / "last.pt")
    assert all(torch.equal(other.state_dict()[name], t) for name, t in before.items())
    # Resuming needs the pruned model itself: the error names the ways to rebuild it.
    with pytest.raises(ValueError, match=r"load_weights\(model, path\).*load_pruned"):
        quiet_trainer(tiny_model()).load(tmp_path / "last.pt")
