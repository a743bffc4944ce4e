"""Issue 26, pruning side: crafted plans, plans for another model, tied weights, lying
statistics, NaN weights and crafted sizes are refused with a clear error (or a warning)
instead of a wrong result. Each test failed before its fix."""

from __future__ import annotations

import copy
import io
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from pruning_cases import (
    DepthwiseSeparable,
    SharedConv,
    VGGStyle,
    WithConcat,
    WithGroups,
    tiny_swin,
    tiny_vit,
)
from torch import Tensor, nn

from advkit.attacks import PGD
from advkit.pruning import (
    Pruner,
    PruningPlan,
    analyze,
    apply_plan,
    count_parameters,
    load_pruned,
    normalize_scores,
    resize_layer,
    save_pruned,
)
from advkit.pruning.apply import plan_slices, predicted_parameters
from advkit.recipes import AdversarialTaylor, robust_prune

SMALL = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def conv_bn(width: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, width, 3), nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, 4, 3)
    )


def plan_data() -> dict[str, Any]:
    return Pruner(ratio=0.5, targets="0").plan(conv_bn(), SMALL).to_dict()


# -- 7: a plan is checked against the model it is applied to ----------------------------------


def test_a_plan_for_a_narrower_conv_is_refused_not_half_applied() -> None:
    plan = Pruner(ratio=0.5, targets="0").plan(conv_bn(8), SMALL)
    wider = conv_bn(16)
    before = {k: v.clone() for k, v in wider.state_dict().items()}
    # Before: Conv2d(3, 12) came back while the plan says keep 4.
    with pytest.raises(ValueError, match=r"plan group 0 \(\['0'\]\) has 8 channels, but .* 16"):
        apply_plan(wider, plan, inplace=True)
    assert all(torch.equal(v, before[k]) for k, v in wider.state_dict().items())


# -- 8: crafted plan JSON is validated against the model before anything changes -------------


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["groups"][0]["uses"].pop(1), r"uses the plan lacks \[1:through\]"),
        (lambda d: d["groups"][0]["uses"].pop(2), r"uses the plan lacks \[3:in\]"),
        (
            lambda d: d["groups"][0]["uses"][2].update(index=[0, 1, 2]),
            r"uses the model lacks \[3:in\[index of 3\]\]",
        ),
        (
            lambda d: d["groups"][0]["uses"][0].update(module="0.weight"),
            "no group of channels created by '0.weight'",
        ),
    ],
    ids=["no-batchnorm", "no-reader", "short-index", "parameter-name"],
)
def test_crafted_plan_json_is_refused_before_mutating(
    edit: Callable[[dict[str, Any]], Any], message: str
) -> None:
    data = plan_data()
    edit(data)
    plan = PruningPlan.from_json(json.dumps(data))
    model = conv_bn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        apply_plan(model, plan, inplace=True)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_the_genuine_plan_still_applies_and_runs() -> None:
    plan = PruningPlan.from_json(json.dumps(plan_data()))
    pruned = apply_plan(conv_bn(), plan)
    assert pruned[0].out_channels == 4 and pruned(SMALL).shape == (1, 4, 4, 4)


