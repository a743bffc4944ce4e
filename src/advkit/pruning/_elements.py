"""Channel elements: every channel a layer creates is one element; coupled elements are joined.

The fx pass (:mod:`advkit.pruning._flow`) gives each tensor an array of element ids along its
channel dimension(s). Operations that tie channels together (a residual sum, a gate, a shuffle
that must keep its grid) join elements with a union-find; a *unit* is a class of joined elements
and is removed as a whole. Units whose elements were created by the same layers form a *group*,
the set of channels a ratio applies to.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace

import numpy as np

from advkit.pruning.channels import ChannelGraph, ChannelGroup, ChannelUse, Role


@dataclass
class RawUse:
    """A layer's use of a tensor's channels: ``elements[p]`` sits at the layer's position ``p``."""

    module: str
    role: Role
    elements: np.ndarray
    dim: int = 0


@dataclass
class Blocks:
    """A grouped convolution or a chunk: channel positions in ``groups`` blocks of equal width.

    ``module`` names the layer (for a convolution) or describes the operation.
    """

    module: str
    elements: np.ndarray
    groups: int


@dataclass
class Elements:
    """Union-find over channel elements, with the space (creating node) of each element."""

    parent: list[int] = field(default_factory=list)
    space: list[int] = field(default_factory=list)
    frozen: dict[int, list[str]] = field(default_factory=dict)
    spaces: int = 0

    def new(self, shape: tuple[int, ...], frozen: str = "") -> np.ndarray:
        """Fresh elements of one new space, shaped like the channel dims of a tensor."""
        start, count = len(self.parent), int(np.prod(shape)) if shape else 1
        self.parent.extend(range(start, start + count))
        self.space.extend([self.spaces] * count)
        self.spaces += 1
        ids = np.arange(start, start + count, dtype=np.int64).reshape(shape)
        if frozen:
            self.freeze(ids, frozen)
        return ids

    def find(self, e: int) -> int:
        parent = self.parent
        while parent[e] != e:
            parent[e] = parent[parent[e]]
            e = parent[e]
        return e

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        """Join ``a[i]`` with ``b[i]`` for every ``i`` (the arrays have the same shape)."""
        for x, y in zip(a.reshape(-1).tolist(), b.reshape(-1).tolist(), strict=True):
            rx, ry = self.find(x), self.find(y)
            if rx == ry:
                continue
            if rx > ry:  # the older element stays the root: units list in creation order
                rx, ry = ry, rx
            self.parent[ry] = rx
            moved = self.frozen.pop(ry, None)
            if moved:
                self.frozen.setdefault(rx, []).extend(moved)

    def freeze(self, elements: np.ndarray, reason: str) -> None:
        for root in {self.find(e) for e in elements.reshape(-1).tolist()}:
            reasons = self.frozen.setdefault(root, [])
            if reason not in reasons:
                reasons.append(reason)


