"""The study's pruning on ResNet-18: exact counts, exactness, residual groups, plan contents."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from pruning_cases import randomize_batchnorm, silence_removed_channels
from torch import nn

from advkit.models import resnet18
from advkit.pruning import (
    Pruner,
    PruningPlan,
    apply_plan,
    count_flops,
    count_parameters,
    l1_filter_norm,
)

SMALL = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
STUDY_TARGETS = "backbone.layer4.*.conv1"


@pytest.fixture(scope="module")
def study_model() -> nn.Module:
    """A seeded ResNet-18 with 10 classes (shared: tests must not modify it)."""
    torch.manual_seed(0)
    return randomize_batchnorm(resnet18(num_classes=10)).eval()


@pytest.fixture(scope="module")
def study_plans(study_model: nn.Module) -> dict[float, PruningPlan]:
    return {
        ratio: Pruner(ratio=ratio, targets=STUDY_TARGETS).plan(study_model, SMALL)
        for ratio in (0.2, 0.4)
    }


def test_unpruned_parameter_count(study_model: nn.Module) -> None:
    assert count_parameters(study_model) == 11_181_642


@pytest.mark.parametrize(
    ("ratio", "kept", "params"), [(0.2, 410, 9_536_178), (0.4, 307, 7_874_582)]
)
def test_study_ratios_give_exact_counts(
    study_model: nn.Module,
    study_plans: dict[float, PruningPlan],
    ratio: float,
    kept: int,
    params: int,
) -> None:
    plan = study_plans[ratio]
    assert plan.kept_filters() == {"backbone.layer4.0.conv1": kept, "backbone.layer4.1.conv1": kept}
    assert plan.params_before == 11_181_642
    assert plan.params_after == params
    pruned = apply_plan(study_model, plan)
    assert count_parameters(pruned) == params
    layer4 = pruned.backbone.layer4
    for block in layer4:
        assert block.conv1.weight.shape[0] == block.bn1.num_features == kept
        assert block.bn1.running_mean.shape == block.bn1.running_var.shape == (kept,)
        assert block.conv2.weight.shape[1] == block.conv2.in_channels == kept
    assert pruned(torch.rand(2, 3, 64, 64)).shape == (2, 10)


def test_flops_match_hand_count_and_measurement(
    study_model: nn.Module, study_plans: dict[float, PruningPlan]
) -> None:
    plan = study_plans[0.2]
    # At 32x32 layer4 runs at 1x1 (layer4.0.conv1 sees 2x2 with stride 2): every removed filter
    # saves its 3x3 kernel over all input channels once, and one 3x3x1 column in conv2.
    removed = 102
    saved = removed * 256 * 9 + 512 * removed * 9 + removed * 512 * 9 + 512 * removed * 9
    assert plan.flops_before - plan.flops_after == saved
    assert plan.flops_before == count_flops(study_model, SMALL)
    assert plan.flops_after == count_flops(apply_plan(study_model, plan), SMALL)


def test_flop_count_matches_torchvision_published_figure() -> None:
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    flops = count_flops(torchvision.models.resnet18(), torch.rand(1, 3, 224, 224))
    assert round(flops / 1e9, 3) == weights.meta["_ops"]


def test_removed_filters_contributing_nothing_leave_outputs_unchanged(
    study_model: nn.Module, study_plans: dict[float, PruningPlan]
) -> None:
    plan = study_plans[0.4]
    silenced = silence_removed_channels(copy.deepcopy(study_model), plan)
    pruned = apply_plan(silenced, plan)
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(pruned(images), silenced(images), rtol=0, atol=1e-5)


def test_zeroed_filters_are_the_ones_removed(study_model: nn.Module) -> None:
    model = copy.deepcopy(study_model)
    zeroed = torch.randperm(512, generator=torch.Generator().manual_seed(2))[:102]
    with torch.no_grad():
        model.backbone.layer4[0].conv1.weight[zeroed] = 0.0
        model.backbone.layer4[0].bn1.weight[zeroed] = 0.0
        model.backbone.layer4[0].bn1.bias[zeroed] = 0.0
    plan = Pruner(ratio=0.2, targets="backbone.layer4.0.conv1").plan(model, SMALL)
    assert plan.groups[0].removed == tuple(sorted(zeroed.tolist()))
    with torch.no_grad():
        torch.testing.assert_close(apply_plan(model, plan)(SMALL), model(SMALL), rtol=0, atol=1e-5)


def test_residual_group_is_pruned_consistently(study_model: nn.Module) -> None:
    plan = Pruner(ratio=0.25, targets="backbone.layer4.1.conv2").plan(study_model, SMALL)
    (group,) = plan.groups
    assert set(group.layers) == {
        "backbone.layer4.0.conv2",
        "backbone.layer4.0.downsample.0",
        "backbone.layer4.1.conv2",
    }
    assert len(group.keep) == 384
    silenced = silence_removed_channels(copy.deepcopy(study_model), plan)
    pruned = apply_plan(silenced, plan)
    b0, b1 = pruned.backbone.layer4
    assert b0.conv2.out_channels == b0.bn2.num_features == 384
    assert b0.downsample[0].out_channels == b0.downsample[1].num_features == 384
    assert b1.conv1.in_channels == b1.conv2.out_channels == b1.bn2.num_features == 384
    assert pruned.backbone.fc.in_features == 384
    assert b1.conv1.out_channels == 512  # the block's inner channels are another group
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(pruned(images), silenced(images), rtol=0, atol=1e-5)


def test_group_importance_sums_every_producer(study_model: nn.Module) -> None:
    plan = Pruner(ratio=0.5, targets="backbone.layer4.0.downsample.0").plan(study_model, SMALL)
    layers = [study_model.get_submodule(name) for name in plan.groups[0].layers]
    total = sum(layer.weight.detach().abs().sum(dim=(1, 2, 3)).double() for layer in layers)
    expected = sorted(torch.argsort(total, descending=True)[:256].tolist())
    assert list(plan.groups[0].keep) == expected


def test_copy_by_default_and_inplace_on_request(
    study_model: nn.Module, study_plans: dict[float, PruningPlan]
) -> None:
    model = copy.deepcopy(study_model)
    before = {name: p for name, p in model.named_parameters()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = apply_plan(model, study_plans[0.2])
    assert pruned is not model
    assert all(p is before[name] for name, p in model.named_parameters())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    same = apply_plan(model, study_plans[0.2], inplace=True)
    assert same is model
    assert count_parameters(model) == 9_536_178


def test_plan_does_not_change_the_model_or_its_flags(study_model: nn.Module) -> None:
    model = copy.deepcopy(study_model).train()
    model.backbone.layer1.eval()
    flags = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    Pruner(ratio=0.2, targets=STUDY_TARGETS).plan(model, SMALL)
    assert [m.training for m in model.modules()] == flags
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_plan_round_trips_through_json(
    study_model: nn.Module, study_plans: dict[float, PruningPlan]
) -> None:
    plan = study_plans[0.2]
    again = PruningPlan.from_json(plan.to_json())
    assert again == plan
    assert count_parameters(apply_plan(study_model, again)) == 9_536_178


def test_summary_names_layers_and_totals(study_plans: dict[float, PruningPlan]) -> None:
    text = study_plans[0.2].summary()
    assert "backbone.layer4.0.conv1" in text and "backbone.layer4.1.conv1" in text
    assert "512   410      102" in text
    assert "parameters: 11,181,642 -> 9,536,178 (-14.7%)" in text
    assert "[1, 3, 32, 32]" in text
    assert str(study_plans[0.2]) == text


def test_kept_filters_agree_with_default_importance(
    study_model: nn.Module, study_plans: dict[float, PruningPlan]
) -> None:
    plan = study_plans[0.4]
    for group in plan.groups:
        conv = study_model.get_submodule(group.layers[0])
        norms = conv.weight.detach().abs().sum(dim=(1, 2, 3))
        assert norms[list(group.keep)].min() >= norms[list(group.removed)].max()
    assert l1_filter_norm is Pruner(ratio=0.1, targets="x").importance
