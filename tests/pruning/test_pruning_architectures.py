"""End to end on other architectures: VGG-style with BatchNorm, ResNet-50 bottlenecks, depthwise."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from pruning_cases import (
    DepthwiseSeparable,
    SharedConv,
    VGGStyle,
    randomize_batchnorm,
    silence_removed_channels,
)
from torch import nn

from advkit.pruning import Pruner, apply_plan, count_parameters


def assert_pruning_is_exact(model: nn.Module, pruner: Pruner, inputs: torch.Tensor) -> nn.Module:
    """Silence the channels the plan removes; pruning must then not change the output.

    Deep random networks reach logits of ~10, so the tolerance is relative as well.
    """
    model = randomize_batchnorm(copy.deepcopy(model)).eval()
    plan = pruner.plan(model, inputs)
    silence_removed_channels(model, plan)
    pruned = apply_plan(model, plan)
    with torch.no_grad():
        torch.testing.assert_close(pruned(inputs), model(inputs), rtol=1e-5, atol=1e-5)
    assert count_parameters(pruned) == plan.params_after < plan.params_before
    return pruned


def test_vgg_style_all_convs_and_hidden_linear() -> None:
    inputs = torch.rand(3, 3, 16, 16)
    pruner = Pruner(ratio=0.5, targets=["features.*", "classifier.0"])
    pruned = assert_pruning_is_exact(VGGStyle(width=8), pruner, inputs)
    assert [m.out_channels for m in pruned.features if isinstance(m, nn.Conv2d)] == [4, 8, 8]
    assert [m.num_features for m in pruned.features if isinstance(m, nn.BatchNorm2d)] == [4, 8, 8]
    # The last conv's 8 channels each feed a 2x2 block of the flattened features.
    assert pruned.classifier[0].in_features == 8 * 4
    assert pruned.classifier[0].out_features == pruned.classifier[3].in_features == 16


@pytest.mark.slow
def test_resnet50_bottlenecks_inner_and_residual_channels() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet50(num_classes=5)
    inputs = torch.rand(1, 3, 32, 32)
    pruner = Pruner(ratio=0.3, targets=["layer4.*.conv2", "layer3.5.conv3"])
    pruned = assert_pruning_is_exact(model, pruner, inputs)
    assert [block.conv2.out_channels for block in pruned.layer4] == [358] * 3
    assert [block.conv3.in_channels for block in pruned.layer4] == [358] * 3
    # layer3's residual stream (1024 channels) shrinks everywhere it flows.
    stream = 1024 - round(0.3 * 1024)
    assert pruned.layer3[0].downsample[0].out_channels == stream
    assert all(block.conv3.out_channels == stream for block in pruned.layer3)
    assert (
        pruned.layer4[0].conv1.in_channels == pruned.layer4[0].downsample[0].in_channels == stream
    )


def test_depthwise_separable_block() -> None:
    pruned = assert_pruning_is_exact(
        DepthwiseSeparable(), Pruner(ratio=0.5, targets="expand"), torch.rand(2, 3, 8, 8)
    )
    assert pruned.depthwise.in_channels == pruned.depthwise.out_channels == 6
    assert pruned.depthwise.groups == 6
    assert pruned.depthwise.weight.shape == (6, 1, 3, 3)
    assert pruned.bn1.num_features == pruned.bn2.num_features == pruned.project.in_channels == 6


def test_shared_layer_is_sliced_once_for_both_calls() -> None:
    pruned = assert_pruning_is_exact(
        SharedConv(), Pruner(ratio=0.5, targets="shared"), torch.rand(2, 3, 8, 8)
    )
    assert pruned.shared.weight.shape == (3, 3, 3, 3)
    assert pruned.stem.out_channels == pruned.head.in_features == 3


@settings(max_examples=10)
@given(width=st.integers(1, 6), seed=st.integers(0, 2**16), batch=st.integers(1, 3))
def test_ratio_zero_changes_nothing(width: int, seed: int, batch: int) -> None:
    torch.manual_seed(seed)
    model = randomize_batchnorm(VGGStyle(width=width), seed).eval()
    inputs = torch.rand(batch, 3, 16, 16)
    plan = Pruner(ratio=0.0, targets=["features.*", "classifier.0"]).plan(model, inputs)
    assert all(group.removed == () for group in plan.groups)
    assert plan.params_after == plan.params_before and plan.flops_after == plan.flops_before
    pruned = apply_plan(model, plan)
    original = model.state_dict()
    assert pruned.state_dict().keys() == original.keys()
    assert all(torch.equal(v, original[k]) for k, v in pruned.state_dict().items())
    with torch.no_grad():
        assert torch.equal(pruned(inputs), model(inputs))


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.9])
def test_every_group_keeps_at_least_one_channel(ratio: float) -> None:
    model = DepthwiseSeparable()
    plan = Pruner(ratio=ratio, targets=["expand", "project"], strict=False).plan(
        model, torch.rand(1, 3, 4, 4)
    )
    # project's channels reach the head, not the output, so both groups are pruned.
    assert [len(group.keep) for group in plan.groups] == [
        12 - round(ratio * 12),
        8 - round(ratio * 8),
    ]
    assert apply_plan(model, plan)(torch.rand(2, 3, 4, 4)).shape == (2, 3)
