"""Global pruning, the layer registry, and the concat index mapping (hypothesis)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from pruning_cases import silence_removed_channels
from test_pruning_errors import assert_untouched, snapshot
from torch import Tensor, nn

from advkit.pruning import (
    LayerHandler,
    Pruner,
    analyze,
    apply_plan,
    normalize_scores,
    register_layer,
    unregister_layer,
)


@pytest.fixture(scope="module")
def resnet50() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet50(num_classes=5)


@pytest.mark.parametrize("normalization", ["mean", "lamp"])
def test_global_pruning_removes_the_fraction_and_respects_floors(
    resnet50: nn.Module, normalization: str
) -> None:
    pruner = Pruner(
        ratio=0.4, targets="*", strict=False, scope="global", normalization=normalization, floor=0.3
    )
    plan = pruner.plan(resnet50, torch.rand(1, 3, 32, 32))
    total = sum(group.channels for group in plan.groups)
    removed = sum(len(group.removed) for group in plan.groups)
    assert abs(removed - round(0.4 * total)) <= len(plan.groups)
    assert all(len(g.keep) >= max(1, math.ceil(0.3 * g.channels)) for g in plan.groups)
    assert len({len(g.removed) / g.channels for g in plan.groups}) > 1  # groups differ


def test_normalized_scores_make_groups_comparable() -> None:
    mean = normalize_scores(torch.tensor([2.0, 6.0]), "mean")
    assert mean.tolist() == [0.5, 1.5]
    lamp = normalize_scores(torch.tensor([3.0, 1.0, 2.0]), "lamp")
    assert lamp[0] == 1.0 and lamp[1] == 1.0 / 14.0
    with pytest.raises(ValueError, match="normalization must be 'mean' or 'lamp', got 'max'"):
        normalize_scores(torch.ones(2), "max")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"scope": "layer"}, ValueError, "scope must be 'group' or 'global', got 'layer'"),
        ({"normalization": "l2"}, ValueError, "normalization must be 'mean' or 'lamp'"),
        ({"floor": 1.5}, ValueError, r"floor must be in \[0, 1\], got 1.5"),
        ({"floor": "0.1"}, TypeError, "floor must be a float, got str"),
    ],
)
def test_bad_global_settings(kwargs, error, message: str) -> None:
    with pytest.raises(error, match=message):
        Pruner(ratio=0.2, targets="*", **kwargs)


class Scale(nn.Module):
    """A custom layer: one learned factor per channel, applied by an operation the channel
    analysis does not know (``x * self.factor[:, None, None]`` it would follow)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.factor = nn.Parameter(torch.rand(channels) + 0.5)

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("nchw,c->nchw", x, self.factor)


class ScaleHandler(LayerHandler):
    channelwise = True

    def out_channels(self, module: Scale) -> int:
        return len(module.factor)

    in_channels = out_channels

    def slice_out(self, module: Scale, keep: Tensor) -> None:
        module.factor = nn.Parameter(module.factor.detach()[keep].clone())


def scaled_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), Scale(8), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.ReLU(), nn.Conv2d(4, 2, 1)
    )


def test_custom_layer_without_handler_freezes_or_errors() -> None:
    model = scaled_net()
    before = snapshot(model)
    inputs = torch.rand(1, 3, 6, 6)
    with pytest.raises(ValueError, match=r"0: its channels are frozen: .*in module '1' \(Scale\)"):
        Pruner(ratio=0.5, targets="*").plan(model, inputs)
    assert_untouched(model, before)
    plan = Pruner(ratio=0.5, targets="*", strict=False).plan(model, inputs)
    assert "in module '1' (Scale)" in dict(plan.skipped)["0"]
    assert_untouched(model, before)


def test_registered_custom_layer_is_followed_and_sliced() -> None:
    model = scaled_net()
    register_layer(Scale, ScaleHandler())
    try:
        plan = Pruner(ratio=0.5, targets="0").plan(model, torch.rand(1, 3, 6, 6))
        assert ("1", "through") in {(u.module, u.role) for u in plan.groups[0].uses}
        silent = silence_removed_channels(copy.deepcopy(model), plan)
        pruned = apply_plan(model, plan)
        assert pruned[1].factor.shape == (4,)
        inputs = torch.rand(2, 3, 6, 6)
        torch.testing.assert_close(pruned(inputs), silent(inputs))
    finally:
        unregister_layer(Scale)


def test_register_layer_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match=r"layer_type must be an nn\.Module subclass, got 3"):
        register_layer(3, ScaleHandler())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="handler must be a LayerHandler, got dict"):
        register_layer(Scale, {})  # type: ignore[arg-type]


class Concat(nn.Module):
    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(nn.Conv2d(2, w, 1) for w in widths)
        self.mix = nn.Conv2d(sum(widths), 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.mix(torch.cat([part(x) for part in self.parts], dim=1))


@settings(max_examples=15, deadline=None)
@given(
    widths=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    ratio=st.sampled_from([0.25, 0.5, 0.75]),
    seed=st.integers(0, 2**16),
)
def test_concat_maps_consumer_channels_to_producer_ranges(widths, ratio, seed) -> None:
    torch.manual_seed(seed)
    model = Concat(widths)
    graph = analyze(model, torch.rand(1, 2, 3, 3))
    offsets = [sum(widths[:i]) for i in range(len(widths))]
    for i, offset in enumerate(offsets):
        (read,) = [u for u in graph.group_of(f"parts.{i}").uses if u.module == "mix"]
        assert (read.role, read.offset, read.index) == ("in", offset, None)
    plan = Pruner(ratio=ratio, targets="parts.*").plan(model, torch.rand(1, 2, 3, 3))
    pruned = apply_plan(model, plan)
    kept = [offsets[i] + k for i, group in enumerate(plan.groups) for k in group.keep]
    torch.testing.assert_close(pruned.mix.weight, model.mix.weight[:, kept])
