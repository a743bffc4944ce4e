"""The channel analysis: coupled layers, residual sums, flatten, and freezing what it cannot follow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pruning_cases import DepthwiseSeparable, SharedConv, VGGStyle, WithGroups, WithUnknownOp
from torch import Tensor, nn

from advkit.models import resnet18
from advkit.pruning import ChannelUse, analyze
from advkit.pruning._elements import Elements, _distinct, _roots

SMALL = torch.rand(1, 3, 32, 32)


def uses(graph, layer: str) -> set[tuple[str, str, int]]:
    group = graph.group_of(layer)
    assert group is not None
    return {(u.module, u.role, u.expansion) for u in group.uses}


@pytest.fixture(scope="module")
def resnet_graph():
    return analyze(resnet18(num_classes=10), SMALL)


def test_block_inner_channels_couple_conv_bn_and_next_conv(resnet_graph) -> None:
    assert uses(resnet_graph, "backbone.layer4.0.conv1") == {
        ("backbone.layer4.0.conv1", "out", 1),
        ("backbone.layer4.0.bn1", "through", 1),
        ("backbone.layer4.0.conv2", "in", 1),
    }
    assert resnet_graph.group_of("backbone.layer4.0.conv1").prunable


def test_residual_sum_joins_layer4_outputs_and_fc(resnet_graph) -> None:
    b = "backbone.layer4."
    expected = {
        (b + "0.conv2", "out", 1),
        (b + "0.bn2", "through", 1),
        (b + "0.downsample.0", "out", 1),
        (b + "0.downsample.1", "through", 1),
        (b + "1.conv1", "in", 1),
        (b + "1.conv2", "out", 1),
        (b + "1.bn2", "through", 1),
        ("backbone.fc", "in", 1),
    }
    assert uses(resnet_graph, b + "1.conv2") == expected
    assert resnet_graph.group_of(b + "0.downsample.0") is resnet_graph.group_of(b + "1.conv2")
    assert resnet_graph.group_of(b + "1.conv2").channels == 512


def test_stem_joins_layer1_residual_stream(resnet_graph) -> None:
    group = resnet_graph.group_of("backbone.conv1")
    assert set(group.producers) == {
        "backbone.conv1",
        "backbone.layer1.0.conv2",
        "backbone.layer1.1.conv2",
    }


def test_model_output_and_input_are_frozen(resnet_graph) -> None:
    head = resnet_graph.group_of("backbone.fc")
    assert not head.prunable
    assert head.frozen == ("they are the model's output",)
    # Normalize is opaque but touches only the (already fixed) input channels.
    assert any("'normalize' (Normalize)" in line for line in resnet_graph.opaque)
    assert sum(not g.prunable for g in resnet_graph.groups) == 1


def test_flatten_before_linear_records_features_per_channel() -> None:
    graph = analyze(VGGStyle(width=8), torch.rand(1, 3, 16, 16))
    assert ("classifier.0", "in", 4) in uses(graph, "features.8")
    assert graph.group_of("classifier.0").prunable
    assert uses(graph, "classifier.0") == {
        ("classifier.0", "out", 1),
        ("classifier.3", "in", 1),
    }


def test_depthwise_conv_passes_channels_through() -> None:
    graph = analyze(DepthwiseSeparable(), torch.rand(1, 3, 8, 8))
    assert uses(graph, "expand") == {
        ("expand", "out", 1),
        ("bn1", "through", 1),
        ("depthwise", "through", 1),
        ("bn2", "through", 1),
        ("project", "in", 1),
    }
    assert graph.group_of("depthwise") is graph.group_of("expand")
    assert ("head", "in", 1) in uses(graph, "project")  # through .mean((2, 3))


def test_unknown_operation_freezes_and_is_reported() -> None:
    graph = analyze(WithUnknownOp(), torch.rand(1, 3, 8, 8))
    for layer in ("left", "right"):
        group = graph.group_of(layer)
        assert not group.prunable
        assert any("function cumsum()" in reason for reason in group.frozen)
    assert any("cumsum()" in line for line in graph.opaque)
    assert graph.group_of("mixed").prunable  # after the unknown op, new channels are fine


def test_grouped_convolution_joins_inputs_and_outputs_in_two_cells() -> None:
    group = analyze(WithGroups(), torch.rand(1, 3, 8, 8)).group_of("conv")
    assert group.prunable and group is not None
    assert ("grouped", "through", 1) in {(u.module, u.role, u.expansion) for u in group.uses}
    assert group.cells == (0, 0, 0, 0, 1, 1, 1, 1)


def test_grouped_convolution_changing_width_freezes_its_input_channels() -> None:
    graph = analyze(WithGroups(4), torch.rand(1, 3, 8, 8))
    assert any("groups=2" in reason for reason in graph.group_of("conv").frozen)
    assert graph.group_of("grouped") is None


def test_reused_layer_ties_both_calls() -> None:
    graph = analyze(SharedConv(), torch.rand(1, 3, 8, 8))
    group = graph.group_of("shared")
    assert group is graph.group_of("stem")
    assert {(u.module, u.role) for u in group.uses} >= {
        ("stem", "out"),
        ("shared", "in"),
        ("shared", "out"),
        ("head", "in"),
    }
    assert group.prunable


class Broadcast(nn.Module):
    """Squeeze-and-excitation style: a [N, C, 1, 1] gate times a [N, C, H, W] map; the gate's
    last layer creates the same channels as the map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.gate = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        g = torch.sigmoid(self.gate(y.mean((2, 3))))
        return self.head((y * g[:, :, None, None]).mean((2, 3)))


