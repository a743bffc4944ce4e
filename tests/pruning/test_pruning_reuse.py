"""Pruner.prune: plan and apply in one step, returning the pruned copy the plan checked."""

from __future__ import annotations

import pytest
import torch
from pruning_cases import VGGStyle, randomize_batchnorm
from torch import nn

from advkit.models import resnet18
from advkit.pruning import Pruner, count_flops, count_parameters

X = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _same(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    assert [m.training for m in a.modules()] == [m.training for m in b.modules()]
    assert [p.requires_grad for p in a.parameters()] == [p.requires_grad for p in b.parameters()]


def test_prune_equals_plan_then_apply_and_leaves_the_model() -> None:
    for build in (VGGStyle, lambda: resnet18(num_classes=4)):
        torch.manual_seed(0)
        model = randomize_batchnorm(build()).train()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        pruner = Pruner(ratio=0.4, targets="*", strict=False)
        pruned, plan = pruner.prune(model, X)
        assert plan == pruner.plan(model, X)
        _same(pruned, pruner.apply(model, plan))
        assert count_parameters(pruned) == plan.params_after < plan.params_before
        assert count_flops(pruned, X) == plan.flops_after
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        model_tensors = {id(t) for t in (*model.parameters(), *model.buffers())}
        assert not model_tensors & {id(t) for t in (*pruned.parameters(), *pruned.buffers())}


def test_prune_rejects_bad_input_and_leaves_the_model() -> None:
    model = VGGStyle()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module, got str"):
        Pruner(ratio=0.4, targets="*").prune("model", X)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target pattern 'nowhere' matches no module"):
        Pruner(ratio=0.4, targets="nowhere").prune(model, X)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
