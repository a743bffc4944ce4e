"""Bad input gets a clear error, and the caller's model is left exactly as it was."""

from __future__ import annotations

import copy

import pytest
import torch
from pruning_cases import VGGStyle, WithGroups, WithUnknownOp
from torch import nn
from torch.nn.utils import prune as torch_prune

from advkit.models import resnet18
from advkit.pruning import Pruner, PruningPlan, apply_plan

SMALL = torch.rand(1, 3, 32, 32)


def snapshot(model: nn.Module) -> tuple[list[tuple[str, int, torch.Tensor]], list[bool]]:
    return (
        [(name, id(t), t.detach().clone()) for name, t in model.state_dict(keep_vars=True).items()],
        [m.training for m in model.modules()],
    )


def assert_untouched(model: nn.Module, before) -> None:
    state, flags = before
    now = model.state_dict(keep_vars=True)
    assert [name for name, _, _ in state] == list(now)
    for name, ident, value in state:
        assert id(now[name]) == ident and torch.equal(now[name].detach(), value), name
    assert [m.training for m in model.modules()] == flags


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    return resnet18(num_classes=10).train()


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, float("nan"), float("inf")])
def test_ratio_outside_unit_interval(ratio: float) -> None:
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\), got"):
        Pruner(ratio=ratio, targets="conv")


@pytest.mark.parametrize("ratio", ["0.2", None, True])
def test_ratio_of_wrong_type(ratio) -> None:
    with pytest.raises(TypeError, match="ratio must be a float, got"):
        Pruner(ratio=ratio, targets="conv")


@pytest.mark.parametrize(
    ("targets", "error", "message"),
    [
        ("", ValueError, "targets must be non-empty patterns"),
        ([], ValueError, "targets must be non-empty patterns"),
        (["a", ""], ValueError, "targets must be non-empty patterns"),
        (3, TypeError, "targets must be a string or a sequence of strings, got 3"),
        (["a", 1], TypeError, "targets must be a string or a sequence"),
    ],
)
def test_bad_targets(targets, error, message: str) -> None:
    with pytest.raises(error, match=message):
        Pruner(ratio=0.2, targets=targets)


def test_importance_must_be_callable() -> None:
    with pytest.raises(TypeError, match="importance must be callable, got str"):
        Pruner(ratio=0.2, targets="x", importance="l1")


def test_pattern_matching_nothing(resnet: nn.Module) -> None:
    before = snapshot(resnet)
    with pytest.raises(ValueError, match=r"'backbone\.layer5\.\*\.conv1' matches no module"):
        Pruner(ratio=0.2, targets=["backbone.layer4.*.conv1", "backbone.layer5.*.conv1"]).plan(
            resnet, SMALL
        )
    assert_untouched(resnet, before)


def test_pattern_hints_close_names(resnet: nn.Module) -> None:
    with pytest.raises(ValueError, match=r"close names: \['backbone\.layer4\.0\.conv1'"):
        Pruner(ratio=0.2, targets="layer4.0.conv1").plan(resnet, SMALL)


def test_pattern_matching_only_batchnorm(resnet: nn.Module) -> None:
    with pytest.raises(ValueError, match="matches no conv, linear or attention layer, only"):
        Pruner(ratio=0.2, targets="backbone.layer4.*.bn1").plan(resnet, SMALL)


def test_output_layer_cannot_be_pruned(resnet: nn.Module) -> None:
    before = snapshot(resnet)
    with pytest.raises(
        ValueError, match=r"backbone\.fc: its channels are frozen: .*model's output"
    ):
        Pruner(ratio=0.2, targets=["backbone.layer4.0.conv1", "backbone.fc"]).plan(resnet, SMALL)
    assert_untouched(resnet, before)


@pytest.mark.parametrize(
    ("model", "targets", "message"),
    [
        (WithUnknownOp(), "left", r"left: its channels are frozen: function cumsum\(\)"),
        (WithGroups(4), "conv", r"conv: .*grouped convolution \(groups=2\) from 8 to 4"),
        (WithGroups(4), "grouped", r"grouped: module 'grouped' \(Conv2d\): grouped convolution"),
    ],
)
def test_layer_that_cannot_be_pruned(model: nn.Module, targets: str, message: str) -> None:
    before = snapshot(model)
    with pytest.raises(ValueError, match=message):
        Pruner(ratio=0.5, targets=targets).plan(model, torch.rand(1, 3, 8, 8))
    assert_untouched(model, before)


