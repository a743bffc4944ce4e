"""Checkpoints that survive crashes and load without unpickling code.

A checkpoint is a plain dictionary of tensors, numbers, strings, lists and dicts, so
``torch.load(path, weights_only=True)`` reads it. It is written to a temporary file in the same
directory, flushed to disk and renamed over the old one (``os.replace`` is atomic on POSIX and
Windows): a write interrupted at any point leaves the previous checkpoint intact, and the next
save in that folder removes the temporary file a killed save left behind.

Since format version 2 a checkpoint carries a SHA-256 checksum of everything it holds, which
loading verifies: a file damaged on disk or in transfer is refused with its name instead of
loading changed weights. Checkpoints written before (without ``"format_version"``) still load,
unchecked.
"""

from __future__ import annotations

import copy
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from advkit._atomic import atomic_write
from advkit._integrity import CHECKPOINT_FORMAT, CHECKSUM_KEY, checksum, to_plain, verify_checksum
from advkit.pruning.io import layer_sizes, resize_to

__all__ = [
    "CHECKPOINT_FORMAT",
    "capture_rng_state",
    "layer_sizes",
    "load_checkpoint",
    "load_model_state",
    "load_weights",
    "restore_rng_state",
    "save_checkpoint",
]

CHECKPOINT_VERSION = 2
"""Format version written now: 2 adds the checksum; files without a version are version 1."""

PathLike = str | os.PathLike[str]


def save_checkpoint(state: Mapping[str, Any], path: PathLike) -> Path:
    """Write ``state`` to ``path`` atomically: the old file is replaced only by a complete one.

    Args:
        state: Tensors, numbers, strings and nested lists/dicts of them (what
            ``weights_only=True`` loading accepts); NumPy scalars and arrays are stored as
            Python numbers and tensors. ``"format"``, ``"format_version"`` and ``"checksum"``
            entries are added.
        path: Destination file; its directory is created if needed.

    Returns:
        The path written.

    Raises:
        TypeError: If ``state`` holds an object that a ``weights_only`` load could not read
            back (named by its place in ``state``), before anything is written.
    """
    path = Path(path)
    payload = to_plain(
        {**state, "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION}, "state"
    )
    payload[CHECKSUM_KEY] = checksum(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, "advkit-checkpoint", lambda file: torch.save(payload, file))


def load_checkpoint(path: PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, with ``weights_only=True``.

    Args:
        path: The checkpoint file.
        map_location: Where tensors are loaded (see :func:`torch.load`).

    Returns:
        The checkpoint dictionary.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is truncated, not a torch file, holds pickled code, is not
            an advkit Trainer checkpoint, or its checksum does not match its contents.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {str(path)!r}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    # The weights-only unpickler of a damaged or foreign file raises many types
    # (UnpicklingError, RuntimeError, IndexError, ...): each means "not such a file".
    except Exception as err:
        raise ValueError(
            f"could not read checkpoint {str(path)!r} (truncated, not written by torch.save, "
            f"or holding objects that weights_only loading refuses): {err}"
        ) from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"{str(path)!r} is not an advkit Trainer checkpoint (expected format "
            f"{CHECKPOINT_FORMAT!r}, found {found!r})"
        )
    version = state.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{str(path)!r} has an invalid format_version {version!r}")
    if version > CHECKPOINT_VERSION:
        raise ValueError(
            f"{str(path)!r} has checkpoint format version {version}, newer than the "
            f"{CHECKPOINT_VERSION} this advkit reads; upgrade advkit"
        )
    verify_checksum(state, path, required=version >= 2)
    return state


def load_model_state(model: nn.Module, state_dict: Mapping[str, Tensor], source: str) -> None:
    """Load ``state_dict`` into ``model`` after checking that the architectures match.

    Args:
        model: The model to fill (not wrapped in DistributedDataParallel).
        state_dict: Parameters and buffers, e.g. a checkpoint's ``"model"`` entry.
        source: Where the state comes from, for the error message.

    Raises:
        ValueError: If names or shapes differ, listing the first differences.
    """
    check_model_state(model, state_dict, source)
    model.load_state_dict(state_dict)


def check_model_state(model: nn.Module, state_dict: Any, source: str) -> None:
    """Raise ``ValueError`` unless ``state_dict`` has exactly ``model``'s names and shapes."""
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(v, Tensor) for v in state_dict.values()
    ):
        raise ValueError(f"the model state in {source} is not a dictionary of tensors")
    expected = model.state_dict()
    missing = [name for name in expected if name not in state_dict]
    unexpected = [name for name in state_dict if name not in expected]
    resized = [
        f"{name}: checkpoint {list(state_dict[name].shape)} vs model {list(tensor.shape)}"
        for name, tensor in expected.items()
        if name in state_dict and tuple(state_dict[name].shape) != tuple(tensor.shape)
    ]
    if missing or unexpected or resized:
        details = [
            f"{label} ({len(items)}): {', '.join(items[:4])}{', ...' if len(items) > 4 else ''}"
            for label, items in (
                ("missing from the checkpoint", missing),
                ("not in the model", unexpected),
                ("different shapes", resized),
            )
            if items
        ]
        raise ValueError(
            f"the checkpoint {source} was saved from a different architecture than the model: "
            + "; ".join(details)
            + ". Build the same architecture first. A checkpoint of a pruned model carries its "
            "layer sizes: advkit.training.load_weights(model, path) or "
            "advkit.pruning.load_pruned(path, model) rebuild them in a fresh model."
        )


def load_weights(model: nn.Module, path: PathLike) -> nn.Module:
    """Load only the model weights of a Trainer checkpoint into ``model`` (e.g. ``best.pt``).

    A checkpoint of a pruned model carries its layer sizes: the layers of ``model`` (a fresh
    instance of the architecture, e.g. ``resnet18(num_classes=10)``) are first resized to
    them, as :func:`advkit.pruning.load_pruned` does, so there is no need to prune it again.

    Args:
        model: A model of the architecture the checkpoint was saved from (pruned or not);
            changed in place, and left unchanged if loading fails.
        path: A checkpoint written by :meth:`~advkit.training.Trainer.save`.

    Returns:
        ``model``.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not a Trainer checkpoint or the architectures differ.
    """
    state = load_checkpoint(path)
    source = repr(str(path))
    sizes, current = state.get("shapes") or {}, layer_sizes(model)
    same_layers = all(current.get(n, {}).get("type") == size["type"] for n, size in sizes.items())
    if same_layers and any(current[name] != dict(size) for name, size in sizes.items()):
        trial = copy.deepcopy(model)  # resize and load a copy first: errors change nothing
        resize_to(trial, sizes, source)
        load_model_state(trial, state["model"], source)
        resize_to(model, sizes, source)
    load_model_state(model, state["model"], source)
    return model


def capture_rng_state() -> dict[str, Any]:
    """The global random states of torch (CPU and CUDA), NumPy and Python, as plain tensors.

    Stored as tensors and numbers rather than NumPy arrays or tuples so that checkpoints load
    with ``weights_only=True``.
    """
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {
            "version": version,
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Set the global random states captured by :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"].tolist()), python["gauss_next"]))
    numpy = state["numpy"]
    np.random.set_state(
        (
            numpy["name"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        # One state per device; saved on another machine, the devices both have.
        for index, device_state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state.cpu(), index)
