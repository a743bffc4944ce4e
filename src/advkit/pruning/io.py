"""Save and load a pruned model as tensors and integers only, never pickled Python objects.

The file holds the state dict and the size of every conv, linear and BatchNorm layer. Loading
builds the shapes into a fresh, unpruned instance of the same architecture and fills in the
weights, reading the file with ``torch.load(..., weights_only=True)``, so a file from an
untrusted source cannot run code. Like :func:`torch.save` and :func:`torch.load`, both take a
path or a binary file object; :func:`load_pruned` also reads the checkpoints of
:class:`advkit.training.Trainer`, which carry the same layer sizes. Its layer sizes are checked against its own tensors before anything is
allocated, so a crafted file cannot ask for a huge allocation either.

Files of version 2 carry a SHA-256 checksum of their contents that loading verifies (a file
damaged on disk is refused with its name); version 1 files, written before, still load
unchecked. Writes to a path are atomic and fsynced, and clean up what a killed write left behind.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from advkit._atomic import atomic_write
from advkit._checks import check_model
from advkit._integrity import (
    CHECKPOINT_FORMAT,
    CHECKSUM_KEY,
    check_finite_weights,
    checksum,
    verify_checksum,
)
from advkit.pruning._plan_fields import MAX_WIDTH
from advkit.pruning.functional import layer_shape, resize_layer
from advkit.pruning.graph import tied_tensors
from advkit.pruning.registry import _empty, find_handler

__all__ = ["load_pruned", "save_pruned"]

_FORMAT = "advkit.pruned_model"
_VERSION = 2  # 2: with a checksum; 1: without (still read)

PathArg = str | os.PathLike[str]
FileArg = str | os.PathLike[str] | IO[bytes]


def save_pruned(model: nn.Module, path: FileArg) -> None:
    """Write ``model``'s weights and layer sizes to ``path``.

    A path is written next to its destination first, fsynced and then moved into place, so a
    failure (even ``kill -9``) never leaves a half-written file; a later save in the folder
    removes the temporary file of a killed one. A file object (opened for binary writing, such
    as ``io.BytesIO()``) is written directly, as :func:`torch.save` does. The file carries a
    checksum of its contents.

    Args:
        model: A (pruned) model.
        path: Where to write, a path (any existing file is replaced) or a binary file object.

    Raises:
        TypeError: If ``model`` is not an ``nn.Module``.
        ValueError: If the folder of ``path`` does not exist, or the model's weights hold
            NaN or inf (as :meth:`advkit.training.Trainer.save`, nothing is written).
    """
    check_model(model)
    if not isinstance(path, str | os.PathLike) and not callable(getattr(path, "write", None)):
        raise TypeError(f"path must be a path or a binary file object, got {type(path).__name__}")
    if isinstance(path, str | os.PathLike) and not Path(path).parent.is_dir():
        raise ValueError(f"folder {str(Path(path).parent)!r} does not exist")
    state = model.state_dict()
    check_finite_weights(state, _shown(path))
    payload = {
        "format": _FORMAT,
        "version": _VERSION,
        "shapes": layer_sizes(model),
        "state_dict": {k: v.detach().cpu() for k, v in state.items()},
    }
    payload[CHECKSUM_KEY] = checksum(payload)
    if not isinstance(path, str | os.PathLike):
        torch.save(payload, path)
        return
    atomic_write(Path(path), "advkit-pruned", lambda file: torch.save(payload, file))


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
        The loaded model, with the ``training`` flags of ``architecture`` and its tied
        weights (a tensor shared by several layers stays shared).

    Raises:
        TypeError: If ``architecture`` is not an ``nn.Module``.
        ValueError: If the file is missing, not a pruned-model file, or does not fit the
            architecture (a layer it lacks or of another type, a different state dict, sizes
            above ``2**24`` or that do not describe the file's own tensors, different
            tensors for weights the architecture ties), or its weights hold NaN or inf.
    """
    check_model(architecture, "architecture")
    path, shown = _source(path)
    if map_location is None:
        map_location = next((p.device for p in architecture.parameters()), torch.device("cpu"))
    shapes, state = _contents(_read(path, shown, map_location), path, shown)
    _check_fits_architecture(architecture, shapes, state, shown)
    ties = tied_tensors(architecture)
    _check_ties(ties, state, shown)
    model = copy.deepcopy(architecture)
    resize_to(model, shapes, shown)
    _resize_loose_tensors(model, state, set(shapes))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"the file's weights do not fit its layer sizes: {err}") from err
    # Resizing gave each tied layer its own tensor: share them again, as in the architecture.
    for first, *others in ties:
        owner, _, attr = first.rpartition(".")
        shared = getattr(model.get_submodule(owner), attr)
        for name in others:
            owner, _, attr = name.rpartition(".")
            setattr(model.get_submodule(owner), attr, shared)
    return model


