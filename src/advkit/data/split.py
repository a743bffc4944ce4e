"""A deterministic, stratified train/validation split that depends only on names and a seed."""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Sequence

from advkit._checks import check_int, check_real

__all__ = ["check_seed", "check_val_fraction", "stratified_split"]


def check_seed(seed: int) -> int:
    """Validate a seed: any Python integer."""
    return check_int(seed, "seed")


def check_val_fraction(val_fraction: float) -> float:
    """Validate the validation share: a real number strictly between 0 and 1."""
    return check_real(val_fraction, "val_fraction", low=0, high=1, open_low=True, open_high=True)


def _rank(seed: int, key: str) -> bytes:
    # surrogateescape: a file name with bytes that are not UTF-8 (decoded by Python with
    # surrogates) hashes as its raw bytes instead of failing.
    return hashlib.sha256(f"{seed}\x00{key}".encode("utf-8", "surrogateescape")).digest()


def stratified_split(
    keys: Sequence[str], labels: Sequence[int], *, val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Split items into train and validation indices, class by class.

    Within each class the items are ordered by a SHA-256 hash of ``(seed, key)`` and the first
    ``round(n * val_fraction)`` (halves rounded up) go to validation. The split therefore
    depends only on the keys (e.g. relative file paths), labels and seed: not on the order the
    items are listed in, the platform, or the torch/Python version; and adding one file to a
    class moves at most one other file of that class between the splits.

    Args:
        keys: A unique, stable name for every item.
        labels: The class of every item, same length as ``keys``.
        val_fraction: Share of each class that goes to validation, in ``(0, 1)``.
        seed: Selects one of many possible splits.

    Returns:
        ``(train_indices, val_indices)``: disjoint, each sorted, together ``range(len(keys))``.

    Raises:
        ValueError: If lengths differ, a key repeats, or ``val_fraction`` is outside ``(0, 1)``.
        TypeError: If ``seed`` is not an int.

    Example:
        >>> train, val = stratified_split([f"f{i}" for i in range(10)], [0] * 5 + [1] * 5)
        >>> len(train), len(val), sorted(train + val) == list(range(10))
        (8, 2, True)
    """
    val_fraction = check_val_fraction(val_fraction)
    seed = check_seed(seed)
    if len(keys) != len(labels):
        raise ValueError(f"keys and labels differ in length: {len(keys)} and {len(labels)}")
    if len(set(keys)) != len(keys):
        raise ValueError("keys must be unique")
    by_class: dict[int, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_class[int(label)].append(index)
    val: list[int] = []
    for members in by_class.values():
        members.sort(key=lambda i: _rank(seed, keys[i]))
        val.extend(members[: math.floor(len(members) * val_fraction + 0.5)])
    val_set = set(val)
    train = [i for i in range(len(keys)) if i not in val_set]
    return train, sorted(val)
