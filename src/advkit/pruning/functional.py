"""Slice one layer: keep some output, pass-through or input channels of a conv/bn/linear.

Each function replaces the layer's parameters with new, smaller ``nn.Parameter`` objects (same
``requires_grad``) and its buffers with smaller tensors, and updates the size attributes
(``out_channels``, ``num_features``, ...), so the layer stays an ordinary module. Check a layer
with :func:`check_layer` before slicing: the slicing functions assume it fits.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils import prune as torch_prune

from advkit.pruning.graph import Role

__all__ = ["check_layer", "layer_shape", "resize_layer", "slice_layer"]

_Conv = nn.modules.conv._ConvNd
_BatchNorm = nn.modules.batchnorm._BatchNorm


def _is_depthwise(conv: _Conv) -> bool:
    return conv.groups == conv.in_channels == conv.out_channels


def check_layer(module: nn.Module, role: Role, channels: int, expansion: int = 1) -> str | None:
    """Why ``module`` cannot have ``channels`` channels sliced in ``role``, or ``None`` if it can.

    Args:
        module: The layer.
        role: ``"out"`` (a conv's or linear's filters), ``"through"`` (a BatchNorm or depthwise
            conv) or ``"in"`` (a conv's input channels or a linear's input features).
        channels: The group's channel count the layer must have in that role.
        expansion: Input features per channel, for a linear layer after a flatten.

    Returns:
        ``None`` if the layer fits, else a sentence saying what is wrong.
    """
    kind = type(module).__name__
    if torch_prune.is_pruned(module) or parametrize.is_parametrized(module):
        return f"{kind} carries a pruning mask or parametrization; remove it first"
    if isinstance(module, _Conv) and not module.transposed:
        if role == "out" and module.groups == 1:
            size = module.out_channels
        elif role == "in" and module.groups == 1 and expansion == 1:
            size = module.in_channels
        elif role == "through" and _is_depthwise(module):
            size = module.out_channels
        else:
            return f"{kind} with groups={module.groups} cannot be sliced as {role!r}"
    elif isinstance(module, nn.Linear) and role in ("out", "in"):
        size = module.out_features if role == "out" else module.in_features
        channels *= expansion if role == "in" else 1
    elif isinstance(module, _BatchNorm) and role == "through":
        size = module.num_features
    else:
        return f"{kind} cannot be sliced as {role!r}"
    if size != channels:
        return f"{kind} has {size} where {channels} were expected in role {role!r}"
    return None


def _new_param(old: nn.Parameter, value: Tensor) -> nn.Parameter:
    return nn.Parameter(value.clone(), requires_grad=old.requires_grad)


def _feature_index(keep: Tensor, expansion: int) -> Tensor:
    """Channel ``c`` of a flattened map is features ``c*e .. c*e + e - 1``."""
    offsets = torch.arange(expansion, device=keep.device)
    return (keep[:, None] * expansion + offsets).reshape(-1)


@torch.no_grad()
def slice_layer(module: nn.Module, role: Role, keep: Tensor, expansion: int = 1) -> None:
    """Keep only the channels ``keep`` (sorted indices) of ``module`` in ``role``, in place.

    Args:
        module: A conv, linear or BatchNorm layer that :func:`check_layer` accepted.
        role: ``"out"``, ``"through"`` or ``"in"``.
        keep: 1-D integer tensor of channel indices to keep, increasing.
        expansion: Input features per channel, for a linear layer after a flatten.
    """
    keep = keep.to(device=_device_of(module), dtype=torch.long)
    if role in ("out", "through") and isinstance(module, _Conv | nn.Linear):
        module.weight = _new_param(module.weight, module.weight[keep])
        if module.bias is not None:
            module.bias = _new_param(module.bias, module.bias[keep])
        if isinstance(module, nn.Linear):
            module.out_features = len(keep)
        else:
            module.out_channels = len(keep)
            if role == "through":  # depthwise: one filter per channel
                module.in_channels = module.groups = len(keep)
    elif role == "in" and isinstance(module, _Conv):
        module.weight = _new_param(module.weight, module.weight[:, keep])
        module.in_channels = len(keep)
    elif role == "in" and isinstance(module, nn.Linear):
        module.weight = _new_param(module.weight, module.weight[:, _feature_index(keep, expansion)])
        module.in_features = len(keep) * expansion
    elif role == "through" and isinstance(module, _BatchNorm):
        if module.affine:
            module.weight = _new_param(module.weight, module.weight[keep])
            module.bias = _new_param(module.bias, module.bias[keep])
        if module.running_mean is not None and module.running_var is not None:
            module.running_mean = module.running_mean[keep].clone()
            module.running_var = module.running_var[keep].clone()
        module.num_features = len(keep)
    else:
        raise TypeError(f"cannot slice {type(module).__name__} as {role!r}")


def _device_of(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def layer_shape(module: nn.Module) -> dict[str, Any] | None:
    """The size attributes of a conv, linear or BatchNorm layer, or ``None`` for other modules.

    Example:
        >>> layer_shape(nn.Conv2d(3, 8, 3))
        {'type': 'Conv2d', 'in_channels': 3, 'out_channels': 8, 'groups': 1}
    """
    kind = type(module).__name__
    if isinstance(module, _Conv) and not module.transposed:
        return {
            "type": kind,
            "in_channels": module.in_channels,
            "out_channels": module.out_channels,
            "groups": module.groups,
        }
    if isinstance(module, nn.Linear):
        return {
            "type": kind,
            "in_features": module.in_features,
            "out_features": module.out_features,
        }
    if isinstance(module, _BatchNorm):
        return {"type": kind, "num_features": module.num_features}
    return None


def _empty_like(old: Tensor | None, *shape: int) -> Tensor | None:
    if old is None:
        return None
    value = torch.empty(shape, dtype=old.dtype, device=old.device)
    return _new_param(old, value) if isinstance(old, nn.Parameter) else value


@torch.no_grad()
def resize_layer(module: nn.Module, shape: dict[str, Any]) -> None:
    """Give ``module`` the sizes in ``shape`` (from :func:`layer_shape`), with uninitialized values.

    Used to rebuild a pruned architecture before loading its state dict.

    Raises:
        ValueError: If ``shape`` is for another layer type or its sizes are invalid.
    """
    current = layer_shape(module)
    if current is None or current.keys() != shape.keys() or current["type"] != shape["type"]:
        raise ValueError(
            f"cannot give {type(module).__name__} the shape {shape}: expected keys "
            f"{sorted(current) if current else 'of a conv, linear or BatchNorm layer'}"
        )
    sizes = {key: value for key, value in shape.items() if key != "type"}
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sizes.values()):
        raise ValueError(f"layer sizes must be integers >= 1, got {shape}")
    if isinstance(module, _Conv):
        groups, c_in, c_out = sizes["groups"], sizes["in_channels"], sizes["out_channels"]
        if c_in % groups or c_out % groups:
            raise ValueError(f"channels must be divisible by groups, got {shape}")
        module.weight = _empty_like(module.weight, c_out, c_in // groups, *module.kernel_size)
        module.bias = _empty_like(module.bias, c_out)
        module.in_channels, module.out_channels, module.groups = c_in, c_out, groups
    elif isinstance(module, nn.Linear):
        module.weight = _empty_like(module.weight, sizes["out_features"], sizes["in_features"])
        module.bias = _empty_like(module.bias, sizes["out_features"])
        module.in_features, module.out_features = sizes["in_features"], sizes["out_features"]
    else:
        features = sizes["num_features"]
        for name in ("weight", "bias", "running_mean", "running_var"):
            setattr(module, name, _empty_like(getattr(module, name), features))
        module.num_features = features
