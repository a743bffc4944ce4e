"""Issue 26: OverfittingGuard refuses a crafted checkpoint state and a held-out batch that
cannot run on the model, up front instead of after the first epoch. Each test failed before."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from training_helpers import loader, quiet_trainer, split_blobs

from advkit.attacks import PGD
from advkit.training import OverfittingGuard
from conftest import blob_images, tiny_model


def _guard() -> OverfittingGuard:
    return OverfittingGuard(*blob_images(8, seed=3), PGD(eps=1 / 255, steps=1))


def _saved() -> dict[str, Any]:
    return {"history": [[4, 0.75], [8, 0.25]], "collapsed_at": 8, "rolled_back": True, "good": None}


def test_a_genuine_state_loads() -> None:
    guard = _guard()
    guard.load_state_dict(_saved())
    assert guard.history == [(4, 0.75), (8, 0.25)] and guard.collapsed_at == 8
    assert guard.rolled_back


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"collapsed_at": "x"}, r"collapsed_at must be None or the step of one of its checks"),
        ({"collapsed_at": 5}, r"collapsed_at must be None or the step of one of its checks"),
        ({"collapsed_at": True}, r"collapsed_at must be None"),
        ({"rolled_back": "no"}, r"rolled_back must be a bool"),
        ({"collapsed_at": None}, r"rolled_back must be a bool, True only after a collapse"),
        ({"history": [[4, 1.5]]}, r"history\[0\] must be \[step, accuracy\]"),
        ({"history": [[8, 0.5], [4, 0.5]]}, r"history\[1\] must be \[step, accuracy\]"),
        ({"history": "x"}, r"history must be a list"),
        ({"good": {"model": "str"}}, r"good must be None or \{'model'"),
        ({"good": {"model": {"w": "not a tensor"}, "optimizer": {}}}, r"good must be None"),
    ],
)
def test_a_crafted_state_is_refused_and_changes_nothing(
    change: dict[str, Any], message: str
) -> None:
    guard = _guard()
    state = {**_saved(), **change}
    # Before: collapsed_at="x" loaded, and the guard believed training had collapsed.
    with pytest.raises(ValueError, match=message):
        guard.load_state_dict(state)
    assert guard.collapsed_at is None and guard.history == [] and not guard.rolled_back


def test_a_state_missing_an_entry_is_a_clear_error() -> None:
    state = _saved()
    del state["good"]
    with pytest.raises(ValueError, match=r"OverfittingGuard state lacks \['good'\]"):
        _guard().load_state_dict(state)  # before: KeyError: 'good'
    with pytest.raises(ValueError, match="OverfittingGuard state must be a mapping, got 'x'"):
        _guard().load_state_dict("x")  # type: ignore[arg-type]


def test_a_float64_held_out_batch_fails_before_the_first_epoch() -> None:
    images, labels = blob_images(8, seed=3)
    guard = OverfittingGuard(images.double(), labels, PGD(eps=1 / 255, steps=1))
    trainer = quiet_trainer(tiny_model(), callbacks=[guard])
    train, _ = split_blobs(16, 0)
    # Before: an obscure dtype error from the model, after a whole epoch of training.
    with pytest.raises(TypeError, match=r"inputs are torch\.float64 but the model's parameters"):
        trainer.fit(loader(train, batch_size=8), epochs=1)
    assert len(trainer.history) == 0


def test_held_out_batch_dtypes_are_checked_at_construction() -> None:
    images, labels = blob_images(8, seed=3)
    attack = PGD(eps=1 / 255, steps=1)
    with pytest.raises(
        TypeError, match=r"inputs must be a floating-point tensor, got torch\.uint8"
    ):
        OverfittingGuard((images * 255).to(torch.uint8), labels, attack)
    with pytest.raises(
        TypeError, match=r"labels must be integer class indices, got torch\.float32"
    ):
        OverfittingGuard(images, labels.float(), attack)