def _source(path: FileArg) -> tuple[Path | IO[bytes], str]:
    """The file to read (a path as a ``Path``) and how messages name it; checks that it is
    an existing file or a readable file object."""
    if isinstance(path, str | os.PathLike):
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"file not found: {str(path)!r}")
        return path, repr(str(path))
    if callable(getattr(path, "read", None)):
        return path, f"the file object {getattr(path, 'name', type(path).__name__)!r}"
    raise TypeError(f"path must be a path or a binary file object, got {type(path).__name__}")


def _read(path: Path | IO[bytes], shown: str, map_location: Any) -> Any:
    """The unpickled contents of the file, read with ``weights_only=True``."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    # The weights-only unpickler of a damaged or foreign file raises many types
    # (UnpicklingError, RuntimeError, IndexError, ...): each means "not such a file".
    except Exception as err:
        raise ValueError(
            f"{shown} is not a pruned-model file that loads with weights_only=True: {err}"
        ) from err


def _contents(
    payload: Any, path: Path | IO[bytes], shown: str
) -> tuple[Mapping[str, Mapping[str, Any]], Mapping[str, Tensor]]:
    """The layer sizes and the state dict of a :func:`save_pruned` file or a Trainer
    checkpoint, after its format, version, checksum, types and finite weights are checked."""
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        if not payload.get("shapes"):
            raise ValueError(
                f"{shown} is a Trainer checkpoint without layer sizes (written by an older "
                "advkit): prune a fresh model the same way, then load_weights(model, path)"
            )
        verify_checksum(payload, path, required=False)
        shapes, state = payload.get("shapes"), payload.get("model")
    elif not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise ValueError(
            f"{shown} is not a pruned-model file written by save_pruned nor a Trainer checkpoint"
        )
    else:
        version = payload.get("version")
        if version not in (1, _VERSION):
            raise ValueError(f"unsupported pruned-model version {version!r} in {shown}")
        verify_checksum(payload, path, required=version >= 2)
        shapes, state = payload.get("shapes"), payload.get("state_dict")
    if not isinstance(shapes, Mapping) or not all(isinstance(s, Mapping) for s in shapes.values()):
        raise ValueError(f"{shown}: 'shapes' must map layer names to size dictionaries")
    if not isinstance(state, Mapping) or not all(isinstance(t, Tensor) for t in state.values()):
        raise ValueError(f"{shown}: 'state_dict' must map names to tensors")
    check_finite_weights(state, _shown(path), loading=True)
    return shapes, state


def _check_fits_architecture(
    architecture: nn.Module,
    shapes: Mapping[str, Mapping[str, Any]],
    state: Mapping[str, Tensor],
    shown: str,
) -> None:
    """Refuse a file whose layers or state dict do not fit ``architecture``, or whose sizes
    do not describe its own tensors."""
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
    for name, shape in shapes.items():
        _check_sizes_fit_tensors(name, modules[name], shape, state, shown)


def _check_ties(ties: Sequence[Sequence[str]], state: Mapping[str, Tensor], shown: str) -> None:
    """Refuse different tensors in the file for the weights the architecture ties."""
    for names in ties:
        saved = [state[name] for name in names if name in state]
        if any(t.shape != saved[0].shape or not torch.equal(t, saved[0]) for t in saved[1:]):
            raise ValueError(
                f"{shown}: the architecture ties {names} (one shared tensor), but the file "
                "holds different tensors for them"
            )


def _shown(path: FileArg) -> str:
    if isinstance(path, str | os.PathLike):
        return str(path)
    return f"the file object {getattr(path, 'name', type(path).__name__)!r}"


def layer_sizes(model: nn.Module) -> dict[str, dict[str, Any]]:
    """The size of every conv, linear and BatchNorm layer of ``model``, by module name.

    :func:`save_pruned` files and Trainer checkpoints store it, so a pruned model's file can be
    loaded into a fresh, unpruned instance of its architecture. Plain integers and strings: it
    loads with ``weights_only=True``.
    """
    return {name: shape for name, module in model.named_modules() if (shape := layer_shape(module))}


def resize_to(model: nn.Module, sizes: Mapping[str, Mapping[str, Any]], source: str) -> None:
    """Give the layers of ``model`` the sizes ``sizes`` (from :func:`layer_sizes`), in place.

    The one place a model is resized from saved layer sizes: :func:`load_pruned` and
    :func:`advkit.training.load_weights` both call it. Layers already of their saved size are
    left as they are.

    Raises:
        ValueError: If ``model`` lacks a layer of ``sizes`` or has one of another type.
    """
    modules = dict(model.named_modules())
    for name, shape in sizes.items():
        current = layer_shape(modules[name]) if name in modules else None
        if current is None or current["type"] != shape.get("type"):
            found = type(modules[name]).__name__ if name in modules else "no such layer"
            raise ValueError(
                f"the checkpoint {source} was saved from a different architecture: its layer "
                f"{name!r} is a {shape.get('type')}, the model has {found}"
            )
    for name, shape in sizes.items():
        if layer_shape(modules[name]) != dict(shape):
            resize_layer(modules[name], dict(shape))


def _check_sizes_fit_tensors(
    name: str, module: nn.Module, shape: Mapping[str, Any], state: Mapping[str, Tensor], shown: str
) -> None:
    """Refuse sizes that do not describe the file's own tensors, before anything is allocated."""
    sizes = {key: value for key, value in shape.items() if key != "type"}
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sizes.values()):
        raise ValueError(f"{shown}: layer {name!r} sizes must be integers >= 1, got {shape}")
    expected: tuple[str, tuple[int, ...]] | None = None
    try:
        if isinstance(module, _ConvNd):
            groups = sizes["groups"]
            c_in, c_out = sizes["in_channels"], sizes["out_channels"]
            if c_in % groups or c_out % groups:
                raise ValueError(f"{shown}: layer {name!r} channels not divisible by groups")
            expected = ("weight", (c_out, c_in // groups, *module.kernel_size))
        elif isinstance(module, nn.Linear):
            expected = ("weight", (sizes["out_features"], sizes["in_features"]))
        elif isinstance(module, _BatchNorm):
            held = "weight" if module.weight is not None else "running_mean"
            if getattr(module, held, None) is not None:
                expected = (held, (sizes["num_features"],))
        elif isinstance(module, nn.LayerNorm):
            if module.weight is not None:
                expected = ("weight", (sizes["normalized_shape"],))
        elif (handler := find_handler(module)) is not None and handler.heads:
            expected = handler.expected_tensor(module, sizes)  # type: ignore[attr-defined]
    except KeyError as err:
        raise ValueError(f"{shown}: layer {name!r} has no size {err}") from None
    if expected is None:
        if any(v > MAX_WIDTH for v in sizes.values()):
            raise ValueError(
                f"{shown}: layer {name!r} sizes must be at most {MAX_WIDTH}, got "
                f"{ {k: (v if v < 10**18 else f'{v.bit_length()} bits') for k, v in sizes.items()} }"
            )
        return
    key = f"{name}.{expected[0]}" if name else expected[0]
    tensor = state.get(key)
    if tensor is None or tuple(tensor.shape) != expected[1]:
        found = list(tensor.shape) if tensor is not None else "no tensor"
        raise ValueError(
            f"{shown}: layer {name!r} sizes {dict(shape)} ask for {key} of shape "
            f"{list(expected[1])}, but the file holds {found}"
        )


def _resize_loose_tensors(model: nn.Module, state: Mapping[str, Tensor], layers: set[str]) -> None:
    """Give parameters outside sized layers (ConvNeXt's ``layer_scale``) their saved shapes."""
    current = model.state_dict(keep_vars=True)
    for key, value in state.items():
        owner_name, _, attr = key.rpartition(".")
        if owner_name in layers or current[key].shape == value.shape:
            continue
        owner = model.get_submodule(owner_name)
        setattr(owner, attr, _empty(getattr(owner, attr), *value.shape))