class TokenModel(nn.Module):
    """Reads token ids: checking a plan must run it on integer inputs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(10, 8)
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 2)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.fc2(torch.relu(self.fc1(self.emb(tokens)))).mean(1)


def test_a_plan_for_a_model_of_token_ids_still_applies() -> None:
    model, tokens = TokenModel(), torch.randint(0, 10, (1, 5))
    pruned, plan = Pruner(ratio=0.5, targets="fc1").prune(model, tokens)
    again = apply_plan(model, PruningPlan.from_json(plan.to_json()))
    torch.testing.assert_close(again(tokens), pruned(tokens))


# -- 9: plan statistics are verified, not trusted ------------------------------------------------


def test_a_group_without_uses_is_refused_not_reported_as_pruned() -> None:
    data = plan_data()
    data["groups"][0]["uses"] = []
    with pytest.raises(ValueError, match=r"groups\[0\]\.uses must hold an 'out' use"):
        PruningPlan.from_dict(data)


def test_edited_parameter_counts_are_refused() -> None:
    data = plan_data()
    data["params_after"] = 1  # printed "532 -> 1 (-99.8%)" before
    plan = PruningPlan.from_dict(data)
    with pytest.raises(ValueError, match="the plan says 1 parameters remain, the pruned model has"):
        apply_plan(conv_bn(), plan)
    data["params_after"] = data["params_before"] + 1
    with pytest.raises(ValueError, match=r"params_after .* must not exceed params_before"):
        PruningPlan.from_dict(data)
    model = conv_bn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="the plan says 1 parameters remain"):
        apply_plan(model, plan, inplace=True)  # predicted before slicing: nothing changed
    assert model[0].out_channels == 8
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    genuine = PruningPlan.from_dict(plan_data())
    assert apply_plan(model, genuine, inplace=True) is model and model[0].out_channels == 4
    data = plan_data()
    data["params_before"] += 5
    with pytest.raises(ValueError, match="the plan was made for a model of 537 parameters"):
        apply_plan(conv_bn(), PruningPlan.from_dict(data))


@pytest.mark.parametrize(
    "make", [VGGStyle, DepthwiseSeparable, WithConcat, WithGroups, SharedConv, tiny_vit, tiny_swin]
)
def test_the_in_place_count_is_predicted_exactly(make: Callable[[], nn.Module]) -> None:
    model, images = make().eval(), torch.rand(1, 3, 16, 16)
    plan = Pruner(ratio=0.3, targets="*", strict=False).plan(model, images)
    predicted = predicted_parameters(model, plan_slices(model, plan))
    assert predicted == plan.params_after
    assert count_parameters(apply_plan(model, plan, inplace=True)) == predicted


# -- 6: tied weights ----------------------------------------------------------------------------


class Tied(nn.Module):
    """``d`` shares ``b``'s weight (``d.weight = b.weight``); ``e`` reads both."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(3, 3, 1)
        self.b = nn.Conv2d(3, 8, 3, padding=1)
        self.d = nn.Conv2d(3, 8, 3, padding=1)
        self.d.weight = self.b.weight
        self.e = nn.Conv2d(16, 8, 1)
        self.c = nn.Conv2d(8, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.a(x)
        return self.c(self.e(torch.cat([self.b(x), self.d(x)], 1)))


def test_tied_layers_are_frozen_with_the_reason() -> None:
    graph = analyze(Tied(), SMALL)
    assert graph.group_of("b").frozen == ("'b.weight' is tied to 'd.weight' (a shared tensor)",)
    # Before: b got a (4, 3, 3, 3) weight while d kept (8, 3, 3, 3).
    with pytest.raises(ValueError, match=r"b: its channels are frozen: 'b\.weight' is tied"):
        Pruner(ratio=0.5, targets="b").plan(Tied(), SMALL)


def test_ties_survive_pruning_and_save_load(tmp_path: Path) -> None:
    model = Tied()
    pruned, plan = Pruner(ratio=0.5, targets="*", strict=False).prune(model, SMALL)
    assert plan.kept_filters() == {"e": 4}
    assert pruned.d.weight is pruned.b.weight
    assert model.d.weight is model.b.weight  # the original is untouched
    save_pruned(pruned, tmp_path / "tied.pt")
    loaded = load_pruned(tmp_path / "tied.pt", Tied())
    assert loaded.d.weight is loaded.b.weight  # re-tied after resizing
    with torch.no_grad():
        torch.testing.assert_close(loaded(SMALL), pruned(SMALL))


def test_a_file_with_different_tensors_for_tied_weights_is_refused() -> None:
    untied = Tied()
    untied.d.weight = nn.Parameter(untied.b.weight.detach() + 1)
    buffer = io.BytesIO()
    save_pruned(untied, buffer)
    buffer.seek(0)
    with pytest.raises(ValueError, match=r"the architecture ties \['b\.weight', 'd\.weight'\]"):
        load_pruned(buffer, Tied())


# -- 10, 11, 12 ----------------------------------------------------------------------------------


def test_adversarial_taylor_warns_when_every_score_is_zero() -> None:
    model = conv_bn()
    with torch.no_grad():
        model[3].weight.zero_()  # nothing reaches the loss through the first conv's channels
    data = [(torch.rand(4, 3, 8, 8), torch.randint(0, 4, (4,)))]
    taylor = AdversarialTaylor(None, data, batches=1)

    class Pooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, x: Tensor) -> Tensor:
            return self.net(x).mean(dim=(2, 3))

    with pytest.warns(
        UserWarning, match=r"scored every channel 0 in 1 group\(s\) \(first \['net\.0'\]"
    ):
        Pruner(ratio=0.5, targets="net.0", importance=taylor).plan(Pooled(), SMALL)


def test_robust_prune_refuses_an_attack_without_a_loader() -> None:
    with pytest.raises(ValueError, match="eval_attack needs eval_loader"):
        robust_prune(conv_bn(), SMALL, ratio=0.5, targets="0", eval_attack=PGD(eps=0.01, steps=1))


