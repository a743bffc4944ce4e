"""count_flops on attention layers, whose projections run functionally (no Linear hook fires)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from advkit.pruning import NarrowMultiheadAttention, Pruner, count_flops


def reference_macs(model: nn.Module, x: torch.Tensor) -> int:
    """torch's own FLOP counter (2 FLOPs per multiply-add) over one eval-mode pass."""
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


class SelfAttention(nn.Module):
    def __init__(self, attention: nn.MultiheadAttention) -> None:
        super().__init__()
        self.attention = attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x, x, x, need_weights=False)[0]


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64,
        num_classes=10,
    )  # fmt: skip


def tiny_swin() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
        num_classes=10,
    )  # fmt: skip


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_macs_follow_the_formula(batch_first: bool) -> None:
    n, length, embed = 2, 5, 16
    model = SelfAttention(nn.MultiheadAttention(embed, 4, batch_first=batch_first))
    x = torch.rand(n, length, embed) if batch_first else torch.rand(length, n, embed)
    # q, k, v and output projections (4 L E^2) and Q K^T, weights V (2 L^2 E), per sample.
    expected = n * (4 * length * embed * embed + 2 * length * length * embed)
    assert count_flops(model, x) == expected


def test_narrow_attention_macs_equal_torch_counter() -> None:
    # The narrow layer computes with explicit matmuls, which torch's counter sees whole.
    # Two heads of 4 kept of an embedding of 16: internal width 8.
    attention = nn.MultiheadAttention(16, 4, batch_first=True)
    attention.in_proj_weight = nn.Parameter(torch.rand(3 * 8, 16))
    attention.in_proj_bias = nn.Parameter(torch.rand(3 * 8))
    attention.out_proj = nn.Linear(8, 16)
    attention.num_heads, attention.head_dim = 2, 4
    attention.__class__ = NarrowMultiheadAttention
    model, x = SelfAttention(attention), torch.rand(3, 6, 16)
    assert count_flops(model, x) == reference_macs(model, x) == 3 * (6 * 16 * 8 * 4 + 2 * 36 * 8)


@pytest.mark.parametrize("build", [tiny_vit, tiny_swin], ids=["vit", "swin"])
def test_pruned_transformers_count_like_torch_and_the_plan(build) -> None:
    model, x = build(), torch.rand(2, 3, 32, 32)
    pruned, plan = Pruner(ratio=0.5, targets="*", strict=False).prune(model, x)
    macs = count_flops(pruned, x)
    assert macs == reference_macs(pruned, x) == plan.flops_after
    assert plan.flops_after < plan.flops_before == count_flops(model, x)


def test_swin_macs_equal_torch_counter() -> None:
    model, x = tiny_swin(), torch.rand(2, 3, 32, 32)
    assert count_flops(model, x) == reference_macs(model, x)
