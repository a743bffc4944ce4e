"""Save and load a pruned model as tensors and integers only, never pickled Python objects.

The file holds the state dict and the size of every conv, linear and BatchNorm layer. Loading
builds the shapes into a fresh, unpruned instance of the same architecture and fills in the
weights, reading the file with ``torch.load(..., weights_only=True)``, so a file from an
untrusted source cannot run code. Like :func:`torch.save` and :func:`torch.load`, both take a
path or a binary file object; :func:`load_pruned` also reads the checkpoints of
:class:`advkit.training.Trainer`, which carry the same layer sizes.
"""

from __future__ import annotations

import copy
import os
import pickle
import tempfile
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from advkit.pruning.functional import layer_shape, resize_layer

__all__ = ["load_pruned", "save_pruned"]

_FORMAT = "advkit.pruned_model"
_VERSION = 1

PathArg = str | os.PathLike[str]
FileArg = str | os.PathLike[str] | IO[bytes]


def save_pruned(model: nn.Module, path: FileArg) -> None:
    """Write ``model``'s weights and layer sizes to ``path``.

    A path is written next to its destination first and then moved into place, so a failure
    never leaves a half-written file. A file object (opened for binary writing, such as
    ``io.BytesIO()``) is written directly, as :func:`torch.save` does.

    Args:
        model: A (pruned) model.
        path: Where to write, a path (any existing file is replaced) or a binary file object.

    Raises:
        TypeError: If ``model`` is not an ``nn.Module``.
        ValueError: If the folder of ``path`` does not exist.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(path, str | os.PathLike) and not callable(getattr(path, "write", None)):
        raise TypeError(f"path must be a path or a binary file object, got {type(path).__name__}")
    if isinstance(path, str | os.PathLike) and not Path(path).parent.is_dir():
        raise ValueError(f"folder {str(Path(path).parent)!r} does not exist")
    shapes = {
        name: shape for name, module in model.named_modules() if (shape := layer_shape(module))
    }
    payload = {
        "format": _FORMAT,
        "version": _VERSION,
        "shapes": shapes,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if not isinstance(path, str | os.PathLike):
        torch.save(payload, path)
        return
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_pruned(path: FileArg, architecture: nn.Module, *, map_location: Any = None) -> nn.Module:
    """Rebuild a model saved by :func:`save_pruned` from a fresh instance of its architecture.

    Args:
        path: The file written by :func:`save_pruned`, as a path or a binary file object,
            or a checkpoint of a pruned model written by :class:`advkit.training.Trainer`
            (``last.pt``, ``best.pt``).
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
    if isinstance(path, str | os.PathLike):
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"file not found: {str(path)!r}")
        shown = repr(str(path))
    elif callable(getattr(path, "read", None)):
        shown = f"the file object {getattr(path, 'name', type(path).__name__)!r}"
    else:
        raise TypeError(f"path must be a path or a binary file object, got {type(path).__name__}")
    if map_location is None:
        map_location = next((p.device for p in architecture.parameters()), torch.device("cpu"))
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise ValueError(
            f"{shown} is not a pruned-model file that loads with weights_only=True: {err}"
        ) from err
    # advkit.training imports this package: import its format tag when it is needed.
    from advkit.training.checkpoint import CHECKPOINT_FORMAT

    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        if not payload.get("shapes"):
            raise ValueError(
                f"{shown} is a Trainer checkpoint without layer sizes (written by an older "
                "advkit): prune a fresh model the same way, then load_weights(model, path)"
            )
        shapes, state = payload["shapes"], payload["model"]
    elif not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise ValueError(
            f"{shown} is not a pruned-model file written by save_pruned nor a Trainer checkpoint"
        )
    elif payload.get("version") != _VERSION:
        raise ValueError(f"unsupported pruned-model version {payload.get('version')!r}")
    else:
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
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"the file's weights do not fit its layer sizes: {err}") from err
    return model
