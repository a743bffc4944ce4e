"""Whole attention heads: nn.MultiheadAttention (ViT) and torchvision's Swin window attention."""

from __future__ import annotations

import copy

import pytest
import torch
from pruning_cases import SelfAttention, tiny_swin, tiny_vit
from torch import nn
from torchvision.models.swin_transformer import ShiftedWindowAttention

from advkit.pruning import (
    NarrowMultiheadAttention,
    NarrowShiftedWindowAttention,
    Pruner,
    PruningPlan,
    apply_plan,
    count_parameters,
    l1_filter_norm,
    load_pruned,
    save_pruned,
    slice_layer,
)


def attentions(model: nn.Module) -> dict[str, nn.Module]:
    kinds = (nn.MultiheadAttention, ShiftedWindowAttention)
    return {name: m for name, m in model.named_modules() if isinstance(m, kinds)}


def silence_heads(model: nn.Module, plan: PruningPlan) -> nn.Module:
    """Zero the output projection's columns of every removed head, in place: the unpruned
    layer (torch's or torchvision's own code) then computes without those heads."""
    with torch.no_grad():
        for group in plan.groups:
            (use,) = group.uses
            layer = model.get_submodule(use.module)
            proj = layer.out_proj if isinstance(layer, nn.MultiheadAttention) else layer.proj
            dim = proj.in_features // group.channels
            for head in group.removed:
                proj.weight[:, head * dim : (head + 1) * dim] = 0.0
    return model


BUILDS = {
    "mha": (SelfAttention, (2, 5, 6)),
    "mha-seq-first": (lambda: SelfAttention(batch_first=False), (5, 2, 6)),
    "vit": (tiny_vit, (2, 3, 16, 16)),
    "swin": (tiny_swin, (2, 3, 16, 16)),
}


@pytest.mark.parametrize("name", list(BUILDS))
def test_pruned_heads_equal_the_unpruned_model_without_them(name: str, tmp_path) -> None:
    build, shape = BUILDS[name]
    torch.manual_seed(0)
    model, inputs = build().eval(), torch.rand(shape)
    layers = list(attentions(model))
    plan = Pruner(ratio=0.5, targets=layers).plan(model, inputs)
    assert [use.module for g in plan.groups for use in g.uses] == layers
    pruned = apply_plan(model, plan)
    silent = silence_heads(copy.deepcopy(model), plan)
    with torch.no_grad():
        torch.testing.assert_close(pruned(inputs), silent(inputs), rtol=1e-5, atol=1e-5)
    assert count_parameters(pruned) == plan.params_after < plan.params_before

    for layer, group in zip(layers, plan.groups, strict=True):
        before, after = model.get_submodule(layer), pruned.get_submodule(layer)
        kept = len(group.keep)
        assert kept == group.channels - round(0.5 * group.channels) >= 1
        assert after.num_heads == kept
        if isinstance(before, nn.MultiheadAttention):
            assert isinstance(after, NarrowMultiheadAttention)
            width = kept * before.head_dim
            assert after.in_proj_weight.shape == (3 * width, before.embed_dim)
            assert after.out_proj.weight.shape == (before.embed_dim, width)
        else:
            assert isinstance(after, NarrowShiftedWindowAttention)
            width = kept * (before.qkv.in_features // before.num_heads)
            assert after.qkv.weight.shape == (3 * width, before.qkv.in_features)
            assert after.proj.weight.shape == (before.qkv.in_features, width)
            table = before.relative_position_bias_table[:, list(group.keep)]
            torch.testing.assert_close(after.relative_position_bias_table, table)

    assert PruningPlan.from_json(plan.to_json()) == plan
    torch.testing.assert_close(
        apply_plan(model, PruningPlan.from_json(plan.to_json()))(inputs), pruned(inputs)
    )
    save_pruned(pruned, tmp_path / "pruned.pt")
    loaded = load_pruned(tmp_path / "pruned.pt", build()).eval()
    assert {k: type(v) for k, v in attentions(loaded).items()} == {
        k: type(v) for k, v in attentions(pruned).items()
    }
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs), pruned(inputs))


