"""Save and load a pruned model as tensors and integers only, never pickled Python objects.

The file holds the state dict and the size of every conv, linear and BatchNorm layer. Loading
builds the shapes into a fresh, unpruned instance of the same architecture and fills in the
weights, reading the file with ``torch.load(..., weights_only=True)``, so a file from an
untrusted source cannot run code.
"""

from __future__ import annotations

import copy
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advkit.pruning.functional import layer_shape, resize_layer

__all__ = ["load_pruned", "save_pruned"]

_FORMAT = "advkit.pruned_model"
_VERSION = 1

PathArg = str | os.PathLike[str]


def save_pruned(model: nn.Module, path: PathArg) -> None:
    """Write ``model``'s weights and layer sizes to ``path``.

    The file is written next to ``path`` first and then moved into place, so a failure
    never leaves a half-written file.

    Args:
        model: A (pruned) model.
        path: Where to write; any existing file is replaced.

    Raises:
        TypeError: If ``model`` is not an ``nn.Module``.
        ValueError: If the folder of ``path`` does not exist.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"folder {str(path.parent)!r} does not exist")
    shapes = {
        name: shape for name, module in model.named_modules() if (shape := layer_shape(module))
    }
    payload = {
        "format": _FORMAT,
        "version": _VERSION,
        "shapes": shapes,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_pruned(path: PathArg, architecture: nn.Module, *, map_location: Any = None) -> nn.Module:
    """Rebuild a model saved by :func:`save_pruned` from a fresh instance of its architecture.

    Args:
        path: The file written by :func:`save_pruned`.
        architecture: An unpruned (or pruned) instance of the same architecture, such as
            ``advkit.models.resnet18(num_classes=10)``. It is not modified: the result is a
            copy with the saved layer sizes and weights.
        map_location: Passed to :func:`torch.load`; by default tensors go to the device of
            ``architecture``'s parameters.

    Returns:
        The loaded model, with the ``training`` flags of ``architecture``.

    Raises:
        TypeError: If ``architecture`` is not an ``nn.Module``.
        ValueError: If the file is missing, not a pruned-model file, or does not fit the
            architecture (a layer it lacks or of another type, a different state dict).
    """
    if not isinstance(architecture, nn.Module):
        raise TypeError(f"architecture must be a torch.nn.Module, got {type(architecture)}")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"file not found: {str(path)!r}")
    if map_location is None:
        map_location = next((p.device for p in architecture.parameters()), torch.device("cpu"))
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise ValueError(
            f"{str(path)!r} is not a pruned-model file that loads with weights_only=True: {err}"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise ValueError(f"{str(path)!r} is not a pruned-model file written by save_pruned")
    if payload.get("version") != _VERSION:
        raise ValueError(f"unsupported pruned-model version {payload.get('version')!r}")
    shapes, state = payload["shapes"], payload["state_dict"]

    modules = dict(architecture.named_modules())
    for name, shape in shapes.items():
        if name not in modules:
            raise ValueError(f"the architecture has no layer {name!r} that the file has")
        current = layer_shape(modules[name])
        if current is None or current["type"] != shape.get("type"):
            raise ValueError(
                f"layer {name!r} is {type(modules[name]).__name__} in the architecture but "
                f"{shape.get('type')} in the file"
            )
    expected = set(architecture.state_dict())
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(
            f"the file's state dict does not fit the architecture: missing {missing[:5]}, "
            f"unexpected {extra[:5]}"
        )

    model = copy.deepcopy(architecture)
    for name, shape in shapes.items():
        resize_layer(model.get_submodule(name), shape)
    _resize_loose_tensors(model, state, set(shapes))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"the file's weights do not fit its layer sizes: {err}") from err
    return model


def _resize_loose_tensors(model: nn.Module, state: dict[str, Any], layers: set[str]) -> None:
    """Give parameters outside sized layers (ConvNeXt's ``layer_scale``) their saved shapes."""
    current = model.state_dict(keep_vars=True)
    for key, value in state.items():
        owner_name, _, attr = key.rpartition(".")
        if owner_name in layers or current[key].shape == value.shape:
            continue
        owner = model.get_submodule(owner_name)
        old = getattr(owner, attr)
        empty = torch.empty(value.shape, dtype=old.dtype, device=old.device)
        new = (
            nn.Parameter(empty, requires_grad=old.requires_grad)
            if isinstance(old, nn.Parameter)
            else empty
        )
        setattr(owner, attr, new)
