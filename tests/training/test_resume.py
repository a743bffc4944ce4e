"""Exact resume: N epochs in one go equal N/2 epochs, a fresh start, and N/2 more from the file."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor
from torch.utils.data import Dataset
from training_helpers import loader, one_thread  # noqa: F401

from advkit import PGD
from advkit.training import EarlyStopping, Trainer
from conftest import blob_images, tiny_model

EPOCHS = 4


class _AugmentedBlobs(Dataset):
    """Jitter drawn from the global torch, NumPy and Python RNGs: all three must be restored."""

    def __init__(self, n: int) -> None:
        self.images, self.labels = blob_images(n)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        jitter = 0.02 * (torch.rand(()) + float(np.random.rand()) + random.random())
        image = (self.images[index] * (1 - jitter) + jitter / 2).clamp(0, 1)
        return image, self.labels[index]


def _trainer(checkpoint_dir: Path | None = None) -> Trainer:
    """A fresh process's trainer: every piece of state comes from the constructor or the file."""
    return Trainer(
        tiny_model(seed=0),
        lambda params: torch.optim.SGD(params, lr=0.2, momentum=0.9, weight_decay=1e-4),
        attack=PGD(eps=8 / 255, steps=2),  # random starts from the global RNG
        adv_weight=0.5,
        eps_warmup_epochs=1.5,
        val_attack=PGD(eps=8 / 255, steps=2),
        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.8),
        callbacks=[EarlyStopping("val_loss", patience=10)],
        checkpoint_dir=checkpoint_dir,
        device="cpu",
        progress=False,
    )


def _loaders() -> tuple:
    return (
        loader(_AugmentedBlobs(64), batch_size=16, shuffle=True, seed=7),
        loader(_AugmentedBlobs(32), batch_size=16, shuffle=True, seed=8),
    )


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def test_resumed_training_is_identical_to_uninterrupted(tmp_path: Path) -> None:
    _seed_everything(0)
    straight = _trainer()
    history = straight.fit(*_loaders(), epochs=EPOCHS)
    straight_rng = _global_rng()

    _seed_everything(0)
    first_half = _trainer(tmp_path)
    first_half.fit(*_loaders(), epochs=EPOCHS // 2)

    _seed_everything(12345)  # a new process: different global random states
    resumed = _trainer(tmp_path)
    resumed_history = resumed.fit(*_loaders(), epochs=EPOCHS, resume_from=tmp_path / "last.pt")

    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], tensor), name
    assert resumed_history.epochs == history.epochs
    assert resumed.epoch == EPOCHS and resumed.global_step == straight.global_step
    assert resumed.scheduler.state_dict() == straight.scheduler.state_dict()
    stopper, straight_stopper = resumed.callbacks[0], straight.callbacks[0]
    assert (stopper.best, stopper.wait) == (straight_stopper.best, straight_stopper.wait)
    moments = resumed.optimizer.state_dict()["state"]
    for key, state in straight.optimizer.state_dict()["state"].items():
        assert torch.equal(moments[key]["momentum_buffer"], state["momentum_buffer"])
    # And the global random streams end where the uninterrupted run's do.
    assert _global_rng() == straight_rng


def _global_rng() -> tuple:
    return (
        torch.get_rng_state().tolist(),
        np.random.get_state()[1].tolist(),
        random.getstate(),
    )


def test_without_restored_random_states_the_runs_differ(tmp_path: Path) -> None:
    """The control: restoring weights alone is not enough, so the test above is not vacuous."""
    _seed_everything(0)
    straight = _trainer()
    straight.fit(*_loaders(), epochs=EPOCHS)

    _seed_everything(0)
    _trainer(tmp_path).fit(*_loaders(), epochs=EPOCHS // 2)
    _seed_everything(12345)
    resumed = _trainer()
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    resumed.model.load_state_dict(state["model"])
    resumed.optimizer.load_state_dict(state["optimizer"])
    resumed.scheduler.load_state_dict(state["scheduler"])
    resumed.epoch = state["epoch"]
    resumed.fit(*_loaders(), epochs=EPOCHS)
    differs = any(
        not torch.equal(resumed.model.state_dict()[name], tensor)
        for name, tensor in straight.model.state_dict().items()
    )
    assert differs


@pytest.mark.parametrize("epochs_done", [1, 3])
def test_resume_with_nothing_left_warns(tmp_path: Path, epochs_done: int) -> None:
    _trainer(tmp_path).fit(*_loaders(), epochs=epochs_done)
    with pytest.warns(UserWarning, match="nothing to do"):
        history = _trainer().fit(*_loaders(), epochs=1, resume_from=tmp_path / "last.pt")
    assert len(history) == epochs_done