@pytest.mark.parametrize("method", ["mean", "lamp"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_normalize_scores_refuses_non_finite_scores(method: str, bad: float) -> None:
    # Before: tensor([1., nan]) normalized by the mean gave [1., 1.].
    with pytest.raises(ValueError, match="scores must be finite to normalize"):
        normalize_scores(torch.tensor([1.0, bad]), method)  # type: ignore[arg-type]


# -- 13: NaN weights are not saved or loaded ------------------------------------------------------


def test_save_and_load_pruned_refuse_nan_weights(tmp_path: Path) -> None:
    model = conv_bn()
    with torch.no_grad():
        model[1].running_var[2] = float("nan")
    path = tmp_path / "nan.pt"
    with pytest.raises(ValueError, match=r"refusing to write .*nan\.pt.*1 model tensors hold NaN"):
        save_pruned(model, path)
    assert not path.exists()
    # A file crafted with NaN (written directly, as an older advkit allowed) is refused.
    payload = {
        "format": "advkit.pruned_model",
        "version": 1,
        "shapes": {},
        "state_dict": dict(model.state_dict()),
    }
    torch.save(payload, path)
    with pytest.raises(ValueError, match=r"refusing to load .*nan\.pt.*1\.running_var"):
        load_pruned(path, conv_bn())


# -- crafted sizes ------------------------------------------------------------------------------


def test_crafted_plan_sizes_are_refused_before_allocating() -> None:
    data = plan_data()
    data["groups"][0]["uses"][2]["expansion"] = 10**9
    with pytest.raises(ValueError, match=r"expansion must be at most 16777216, got 1000000000"):
        PruningPlan.from_dict(data)
    data = plan_data()
    data["groups"][0]["channels"] = 2**40
    with pytest.raises(ValueError, match=r"channels must be at most 16777216"):
        PruningPlan.from_dict(data)
    data = plan_data()
    data["flops_before"] = 10**5000
    with pytest.raises(ValueError, match=r"flops_before must be at most \d+, got an integer of"):
        PruningPlan.from_dict(data)
    text = json.dumps(plan_data()).replace('"ratio": 0.5', '"ratio": ' + "9" * 5000)
    with pytest.raises(ValueError, match="holds a number too large to read"):
        PruningPlan.from_json(text)
    data = plan_data()
    data["input_shapes"] = [[1, 3, 2**20, 2**20]]
    with pytest.raises(ValueError, match="above the limit of 268435456 for checking a plan"):
        apply_plan(conv_bn(), PruningPlan.from_dict(data))


def test_crafted_layer_sizes_are_refused_before_allocating() -> None:
    with pytest.raises(ValueError, match=r"layer sizes must be at most 16777216"):
        resize_layer(nn.LayerNorm(4), {"type": "LayerNorm", "normalized_shape": 2**40})
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4, elementwise_affine=False))
    buffer = io.BytesIO()
    save_pruned(model, buffer)
    payload = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    payload["shapes"]["1"]["normalized_shape"] = 2**40
    del payload["checksum"]
    payload["version"] = 1
    crafted = io.BytesIO()
    torch.save(payload, crafted)
    crafted.seek(0)
    with pytest.raises(ValueError, match=r"layer '1' sizes must be at most 16777216"):
        load_pruned(crafted, copy.deepcopy(model))
    payload["shapes"]["1"]["normalized_shape"] = 5  # an affine LayerNorm is checked too
    affine = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    payload["state_dict"].update({"1.weight": torch.ones(4), "1.bias": torch.zeros(4)})
    crafted = io.BytesIO()
    torch.save(payload, crafted)
    crafted.seek(0)
    with pytest.raises(ValueError, match=r"ask for 1\.weight of shape \[5\]"):
        load_pruned(crafted, affine)


# -- torch.jit.script on head-pruned models -------------------------------------------------------


class WithAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.attn = nn.MultiheadAttention(8, 4, batch_first=True)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.attn(x, x, x, need_weights=False)[0].mean(1))


def _scripted(model: nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
        return torch.jit.script(model)


def test_head_pruned_multihead_attention_scripts() -> None:
    tokens = torch.rand(2, 5, 8)
    pruned, _ = Pruner(ratio=0.5, targets="attn").prune(WithAttention().eval(), tokens)
    assert type(pruned.attn).__name__ == "NarrowMultiheadAttention"
    scripted = _scripted(pruned)
    torch.testing.assert_close(scripted(tokens), pruned(tokens))
    mask = torch.tensor([[False, False, True, False, True]] * 2)
    args = (tokens, tokens, tokens, mask)
    torch.testing.assert_close(scripted.attn(*args)[0], pruned.attn(*args)[0])


def test_head_pruned_swin_scripts() -> None:
    images = torch.rand(1, 3, 16, 16)
    pruned, _ = Pruner(ratio=0.5, targets="*attn*", strict=False).prune(tiny_swin().eval(), images)
    assert any(type(m).__name__ == "NarrowShiftedWindowAttention" for m in pruned.modules())
    torch.testing.assert_close(_scripted(pruned)(images), pruned(images))