def test_gate_broadcast_over_space_joins_the_gated_channels() -> None:
    graph = analyze(Broadcast(), torch.rand(1, 3, 6, 6))
    group = graph.group_of("conv")
    assert group is graph.group_of("gate") and group.prunable
    assert {(u.module, u.role) for u in group.uses} == {
        ("conv", "out"),
        ("gate", "in"),
        ("gate", "out"),
        ("head", "in"),
    }


class FixedView(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 2)
        self.head = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.conv(x).view(-1, 4))


def test_reshape_to_a_literal_channel_count_freezes() -> None:
    graph = analyze(FixedView(), torch.rand(2, 3, 2, 2))
    assert any("fixed channel count" in reason for reason in graph.group_of("conv").frozen)


def test_analysis_leaves_training_model_untouched() -> None:
    model = VGGStyle().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    analyze(model, torch.rand(2, 3, 16, 16))
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.sum() > 0:  # data-dependent control flow: fx cannot follow it
            return self.conv(x)
        return -self.conv(x)


def test_untraceable_model_raises_type_error() -> None:
    with pytest.raises(TypeError, match=r"torch\.fx could not trace Untraceable"):
        analyze(Untraceable(), torch.rand(1, 3, 4, 4))


def test_leaf_types_keep_untraceable_parts_opaque() -> None:
    model = nn.Sequential(nn.Conv2d(3, 3, 1), Untraceable(), nn.Conv2d(4, 2, 1), nn.Flatten())
    graph = analyze(model, torch.rand(1, 3, 4, 4), leaf_types=[Untraceable])
    assert not graph.group_of("0").prunable
    assert ChannelUse("2", "out") in graph.group_of("2").uses


def test_model_failing_on_inputs_raises_value_error() -> None:
    with pytest.raises(ValueError, match=r"failed on example inputs of shape \[\[1, 5, 8, 8\]\]"):
        analyze(VGGStyle(), torch.rand(1, 5, 8, 8))
    with pytest.raises(TypeError, match="example_inputs must be a tensor"):
        analyze(VGGStyle(), "images")
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        analyze(lambda x: x, torch.rand(1))


class Scaled(nn.Module):
    """Arithmetic whose second operand is the same for every channel keeps channels prunable."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.spatial = nn.Conv2d(3, 1, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x) * 0.5 + 1.0
        y = y * x.mean((1, 2, 3))[:, None, None, None]  # one scale per sample
        y = y * torch.sigmoid(self.spatial(x))  # one [N, 1, H, W] map for all channels
        return self.head(nn.functional.interpolate(y, scale_factor=0.5).mean((2, 3)))


def test_operands_constant_across_channels_are_not_coupled() -> None:
    graph = analyze(Scaled(), torch.rand(2, 3, 8, 8))
    assert uses(graph, "conv") == {("conv", "out", 1), ("head", "in", 1)}
    assert graph.group_of("conv").prunable
    assert any("broadcast across the channels" in r for r in graph.group_of("spatial").frozen)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    joins=st.lists(st.tuples(st.integers(0, 29), st.integers(0, 29)), max_size=40),
)
def test_roots_by_pointer_jumping_equal_find(
    sizes: list[int], joins: list[tuple[int, int]]
) -> None:
    elements = Elements()
    for size in sizes:
        elements.new((size,))
    n = len(elements.parent)
    for a, b in joins:
        elements.union(np.array([a % n]), np.array([b % n]))
    parent = np.asarray(elements.parent, dtype=np.int64)
    roots = _roots(parent)
    assert roots.tolist() == [Elements(parent=list(elements.parent)).find(e) for e in range(n)]
    for e in range(n):  # the smallest element of each class is its root
        assert roots[e] == min(x for x in range(n) if roots[x] == roots[e])


@given(st.lists(st.integers(-50, 50), max_size=30))
def test_distinct_equals_numpy_unique(values: list[int]) -> None:
    array = np.asarray(values, dtype=np.int64)
    assert _distinct(array).tolist() == np.unique(array).tolist()
