"""Slice one layer: keep some output, pass-through or input channels of a registered layer.

Each function replaces the layer's parameters with new, smaller ``nn.Parameter`` objects (same
``requires_grad``) and its buffers with smaller tensors, and updates the size attributes
(``out_channels``, ``num_features``, ...), so the layer stays an ordinary module. Which layer
types can be sliced, and how, is decided by their :class:`~advkit.pruning.LayerHandler` (see
:func:`~advkit.pruning.register_layer`). Check a layer with :func:`check_layer` before slicing:
the slicing functions assume it fits.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils import prune as torch_prune

from advkit.pruning._plan_fields import MAX_WIDTH
from advkit.pruning.channels import Role
from advkit.pruning.registry import _sliced, find_handler

__all__ = ["check_layer", "layer_shape", "resize_layer", "slice_layer"]


def layer_size(module: nn.Module, role: Role) -> int | str:
    """Channel positions of ``module`` in ``role``, or a sentence saying why it has none."""
    kind = type(module).__name__
    if torch_prune.is_pruned(module) or parametrize.is_parametrized(module):
        return f"{kind} carries a pruning mask or parametrization; remove it first"
    handler = find_handler(module)
    if handler is None:
        return f"{kind} has no registered LayerHandler"
    problem = handler.problem(module, role)
    return problem if problem is not None else handler.size(module, role)


def check_layer(module: nn.Module, role: Role, channels: int, expansion: int = 1) -> str | None:
    """Why ``module`` cannot have ``channels`` channels sliced in ``role``, or ``None`` if it can.

    Args:
        module: The layer.
        role: ``"out"`` (a conv's or linear's filters), ``"through"`` (a BatchNorm, LayerNorm,
            depthwise or grouped conv) or ``"in"`` (a conv's input channels or a linear's
            input features).
        channels: The group's channel count the layer must have in that role.
        expansion: Input features per channel, for a linear layer after a flatten.

    Returns:
        ``None`` if the layer fits, else a sentence saying what is wrong.
    """
    size = layer_size(module, role)
    if isinstance(size, str):
        return size
    if size != channels * expansion:
        return (
            f"{type(module).__name__} has {size} where {channels * expansion} were expected "
            f"in role {role!r}"
        )
    return None


def _feature_index(keep: Tensor, expansion: int) -> Tensor:
    """Channel ``c`` of a flattened map is features ``c*e .. c*e + e - 1``."""
    offsets = torch.arange(expansion, device=keep.device)
    return (keep[:, None] * expansion + offsets).reshape(-1)


@torch.no_grad()
def slice_layer(module: nn.Module, role: Role, keep: Tensor, expansion: int = 1) -> None:
    """Keep only the channels ``keep`` (sorted indices) of ``module`` in ``role``, in place.

    Args:
        module: A layer that :func:`check_layer` accepted.
        role: ``"out"``, ``"through"`` or ``"in"``.
        keep: 1-D integer tensor of channel indices to keep, increasing.
        expansion: Input features per channel, for a linear layer after a flatten.

    Raises:
        TypeError: If no registered handler can slice the layer in ``role``.
    """
    handler = find_handler(module)
    if handler is None or handler.problem(module, role) is not None:
        raise TypeError(f"cannot slice {type(module).__name__} as {role!r}")
    keep = keep.to(device=_device_of(module), dtype=torch.long)
    if expansion != 1:
        keep = _feature_index(keep, expansion)
    handler.slice(module, role, keep)


@torch.no_grad()
def slice_parameter(model: nn.Module, name: str, dim: int, keep: Tensor) -> None:
    """Keep only the entries ``keep`` of parameter (or buffer) ``name`` along ``dim``."""
    owner_name, _, attr = name.rpartition(".")
    owner = model.get_submodule(owner_name)
    old = getattr(owner, attr)
    setattr(owner, attr, _sliced(old, keep.to(old.device), dim))


def _device_of(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def layer_shape(module: nn.Module) -> dict[str, Any] | None:
    """The size attributes of a registered layer type, or ``None`` for other modules.

    Example:
        >>> layer_shape(nn.Conv2d(3, 8, 3))
        {'type': 'Conv2d', 'in_channels': 3, 'out_channels': 8, 'groups': 1}
    """
    handler = find_handler(module)
    if handler is None or getattr(module, "transposed", False):
        return None
    return {"type": type(module).__name__, **handler.shape(module)}


@torch.no_grad()
def resize_layer(module: nn.Module, shape: dict[str, Any]) -> None:
    """Give ``module`` the sizes in ``shape`` (from :func:`layer_shape`), with uninitialized values.

    Used to rebuild a pruned architecture before loading its state dict.

    Raises:
        ValueError: If ``shape`` is for another layer type or its sizes are invalid (below 1,
            or above ``2**24``: refused before anything is allocated).
    """
    current = layer_shape(module)
    handler = find_handler(module)
    if (
        current is None
        or handler is None
        or current.keys() != shape.keys()
        or current["type"] != shape["type"]
    ):
        raise ValueError(
            f"cannot give {type(module).__name__} the shape {shape}: expected keys "
            f"{sorted(current) if current else 'of a layer with a registered handler'}"
        )
    sizes = {key: value for key, value in shape.items() if key != "type"}
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sizes.values()):
        raise ValueError(f"layer sizes must be integers >= 1, got {shape}")
    if any(v > MAX_WIDTH for v in sizes.values()):
        shown = {k: (v if v < 10**18 else f"{v.bit_length()} bits") for k, v in sizes.items()}
        raise ValueError(f"layer sizes must be at most {MAX_WIDTH}, got {shown}")
    handler.resize(module, sizes)
