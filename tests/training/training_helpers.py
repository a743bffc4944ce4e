"""Data and trainers shared by the training tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from advkit.training import Trainer
from conftest import blob_images


def split_blobs(n_train: int, n_val: int, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """Train and held-out blobs drawn from the same class patterns."""
    images, labels = blob_images(n_train + n_val, seed=seed)
    return (
        TensorDataset(images[:n_train], labels[:n_train]),
        TensorDataset(images[n_train:], labels[n_train:]),
    )


def loader(
    dataset: Any, *, batch_size: int = 32, shuffle: bool = False, seed: int = 0
) -> DataLoader:
    """A DataLoader whose shuffling comes from its own seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


def adam(lr: float = 0.02) -> Any:
    """An optimizer factory."""
    return lambda params: torch.optim.Adam(params, lr=lr)


def quiet_trainer(model: torch.nn.Module, optimizer: Any = None, **options: Any) -> Trainer:
    """A CPU trainer without progress bars."""
    return Trainer(model, optimizer or adam(), device="cpu", progress=False, **options)


def weights(model: torch.nn.Module) -> dict[str, Tensor]:
    """A detached copy of the model's state."""
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on shared cores they spin and wait."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
