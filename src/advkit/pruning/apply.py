"""From a plan to slices: the positions each layer keeps, checked before anything changes."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from advkit.pruning.functional import layer_size
from advkit.pruning.plan import PruningPlan
from advkit.pruning.registry import grouped_blocks

__all__ = ["plan_slices"]

SliceKey = tuple[str, str, int | None]
"""``(layer, role, None)`` for a layer; ``(parameter, "through", dim)`` for a parameter."""


def plan_slices(model: nn.Module, plan: PruningPlan) -> dict[SliceKey, Tensor]:
    """The positions every layer (or parameter) in ``plan`` keeps, in each role it is sliced.

    Raises:
        ValueError: If the plan does not fit ``model``: invalid indices, a layer the model
            lacks or cannot slice that way, positions beyond its size or claimed twice, a
            layer left without channels, or a grouped convolution whose groups would keep
            different widths.
    """
    removed: dict[SliceKey, set[int]] = {}
    claimed: dict[SliceKey, set[int]] = {}
    for group in plan.groups:
        keep, channels = group.keep, group.channels
        if not keep or list(keep) != sorted(set(keep)) or keep[0] < 0 or keep[-1] >= channels:
            raise ValueError(
                f"plan for {group.layers}: keep must be distinct increasing indices in "
                f"[0, {channels}), got {len(keep)} indices"
            )
        kept = set(keep)
        for use in group.uses:
            key: SliceKey = (use.module, use.role, None if _is_layer(model, use) else use.dim)
            taken = claimed.setdefault(key, set())
            gone = removed.setdefault(key, set())
            for k, unit in enumerate(use.units(channels)):
                if not 0 <= unit < channels:
                    raise ValueError(f"plan maps {use.module!r} to channel {unit} of {channels}")
                start = use.offset + k * use.expansion
                positions = range(start, start + use.expansion)
                if taken.intersection(positions):
                    raise ValueError(f"plan slices {use.module!r} as {use.role!r} twice")
                taken.update(positions)
                if unit not in kept:
                    gone.update(positions)
    slices: dict[SliceKey, Tensor] = {}
    for key, positions in claimed.items():
        name, role, dim = key
        size = _size(model, name, role, dim)
        if max(positions) >= size:
            kind = _kind(model, name)
            raise ValueError(
                f"plan does not fit layer {name!r}: {kind} has {size} channels as {role!r}, "
                f"the plan needs {max(positions) + 1}"
            )
        if not removed[key]:
            continue
        keep_positions = torch.tensor(
            [p for p in range(size) if p not in removed[key]], dtype=torch.long
        )
        if not len(keep_positions):
            raise ValueError(f"plan removes every channel of {name!r} as {role!r}")
        module = model.get_submodule(name) if dim is None else None
        if role == "through" and isinstance(module, nn.modules.conv._ConvNd):
            try:
                grouped_blocks(module.out_channels, module.groups, keep_positions)
            except ValueError as err:
                raise ValueError(f"plan does not fit layer {name!r}: {err}") from None
        slices[key] = keep_positions
    return slices


def _is_layer(model: nn.Module, use: Any) -> bool:
    try:
        model.get_submodule(use.module)
    except AttributeError:
        return not _has_tensor(model, use.module)
    return True


def _has_tensor(model: nn.Module, name: str) -> bool:
    owner, _, attr = name.rpartition(".")
    try:
        return isinstance(getattr(model.get_submodule(owner), attr, None), Tensor)
    except AttributeError:
        return False


def _size(model: nn.Module, name: str, role: str, dim: int | None) -> int:
    if dim is not None:
        owner, _, attr = name.rpartition(".")
        tensor = getattr(model.get_submodule(owner), attr)
        if dim >= tensor.ndim:
            raise ValueError(f"plan slices dim {dim} of {name!r}, which has {tensor.ndim} dims")
        return int(tensor.shape[dim])
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"plan names layer {name!r}, which the model lacks") from None
    size = layer_size(module, role)  # type: ignore[arg-type]
    if isinstance(size, str):
        raise ValueError(f"plan does not fit layer {name!r}: {size}")
    return size


def _kind(model: nn.Module, name: str) -> str:
    try:
        return type(model.get_submodule(name)).__name__
    except AttributeError:
        return "the tensor"
