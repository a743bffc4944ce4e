"""Which filters stay: the L1 criterion, agreement with torch.nn.utils.prune, ties, rounding."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from advkit.pruning import ChannelGroup, ChannelUse, Pruner, batchnorm_scale, l1_filter_norm


def two_convs(channels: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, channels, 3), nn.ReLU(), nn.Conv2d(channels, 2, 1), nn.Flatten(1)
    )


def test_l1_norm_is_sum_of_absolute_kernel_weights() -> None:
    conv = nn.Conv2d(2, 3, 2)
    group = ChannelGroup(3, (ChannelUse("", "out"),))
    expected = torch.stack([conv.weight[i].abs().sum() for i in range(3)])
    torch.testing.assert_close(l1_filter_norm(group, conv), expected.detach())


@given(
    channels=st.integers(2, 40),
    ratio=st.floats(0.0, 0.99, allow_nan=False),
    seed=st.integers(0, 2**16),
)
def test_kept_filters_match_torch_ln_structured(channels: int, ratio: float, seed: int) -> None:
    model = two_convs(channels, seed)
    plan = Pruner(ratio=ratio, targets="0").plan(model, torch.rand(1, 3, 5, 5))
    reference = copy.deepcopy(model[0])
    assume(round(ratio * channels) < channels)  # torch would prune every filter; advkit keeps one
    torch_prune.ln_structured(reference, "weight", amount=ratio, n=1, dim=0)
    mask = reference.weight_mask.flatten(1).any(dim=1)
    assert plan.groups[0].keep == tuple(torch.nonzero(mask).flatten().tolist())


@given(channels=st.integers(1, 64), ratio=st.floats(0.0, 0.999, allow_nan=False))
def test_removed_count_is_rounded_ratio_but_never_all(channels: int, ratio: float) -> None:
    model = two_convs(channels, 0)
    plan = Pruner(ratio=ratio, targets="0").plan(model, torch.rand(1, 3, 5, 5))
    assert len(plan.groups[0].removed) == min(round(ratio * channels), channels - 1)
    assert len(plan.groups[0].keep) >= 1


def test_ties_go_to_the_lower_index() -> None:
    model = two_convs(6, 0)
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([2.0, 1.0, 1.0, 2.0, 1.0, 3.0]).view(6, 1, 1, 1))
    plan = Pruner(ratio=0.5, targets="0").plan(model, torch.rand(1, 3, 5, 5))
    assert plan.groups[0].keep == (0, 3, 5)
    plan = Pruner(ratio=1 / 3, targets="0").plan(model, torch.rand(1, 3, 5, 5))
    assert plan.groups[0].keep == (0, 1, 3, 5)


def test_custom_importance_decides() -> None:
    def prefer_last(group: ChannelGroup, model: nn.Module) -> Tensor:
        return torch.arange(group.channels, dtype=torch.float32)

    plan = Pruner(ratio=0.5, targets="0", importance=prefer_last).plan(
        two_convs(8, 0), torch.rand(1, 3, 5, 5)
    )
    assert plan.groups[0].keep == (4, 5, 6, 7)


def test_batchnorm_scale_keeps_largest_gammas() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1), nn.Flatten())
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.1, -2.0, 0.5, 1.0]))
    plan = Pruner(ratio=0.5, targets="0", importance=batchnorm_scale).plan(
        model, torch.rand(1, 3, 2, 2)
    )
    assert plan.groups[0].keep == (1, 3)


def test_batchnorm_scale_needs_a_batchnorm() -> None:
    with pytest.raises(ValueError, match="needs an affine BatchNorm"):
        Pruner(ratio=0.5, targets="0", importance=batchnorm_scale).plan(
            two_convs(4, 0), torch.rand(1, 3, 5, 5)
        )


@pytest.mark.parametrize(
    ("scores", "error", "message"),
    [
        (lambda c: torch.ones(c + 1), ValueError, r"one score per channel, shape \[6\], got \[7\]"),
        (lambda c: torch.full((c,), float("nan")), ValueError, "non-finite scores"),
        (lambda c: [1.0] * c, TypeError, "must return a tensor, got list"),
    ],
)
def test_bad_importance_output_is_rejected(scores, error, message: str) -> None:
    model = two_convs(6, 0)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def importance(group: ChannelGroup, model: nn.Module):
        return scores(group.channels)

    with pytest.raises(error, match=message):
        Pruner(ratio=0.5, targets="0", importance=importance).plan(model, torch.rand(1, 3, 5, 5))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
