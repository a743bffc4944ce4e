"""The stratified split: disjoint, complete, exact per-class counts, independent of input order."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from advkit.data import stratified_split

class_sizes = st.lists(st.integers(0, 40), min_size=1, max_size=6)
fractions = st.floats(min_value=0.01, max_value=0.99, allow_nan=False)


def _items(sizes: list[int]) -> tuple[list[str], list[int]]:
    keys = [f"class{c}/file{i}.jpg" for c, n in enumerate(sizes) for i in range(n)]
    labels = [c for c, n in enumerate(sizes) for _ in range(n)]
    return keys, labels


@given(sizes=class_sizes, fraction=fractions, seed=st.integers(-(2**40), 2**40))
def test_split_is_disjoint_complete_and_stratified(
    sizes: list[int], fraction: float, seed: int
) -> None:
    keys, labels = _items(sizes)
    train, val = stratified_split(keys, labels, val_fraction=fraction, seed=seed)
    assert not set(train) & set(val)
    assert sorted(train + val) == list(range(len(keys)))
    assert train == sorted(train) and val == sorted(val)
    val_counts = Counter(labels[i] for i in val)
    for label, size in enumerate(sizes):
        assert val_counts[label] == math.floor(size * fraction + 0.5)


@given(sizes=class_sizes, seed=st.integers(0, 1000), shuffle_seed=st.integers(0, 1000))
def test_split_depends_on_keys_not_on_their_order(
    sizes: list[int], seed: int, shuffle_seed: int
) -> None:
    keys, labels = _items(sizes)
    order = list(range(len(keys)))
    random.Random(shuffle_seed).shuffle(order)
    shuffled_keys = [keys[i] for i in order]
    shuffled_labels = [labels[i] for i in order]
    _, val = stratified_split(keys, labels, seed=seed)
    _, val_shuffled = stratified_split(shuffled_keys, shuffled_labels, seed=seed)
    assert {keys[i] for i in val} == {shuffled_keys[i] for i in val_shuffled}


def test_same_seed_same_split_and_seeds_differ() -> None:
    keys, labels = _items([50, 50, 50])
    assert stratified_split(keys, labels, seed=3) == stratified_split(keys, labels, seed=3)
    assert stratified_split(keys, labels, seed=3) != stratified_split(keys, labels, seed=4)


def test_eighty_twenty_on_animals10_class_sizes() -> None:
    # The class sizes of the real download: val gets round(0.2 * n) of each.
    sizes = [4863, 2623, 1446, 2112, 3098, 1668, 1866, 1820, 4821, 1862]
    keys, labels = _items(sizes)
    train, val = stratified_split(keys, labels, val_fraction=0.2, seed=0)
    assert len(val) == sum(math.floor(n * 0.2 + 0.5) for n in sizes) == 5236
    assert len(train) == sum(sizes) - 5236


def test_split_golden_value() -> None:
    # Pinned so that a split, once published, never drifts between advkit versions.
    keys = [f"dog/{i}.jpeg" for i in range(10)]
    assert stratified_split(keys, [0] * 10, val_fraction=0.2, seed=0)[1] == [1, 5]
    assert stratified_split(keys, [0] * 10, val_fraction=0.2, seed=1)[1] == [2, 3]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_val_fraction_outside_open_unit_interval_is_rejected(fraction: float) -> None:
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\)"):
        stratified_split(["a", "b"], [0, 1], val_fraction=fraction)


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="keys and labels differ in length: 2 and 1"):
        stratified_split(["a", "b"], [0])
    with pytest.raises(ValueError, match="keys must be unique"):
        stratified_split(["a", "a"], [0, 0])
    with pytest.raises(TypeError, match="seed must be an int, got float"):
        stratified_split(["a"], [0], seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="val_fraction must be a float, got str"):
        stratified_split(["a"], [0], val_fraction="0.2")  # type: ignore[arg-type]