def test_non_strict_skips_and_reports() -> None:
    model = WithUnknownOp()
    plan = Pruner(ratio=0.5, targets=["left", "mixed"], strict=False).plan(
        model, torch.rand(1, 3, 8, 8)
    )
    assert plan.kept_filters() == {"mixed": 2}
    assert [name for name, _ in plan.skipped] == ["left"]
    assert "cumsum()" in plan.skipped[0][1]
    assert "skipped left:" in plan.summary()
    with pytest.raises(ValueError, match="none of the target layers can be pruned"):
        Pruner(ratio=0.5, targets="left", strict=False).plan(model, torch.rand(1, 3, 8, 8))


def test_layer_unused_in_forward() -> None:
    model = VGGStyle()
    model.spare = nn.Conv2d(3, 3, 1)
    with pytest.raises(ValueError, match="spare: the layer does not run in the forward pass"):
        Pruner(ratio=0.5, targets="spare").plan(model, torch.rand(1, 3, 16, 16))


def test_model_with_torch_prune_mask() -> None:
    model = VGGStyle()
    torch_prune.l1_unstructured(model.features[0], "weight", amount=0.5)
    with pytest.raises(ValueError, match="carries a pruning mask or parametrization"):
        Pruner(ratio=0.5, targets="features.0").plan(model, torch.rand(1, 3, 16, 16))


def test_bad_model_and_inputs() -> None:
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module, got dict"):
        Pruner(ratio=0.5, targets="x").plan({}, SMALL)
    with pytest.raises(TypeError, match="example_inputs must be a tensor or a non-empty sequence"):
        Pruner(ratio=0.5, targets="features.0").plan(VGGStyle(), [])


def test_apply_rejects_a_plan_for_another_model() -> None:
    plan = Pruner(ratio=0.5, targets="features.0").plan(VGGStyle(width=8), torch.rand(1, 3, 16, 16))
    other = VGGStyle(width=6)
    before = snapshot(other)
    with pytest.raises(ValueError, match=r"plan does not fit layer 'features\.0': Conv2d has 6"):
        apply_plan(other, plan, inplace=True)
    assert_untouched(other, before)
    with pytest.raises(ValueError, match=r"plan names layer 'features\.0', which the model lacks"):
        apply_plan(nn.Sequential(), plan)
    with pytest.raises(TypeError, match="plan must be a PruningPlan, got dict"):
        apply_plan(other, plan.to_dict())


def test_apply_rejects_bad_indices() -> None:
    model = VGGStyle(width=8)
    plan = Pruner(ratio=0.5, targets="features.0").plan(model, torch.rand(1, 3, 16, 16))
    data = plan.to_dict()
    for keep in ([], [3, 1], [0, 8], [2, 2]):
        data["groups"][0]["keep"] = keep
        with pytest.raises(ValueError, match="keep must be distinct increasing indices"):
            apply_plan(model, PruningPlan.from_dict(copy.deepcopy(data)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format="other"), "expected a mapping with format"),
        (lambda d: d.update(version=9), "expected plan version 1 or 2, got 9"),
        (lambda d: d.pop("groups"), "pruning plan field groups is missing"),
        (lambda d: d.update(params_after="many"), "params_after must be an integer >= 0"),
        (
            lambda d: d["groups"][0]["uses"][0].update(role="side"),
            r"groups\[0\]\.uses\[0\]\.role must be 'out', 'through' or 'in', got 'side'",
        ),
    ],
)
def test_malformed_plan_data(change, message: str) -> None:
    plan = Pruner(ratio=0.5, targets="features.0").plan(VGGStyle(), torch.rand(1, 3, 16, 16))
    data = plan.to_dict()
    change(data)
    with pytest.raises(ValueError, match=message):
        PruningPlan.from_dict(data)
    with pytest.raises(ValueError, match="must be valid JSON"):
        PruningPlan.from_json("{not json")
