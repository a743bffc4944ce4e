"""Checksums of saved files' contents, and the plain types a ``weights_only`` file may hold.

The checksum is a SHA-256 over every entry of a nested state (keys, the type and value of
every number and string, and the dtype, shape and bytes of every tensor), so a bit flipped
anywhere in a tensor's data, or in a value, is found when the file is loaded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

CHECKSUM_KEY = "checksum"
"""Entry of a saved dictionary that holds ``"sha256:<hex>"`` of the other entries."""

CHECKPOINT_FORMAT = "advkit.training.checkpoint/1"
"""Tag stored in every Trainer checkpoint, so that foreign files are recognized before use
(here, in the base layer, because :func:`advkit.pruning.load_pruned` reads them too)."""

_PLAIN = (bool, int, float, str, bytes, type(None))


def checksum(state: Mapping[str, Any]) -> str:
    """``"sha256:<hex>"`` of every entry of ``state`` except :data:`CHECKSUM_KEY`."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in state.items() if k != CHECKSUM_KEY})
    return f"sha256:{digest.hexdigest()}"


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"T{value.dtype}{list(value.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    elif isinstance(value, Mapping):
        digest.update(f"D{len(value)}".encode())
        for key in sorted(value, key=repr):
            digest.update(f"K{key!r}".encode())
            _feed(digest, value[key])
    elif isinstance(value, list | tuple):
        digest.update(f"{type(value).__name__}{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(f"V{type(value).__name__}:{value!r}".encode())


def verify_checksum(state: Mapping[str, Any], path: object, *, required: bool) -> None:
    """Raise unless ``state``'s stored checksum matches its contents.

    Args:
        state: The loaded dictionary.
        path: The file, for the message.
        required: Whether a missing checksum is an error (files of a format version that
            always writes one) or accepted (older files, written before checksums).

    Raises:
        ValueError: Naming the file, on a mismatch or a missing required checksum.
    """
    stored = state.get(CHECKSUM_KEY)
    if stored is None and not required:
        return
    if not isinstance(stored, str):
        raise ValueError(
            f"{str(path)!r} has no valid checksum ({CHECKSUM_KEY!r} is {stored!r}); the file "
            "is damaged or was edited"
        )
    computed = checksum(state)
    if computed != stored:
        raise ValueError(
            f"{str(path)!r} is corrupt: its contents do not match the checksum stored when it "
            f"was written ({stored[:19]}... vs {computed[:19]}...); the file was damaged or "
            "changed after saving. Use another copy."
        )


def check_finite_weights(state: Mapping[str, Any], path: object, *, loading: bool = False) -> None:
    """Refuse to write (or load) a model whose weights hold NaN or infinity.

    The one check for every file of model weights: :class:`advkit.training.Trainer`'s
    checkpoints and :func:`advkit.pruning.save_pruned` / :func:`~advkit.pruning.load_pruned`.

    Args:
        state: The model's state dict.
        path: The file, for the message.
        loading: Whether the state was read from ``path`` (else it is about to be written).

    Raises:
        ValueError: Naming the file (left as it was) and the first bad tensors.
    """
    bad = [
        name
        for name, value in state.items()
        if isinstance(value, Tensor)
        and value.is_floating_point()
        and not bool(torch.isfinite(value).all())
    ]
    if bad:
        shown = ", ".join(bad[:4]) + (", ..." if len(bad) > 4 else "")
        verb, outcome = (
            ("load", "the file was saved from a diverged model or was edited")
            if loading
            else ("write", "the file on disk is left as it was")
        )
        raise ValueError(
            f"refusing to {verb} {str(path)!r}: {len(bad)} model tensors hold NaN or inf "
            f"({shown}); {outcome}"
        )


def to_plain(value: Any, where: str) -> Any:
    """``value`` with NumPy scalars and arrays made Python numbers and tensors.

    Everything else must already be a tensor, number, string, bytes, ``None``, or a list,
    tuple or dict (with string or integer keys) of them: what ``torch.load(...,
    weights_only=True)`` reads back.

    Raises:
        TypeError: Naming the entry (``where``) and its type, for anything else.
    """
    if isinstance(value, np.generic):  # before the plain types: np.float64 is a float
        return value.item()
    if isinstance(value, (Tensor, *_PLAIN)):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError(f"{where} is a NumPy array of Python objects, which cannot be saved")
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, Mapping):
        plain = {}
        for key, item in value.items():
            if not isinstance(key, str | int) or isinstance(key, bool):
                raise TypeError(
                    f"{where} has a key {key!r} of type {type(key).__name__}; checkpoints "
                    "keep only string or integer keys"
                )
            plain[key] = to_plain(item, f"{where}[{key!r}]")
        return plain
    if isinstance(value, list | tuple):
        items = [to_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise TypeError(
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which a "
        "weights_only checkpoint cannot hold; store tensors, numbers, strings, None and "
        "lists/tuples/dicts of them (e.g. float(x) instead of an object)"
    )
