"""Why the analysis freezes ShuffleNetV2's stage-wide channels: exact widths, enumerated.

Each stride-1 unit splits its input ``z`` (``2b`` channels) with ``chunk(2)``, passes the first
half ``x1`` through, makes ``y`` from the second half and returns
``channel_shuffle(cat(x1, y), 2)``, so ``out[2i] = x1[i]`` and ``out[2i + 1] = y[i]``. A pruned
stage that keeps the same ``chunk`` and ``channel_shuffle`` and slices channels in order (as
advkit does) is exact only if every unit's kept input splits into equal halves and its kept
output alternates ``x1, y, x1, y, ...``. Followed through a stage, those constraints leave no
width between about half the channels and all of them, so a 30% ratio cannot be met there.
"""

from __future__ import annotations

from itertools import combinations

import torch

from advkit.pruning import Pruner


def interleavings(kept_x1: list[int], b: int) -> list[tuple[int, ...]]:
    """Kept ``y`` channels (as many as ``kept_x1``) for which the shuffled output alternates:
    the ``j``-th lies between the ``j``-th and the ``j + 1``-th kept ``x1`` channel."""
    partial: list[tuple[int, ...]] = [()]
    for j, a in enumerate(kept_x1):
        upper = kept_x1[j + 1] if j + 1 < len(kept_x1) else b
        partial = [(*c, x) for c in partial for x in range(max(a, c[-1] + 1 if c else 0), upper)]
    return partial


def unit_outputs(kept_in: frozenset[int], b: int) -> set[frozenset[int]]:
    """The kept output sets a stride-1 unit can reach exactly from its kept input set."""
    first_half = sorted(k for k in kept_in if k < b)
    if 2 * len(first_half) != len(kept_in):  # chunk(2) needs equal halves
        return set()
    evens = {2 * a for a in first_half}
    return {frozenset(evens | {2 * c + 1 for c in ys}) for ys in interleavings(first_half, b)}


def simulated_outputs(kept_in: frozenset[int], b: int) -> set[frozenset[int]]:
    """The same, by running the pruned unit on channel labels: the branch must read only
    channels it read before, and the output must be the original one with some channels left
    out (in order)."""
    z = [("z", i) for i in range(2 * b)]
    y = [("y", i) for i in range(b)]
    original = [v for pair in zip(z[:b], y, strict=True) for v in pair]
    pruned_z = [z[i] for i in sorted(kept_in)]
    if len(pruned_z) % 2:
        return set()
    x1, x2 = pruned_z[: len(pruned_z) // 2], pruned_z[len(pruned_z) // 2 :]
    if any(i < b for _, i in x2):  # the branch would read a channel it never read
        return set()
    reached = set()
    for kept_y in combinations(range(b), len(x1)):
        out = [v for pair in zip(x1, [y[c] for c in kept_y], strict=True) for v in pair]
        positions = [original.index(v) for v in out if v in original]
        if len(positions) == len(out) and positions == sorted(positions):
            reached.add(frozenset(positions))
    return reached


def stage_widths(b: int, units: int) -> list[int]:
    """Kept widths of a stage's output that an exact pruning can reach."""
    # The stride-2 unit makes both halves fresh: any alternating set of any width.
    states = {
        frozenset({2 * a for a in kept} | {2 * c + 1 for c in ys})
        for width in range(1, b + 1)
        for kept in combinations(range(b), width)
        for ys in interleavings(list(kept), b)
    }
    for _ in range(units):
        states = set().union(*(unit_outputs(kept, b) for kept in states))
    return sorted({len(kept) for kept in states})


def test_the_constraints_are_exactly_what_running_the_pruned_unit_allows() -> None:
    b = 4
    for width in range(2 * b + 1):
        for kept in combinations(range(2 * b), width):
            kept_in = frozenset(kept)
            assert unit_outputs(kept_in, b) == simulated_outputs(kept_in, b), kept


def test_a_stage_of_three_units_has_no_exact_width_between_half_and_all() -> None:
    assert stage_widths(8, 1) == [2, 4, 6, 8, 10, 12, 14, 16]
    assert stage_widths(8, 3) == [2, 4, 6, 8, 16]  # stages 2 and 4 of shufflenet_v2 have 3
    assert stage_widths(10, 7) == [2, 4, 6, 8, 20]  # stage 3 has 7


def test_shufflenet_keeps_its_stage_channels_and_prunes_its_branches() -> None:
    from torchvision.models import shufflenet_v2_x0_5

    model = shufflenet_v2_x0_5(num_classes=4).eval()
    plan = Pruner(ratio=0.3, targets="*", strict=False).plan(model, torch.rand(1, 3, 64, 64))
    # The stage's channels, shuffled and chunked, are joined into one unit: kept whole.
    stage = next(g for g in plan.groups if "stage3.1.branch2.5" in g.layers)
    assert len(stage.keep) == stage.channels
    branches = [g for g in plan.groups if g.uses[0].module.endswith("branch2.0")]
    assert len(branches) == 16 and all(
        len(g.keep) == g.channels - round(0.3 * g.channels) for g in branches
    )
