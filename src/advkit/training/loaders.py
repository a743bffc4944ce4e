"""What the Trainer needs to know about data loaders: batches, samplers and their generators."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DistributedSampler

from advkit._process import samplers

__all__ = [
    "check_loader",
    "generator_states",
    "loader_generators",
    "loader_length",
    "restore_generators",
    "samplers",
    "warn_without_distributed_sampler",
]


def loader_length(loader: Iterable[Any]) -> int | None:
    """Number of batches, or ``None`` for a loader without ``len`` (an iterable data set)."""
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def check_loader(loader: Iterable[Any], name: str) -> None:
    """Reject what is not iterable and loaders known to be empty."""
    if not isinstance(loader, Iterable):
        raise TypeError(
            f"{name} must be an iterable of (inputs, labels), got {type(loader).__name__}"
        )
    if loader_length(loader) == 0:
        raise ValueError(f"{name} is empty (0 batches); check the dataset and drop_last")


def loader_generators(loader: Iterable[Any]) -> list[torch.Generator]:
    """Random generators a DataLoader draws from (its own, its samplers'), each once."""
    found: dict[int, torch.Generator] = {}
    for owner in (loader, *samplers(loader)):
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator):
            found.setdefault(id(generator), generator)
    return list(found.values())


def generator_states(loader: Iterable[Any]) -> list[Tensor]:
    """States of :func:`loader_generators`, for a checkpoint."""
    return [generator.get_state() for generator in loader_generators(loader)]


def restore_generators(loader: Iterable[Any], states: list[Tensor], name: str) -> None:
    """Set the generators of :func:`loader_generators` to ``states`` (warn if they differ)."""
    found = loader_generators(loader)
    if len(found) != len(states):
        warnings.warn(
            f"the checkpoint holds {len(states)} data-loader generator states but the "
            f"{name} has {len(found)}; its shuffling is not restored",
            stacklevel=3,
        )
        return
    for generator, state in zip(found, states, strict=True):
        generator.set_state(state)


def warn_without_distributed_sampler(loader: Iterable[Any], name: str) -> None:
    """Under DDP, a loader without a DistributedSampler gives every process all the data."""
    if not any(isinstance(s, DistributedSampler) for s in samplers(loader)):
        warnings.warn(
            f"{name} has no DistributedSampler: every process sees the whole data set. Use "
            "DataLoader(dataset, sampler=DistributedSampler(dataset), ...)",
            stacklevel=3,
        )