def build_graph(
    elements: Elements, uses: list[RawUse], blocks: list[Blocks], opaque: list[str]
) -> ChannelGraph:
    """Units, groups and per-layer uses from the elements and raw uses the pass recorded."""
    root = _roots(np.asarray(elements.parent, dtype=np.int64))
    space_parent = list(range(elements.spaces))

    def find_space(s: int) -> int:
        while space_parent[s] != s:
            space_parent[s] = space_parent[space_parent[s]]
            s = space_parent[s]
        return s

    # Spaces sharing a unit form one group. Each set's root is its smallest space whatever the
    # order of the joins, so joining each distinct pair once gives what joining per element does.
    space = np.asarray(elements.space, dtype=np.int64)
    pairs = space * elements.spaces + space[root]  # (space, its unit's space) as one number
    for pair in _distinct(pairs[space != space[root]]).tolist():
        a, b = find_space(pair // elements.spaces), find_space(pair % elements.spaces)
        if a != b:
            space_parent[max(a, b)] = min(a, b)
    units: dict[int, list[int]] = {}  # group id -> unit roots in creation order
    unit_roots = np.flatnonzero(root == np.arange(len(root)))  # each root is its own root
    groups = [find_space(s) for s in space[unit_roots].tolist()]
    positions = []
    for r, g in zip(unit_roots.tolist(), groups, strict=True):
        members = units.setdefault(g, [])
        positions.append(len(members))
        members.append(r)
    # By unit root: its group and its position in the group; -1 for elements that are not roots.
    group_of, unit_of = np.full_like(root, -1), np.full_like(root, -1)
    group_of[unit_roots], unit_of[unit_roots] = groups, positions

    group_uses: dict[int, list[ChannelUse]] = {}
    for use in uses:
        roots = root[use.elements.reshape(-1)]
        labels, index = group_of[roots], unit_of[roots]
        for start, stop in _runs(labels):
            g = int(labels[start])
            group_uses.setdefault(g, []).append(_compress(use, start, index[start:stop]))

    frozen: dict[int, list[str]] = {}
    for r, reasons in elements.frozen.items():
        if group_of[r] >= 0:
            bucket = frozen.setdefault(int(group_of[r]), [])
            bucket.extend(x for x in reasons if x not in bucket)
    cells = _cells(root, group_of, unit_of, blocks, frozen, units)

    groups = []
    for g, roots in sorted(units.items()):
        group_use = tuple(dict.fromkeys(_whole(u, len(roots)) for u in group_uses.get(g, [])))
        if not any(u.role == "out" for u in group_use):
            continue
        groups.append(
            ChannelGroup(
                channels=len(roots),
                uses=group_use,
                frozen=tuple(frozen.get(g, ())),
                cells=cells.get(g, ()),
            )
        )
    return ChannelGraph(groups=tuple(groups), opaque=tuple(dict.fromkeys(opaque)))


def _roots(parent: np.ndarray) -> np.ndarray:
    """The root of every element of a union-find's parent array, by pointer jumping."""
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return parent
        parent = grand


def _distinct(values: np.ndarray) -> np.ndarray:
    """The distinct values, sorted: ``np.unique`` without its first call's import of
    ``numpy.ma`` (a quarter of a small model's analysis time in a fresh process)."""
    values = np.sort(values)
    return values[np.concatenate(([True], values[1:] != values[:-1]))] if len(values) else values


def _runs(labels: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of every maximal run of equal labels."""
    if not len(labels):
        return []
    bounds = [0, *(np.flatnonzero(np.diff(labels)) + 1).tolist(), len(labels)]
    return list(itertools.pairwise(bounds))


def _compress(use: RawUse, offset: int, index: np.ndarray) -> ChannelUse:
    """The run as a :class:`ChannelUse`: identity maps and repeated features stored compactly.

    The expansion is the largest ``e`` such that every aligned block of ``e`` positions holds
    one channel: the greatest common divisor of the lengths of the runs of equal channels.
    """
    expansion = 1
    if len(index) > 1:
        starts, lengths = _run_lengths(index)
        expansion = math.gcd(*lengths.tolist())
        if expansion > 1:
            index = index[starts]
    identity = np.array_equal(index, np.arange(len(index)))
    return ChannelUse(
        module=use.module,
        role=use.role,
        expansion=expansion,
        offset=offset,
        index=None if identity else tuple(index.tolist()),
        length=len(index) if identity else None,
        dim=use.dim,
    )


def _run_lengths(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of every maximal run of equal values."""
    starts = np.concatenate([[0], np.flatnonzero(np.diff(values)) + 1])
    return starts, np.diff(np.concatenate([starts, [len(values)]]))


def _whole(use: ChannelUse, channels: int) -> ChannelUse:
    """An identity map over the whole group needs no length."""
    return replace(use, length=None) if use.length == channels else use


def _cells(
    root: np.ndarray,
    group_of: np.ndarray,
    unit_of: np.ndarray,
    blocks: list[Blocks],
    frozen: dict[int, list[str]],
    units: dict[int, list[int]],
) -> dict[int, tuple[int, ...]]:
    """Per group, a cell id per unit such that removing equally from every cell keeps every
    grouped convolution's groups of equal width. Groups where that fails are frozen."""
    signature: dict[int, dict[int, list[tuple[int, ...]]]] = {}
    for blk in blocks:
        roots = root[blk.elements.reshape(-1)].tolist()
        width = len(roots) // blk.groups
        per_unit: dict[int, list[int]] = {}
        for position, r in enumerate(roots):
            per_unit.setdefault(r, []).append(position // width)
        for r, where in per_unit.items():
            g = int(group_of[r])
            sig = signature.setdefault(g, {}).setdefault(int(unit_of[r]), [])
            sig.append(tuple(sorted(where)))
    cells: dict[int, tuple[int, ...]] = {}
    for g, sigs in signature.items():
        n_units = len(units[g])
        keys = [tuple(sigs.get(u, ())) for u in range(n_units)]
        ids = {key: i for i, key in enumerate(dict.fromkeys(keys))}
        sizes = [0] * len(ids)
        for key in keys:
            sizes[ids[key]] += 1
        if len(set(sizes)) != 1:
            modules = [b.module for b in blocks if group_of[root[b.elements.flat[0]]] == g]
            frozen.setdefault(g, []).append(
                f"{modules[0]}: its equal parts (groups or chunks) cannot all keep the same width"
            )
            continue
        cells[g] = tuple(ids[key] for key in keys)
    return cells
