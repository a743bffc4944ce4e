"""Checkpoints: atomic writes, weights_only loading, RNG states, clear errors on mismatch."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import loader, one_thread, quiet_trainer, split_blobs  # noqa: F401

import advkit.training.checkpoint as checkpoint_module
from advkit.training import load_checkpoint, load_weights, save_checkpoint
from advkit.training.checkpoint import CHECKPOINT_FORMAT, capture_rng_state, restore_rng_state
from conftest import tiny_model


@pytest.fixture
def trained(tmp_path: Path):
    train_set, _ = split_blobs(64, 0)
    trainer = quiet_trainer(
        tiny_model(),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1),
        checkpoint_dir=tmp_path,
    )
    trainer.fit(loader(train_set, batch_size=16, shuffle=True), epochs=2)
    return trainer


def test_checkpoint_holds_the_full_state_and_loads_weights_only(trained, tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    raw = torch.load(path, weights_only=True)  # plain torch, no allow-listing needed
    assert raw["format"] == CHECKPOINT_FORMAT
    assert raw["epoch"] == 2 and raw["global_step"] == 8
    for name, tensor in trained.model.state_dict().items():
        assert torch.equal(raw["model"][name], tensor), name
    assert raw["optimizer"]["state"]  # momentum buffers
    assert raw["scheduler"]["last_epoch"] == 2
    assert [record["epoch"] for record in raw["history"]["epochs"]] == [1, 2]
    assert set(raw["rng"][0]) >= {"torch", "numpy", "python"}
    assert len(raw["loader_rng"]["train_loader"]) == 1  # the shuffling generator
    fresh = load_weights(tiny_model(seed=1), path)
    for name, tensor in trained.model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name


def _partial_then_fail(real_save):
    def broken_save(obj, file, *args, **kwargs):
        real_save(obj, file, *args, **kwargs)
        file.seek(0)
        file.truncate(file.tell() + 100)  # half-written: only the first bytes made it
        raise OSError("disk full")

    return broken_save


@pytest.mark.parametrize("failure", ["torch.save", "fsync", "replace"])
def test_interrupted_write_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "epoch": 1}, path)
    good = path.read_bytes()

    if failure == "torch.save":
        monkeypatch.setattr(torch, "save", _partial_then_fail(torch.save))
    elif failure == "fsync":
        monkeypatch.setattr(checkpoint_module.os, "fsync", _raise(OSError("I/O error")))
    else:
        monkeypatch.setattr(checkpoint_module.os, "replace", _raise(KeyboardInterrupt()))
    with pytest.raises((OSError, KeyboardInterrupt)):
        save_checkpoint({"model": {"w": torch.zeros(3)}, "epoch": 2}, path)
    monkeypatch.undo()

    assert path.read_bytes() == good
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]  # no temporary file left behind


def _raise(error: BaseException):
    def fail(*args, **kwargs):
        raise error

    return fail


def test_rng_states_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.standard_normal()  # a cached Gaussian is part of NumPy's state
    save_checkpoint({"rng": capture_rng_state()}, tmp_path / "rng.pt")
    first = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])

    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    again = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])
    assert torch.equal(first[0], again[0])
    assert np.array_equal(first[1], again[1])
    assert first[2] == again[2]


def test_checkpoint_from_another_architecture_is_refused(trained, tmp_path: Path) -> None:
    other = quiet_trainer(tiny_model(channels=6))
    with pytest.raises(ValueError, match=r"different architecture.*different shapes"):
        other.load(tmp_path / "last.pt")
    train_set, _ = split_blobs(32, 0)
    with pytest.raises(ValueError, match="different architecture"):
        other.fit(loader(train_set), epochs=3, resume_from=tmp_path / "last.pt")
    with pytest.raises(ValueError, match=r"different architecture.*missing from the checkpoint"):
        load_weights(torch.nn.Sequential(tiny_model(), torch.nn.Linear(4, 2)), tmp_path / "last.pt")


def test_foreign_or_broken_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"model": {}}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not an advkit Trainer checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    save_checkpoint({"epoch": 1}, tmp_path / "good.pt")
    (tmp_path / "truncated.pt").write_bytes((tmp_path / "good.pt").read_bytes()[:200])
    with pytest.raises(ValueError, match="could not read checkpoint"):
        load_checkpoint(tmp_path / "truncated.pt")
    torch.save({"format": CHECKPOINT_FORMAT, "code": _Pickled()}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="weights_only"):
        load_checkpoint(tmp_path / "pickled.pt")


class _Pickled:
    """An arbitrary Python object: weights_only loading must refuse to rebuild it."""
