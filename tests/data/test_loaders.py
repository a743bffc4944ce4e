"""Data loaders: seeded shuffling that repeats across runs, unshuffled validation, bad settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from animals10_tree import make_tree
from torch.utils.data import TensorDataset

from advkit.data import Animals10, animals10_loaders, make_loaders


def _numbered(n: int) -> TensorDataset:
    return TensorDataset(torch.arange(n), torch.arange(n) % 3)


def _epoch(loader: torch.utils.data.DataLoader) -> list[int]:  # type: ignore[type-arg]
    return [int(i) for batch, _ in loader for i in batch]


def test_training_order_is_seeded_and_validation_keeps_order() -> None:
    train, val = make_loaders(_numbered(50), _numbered(20), batch_size=8, seed=3)
    first, second = _epoch(train), _epoch(train)
    assert sorted(first) == sorted(second) == list(range(50))
    assert first != second  # a new order every epoch
    again, _ = make_loaders(_numbered(50), _numbered(20), batch_size=8, seed=3)
    assert [_epoch(again), _epoch(again)] == [first, second]  # the same sequence of epochs
    other, _ = make_loaders(_numbered(50), _numbered(20), batch_size=8, seed=4)
    assert _epoch(other) != first
    assert _epoch(val) == list(range(20))
    assert [len(b) for b, _ in val] == [8, 8, 4]


def test_shuffling_leaves_the_global_rng_alone() -> None:
    train, _ = make_loaders(_numbered(30), _numbered(5), batch_size=4, seed=0)
    state = torch.random.get_rng_state()
    _epoch(train)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_drop_last_applies_to_training_only() -> None:
    train, val = make_loaders(_numbered(10), _numbered(10), batch_size=4, drop_last=True)
    assert [len(b) for b, _ in train] == [4, 4]
    assert [len(b) for b, _ in val] == [4, 4, 2]


def test_animals10_loaders_give_study_batches(tmp_path: Path) -> None:
    make_tree(tmp_path / "raw-img")
    train, val = animals10_loaders(tmp_path, batch_size=16, image_size=10, progress=False)
    assert isinstance(train.dataset, Animals10) and train.dataset.split == "train"
    images, labels = next(iter(train))
    assert images.shape == (16, 3, 10, 10) and images.dtype == torch.float32
    assert labels.dtype == torch.int64
    assert sum(len(y) for _, y in train) == 50 and sum(len(y) for _, y in val) == 10
    assert [int(y) for _, batch in val for y in batch] == val.dataset.targets


def test_worker_flips_repeat_for_the_same_seed(tmp_path: Path) -> None:
    make_tree(tmp_path / "raw-img")

    def first_epoch() -> list[torch.Tensor]:
        train, _ = animals10_loaders(
            tmp_path, batch_size=25, image_size=8, num_workers=1, seed=5, progress=False
        )
        return [images for images, _ in train]

    assert all(torch.equal(a, b) for a, b in zip(first_epoch(), first_epoch(), strict=True))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1, got 0"),
        ({"batch_size": 2.5}, TypeError, "batch_size must be an int, got float"),
        ({"num_workers": -1}, ValueError, "num_workers must be >= 0, got -1"),
        ({"seed": "0"}, TypeError, "seed must be an int, got str"),
        ({"persistent_workers": True}, ValueError, "persistent_workers=True needs num_workers"),
    ],
)
def test_bad_settings_are_rejected(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        make_loaders(_numbered(4), _numbered(4), **kwargs)  # type: ignore[arg-type]
