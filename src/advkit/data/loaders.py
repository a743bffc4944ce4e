"""Train/validation data loaders with a seeded, repeatable shuffling order."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from advkit._checks import check_int

__all__ = ["make_loaders"]


def make_loaders(
    train: Dataset[Any],
    val: Dataset[Any],
    *,
    batch_size: int = 64,
    seed: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
    drop_last: bool = False,
    persistent_workers: bool = False,
) -> tuple[DataLoader[tuple[Tensor, Tensor]], DataLoader[tuple[Tensor, Tensor]]]:
    """Wrap a train and a validation set in data loaders.

    The training loader reshuffles every epoch from its own generator seeded with ``seed``, so
    the sequence of epochs is the same in every run, and never touches the global RNG to
    order samples. Worker processes get their torch RNG seeded from that generator too, which
    makes random flips repeatable when ``num_workers > 0``; with ``num_workers=0`` the flips
    draw from the global RNG (seed it with :func:`torch.manual_seed`). The validation loader
    keeps the data set's order and never drops a batch.

    Args:
        train: The training set (any map-style data set, e.g. :class:`Animals10` or
            :class:`SyntheticAnimals10`).
        val: The validation set.
        batch_size: Items per batch, >= 1.
        seed: Seeds the shuffling generator.
        num_workers: Worker processes per loader, >= 0.
        pin_memory: Pin batches in page-locked memory (faster copies to a GPU).
        drop_last: Drop the last, smaller training batch.
        persistent_workers: Keep the workers alive between epochs (needs ``num_workers > 0``).

    Returns:
        ``(train_loader, val_loader)``.

    Raises:
        ValueError: If ``batch_size < 1``, ``num_workers < 0``, or ``persistent_workers``
            without workers.
        TypeError: If a count or the seed is not an int.
    """
    check_int(batch_size, "batch_size", minimum=1)
    check_int(num_workers, "num_workers", minimum=0)
    check_int(seed, "seed")
    if persistent_workers and num_workers == 0:
        raise ValueError("persistent_workers=True needs num_workers > 0, got num_workers=0")
    common: dict[str, Any] = {
        "batch_size": batch_size,
        "num_workers": num_workers,
        "pin_memory": pin_memory,
        "persistent_workers": persistent_workers,
    }
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(
        train, shuffle=True, generator=generator, drop_last=drop_last, **common
    )
    val_loader = DataLoader(val, shuffle=False, drop_last=False, **common)
    return train_loader, val_loader