def test_head_scores_are_l1_of_their_qkv_rows_and_projection_columns() -> None:
    torch.manual_seed(0)
    model = SelfAttention()
    plan = Pruner(ratio=0.5, targets="attention").plan(model, torch.rand(1, 5, 6))
    (group,) = plan.groups
    mha, dim = model.attention, 3
    expected = torch.stack(
        [
            sum(
                mha.in_proj_weight[p * 12 + h * dim : p * 12 + (h + 1) * dim].abs().sum()
                for p in range(3)
            )
            + mha.out_proj.weight[:, h * dim : (h + 1) * dim].abs().sum()
            for h in range(4)
        ]
    ).double()
    torch.testing.assert_close(l1_filter_norm(group, model).double(), expected, rtol=1e-6, atol=0)
    assert group.keep == tuple(sorted(expected.argsort(descending=True)[:2].tolist()))


@pytest.mark.parametrize("batch_first", [True, False])
def test_narrow_attention_takes_the_masks_of_nn_multihead_attention(batch_first: bool) -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(12, 4, batch_first=batch_first).eval()
    keep = torch.tensor([0, 2, 3])
    silent = copy.deepcopy(mha)
    with torch.no_grad():
        silent.out_proj.weight[:, 3:6] = 0.0  # head 1
    narrow = copy.deepcopy(mha)
    slice_layer(narrow, "out", keep)
    x = torch.rand(2, 5, 12) if batch_first else torch.rand(5, 2, 12)
    padding = torch.tensor([[False] * 4 + [True], [False] * 5])
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)
    additive = torch.randn(5, 5)
    for kwargs in (
        {},
        {"key_padding_mask": padding},
        {"attn_mask": causal},
        {"attn_mask": additive, "key_padding_mask": torch.zeros(2, 5).masked_fill(padding, -1e4)},
    ):
        torch.testing.assert_close(
            narrow(x, x, x, **kwargs)[0], silent(x, x, x, **kwargs)[0], rtol=1e-5, atol=1e-5
        )
    # Unbatched input, and attention weights averaged over the heads kept.
    out, weights = narrow(x[0] if batch_first else x[:, 0], x[0] if batch_first else x[:, 0],
                          x[0] if batch_first else x[:, 0])  # fmt: skip
    assert out.shape == (5, 12) and weights.shape == (5, 5)


def test_ratio_leaves_one_head_at_least_and_global_scope_too() -> None:
    model = SelfAttention()
    inputs = torch.rand(1, 5, 6)
    plan = Pruner(ratio=0.9, targets="attention").plan(model, inputs)
    assert len(plan.groups[0].keep) == 1
    plan = Pruner(ratio=0.9, targets="*", scope="global", floor=0.0, strict=False).plan(
        model, inputs
    )
    assert all(len(g.keep) >= 1 for g in plan.groups)


def test_projections_inside_attention_are_skipped_with_the_reason() -> None:
    plan = Pruner(ratio=0.5, targets="*", strict=False).plan(tiny_swin(), torch.rand(1, 3, 16, 16))
    reasons = dict(plan.skipped)
    assert "attention keeps its embedding width" in reasons["features.1.0.attn.proj"]
    assert "features.1.0.attn" in plan.kept_filters()
    with pytest.raises(ValueError, match="attention keeps its embedding width"):
        Pruner(ratio=0.5, targets="features.1.0.attn.qkv").plan(
            tiny_swin(), torch.rand(1, 3, 16, 16)
        )


def test_unsupported_attention_freezes_its_heads_with_the_reason() -> None:
    class KeyBias(SelfAttention):
        def __init__(self) -> None:
            super().__init__()
            self.attention = nn.MultiheadAttention(12, 4, add_bias_kv=True, batch_first=True)

    with pytest.raises(ValueError, match="add_bias_kv"):
        Pruner(ratio=0.5, targets="attention").plan(KeyBias(), torch.rand(1, 5, 6))
