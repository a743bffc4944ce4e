"""The robust importances on attention heads: a head is gated where it is made (its value rows)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from pruning_cases import SelfAttention, tiny_swin, tiny_vit
from torch import Tensor, nn
from torchvision.models.swin_transformer import ShiftedWindowAttention

from advkit.attacks import FGSM, PGD
from advkit.pruning import LayerHandler, Pruner, PruningPlan
from advkit.pruning.graph import ChannelGroup
from advkit.recipes import (
    AdversarialTaylor,
    ChannelScores,
    RobustScoreLearner,
    ScoredNetwork,
    scaled_l1_init,
)
from advkit.training import MixedCE

EPS = 8 / 255
HEAD_TYPES = (nn.MultiheadAttention, ShiftedWindowAttention)


def vit() -> nn.Module:
    """The tiny ViT with a random classifier (torchvision zeroes it: no gradient would flow)."""
    model = tiny_vit()
    nn.init.normal_(model.heads.head.weight, std=0.5)
    return model


BUILDS = {"vit": vit, "swin": tiny_swin}


def head_layers(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, HEAD_TYPES)]


def head_groups(model: nn.Module, inputs: Tensor) -> tuple[PruningPlan, list[ChannelGroup]]:
    plan = Pruner(ratio=0.5, targets=head_layers(model)).plan(model, inputs[:1])
    return plan, [ChannelGroup(g.channels, g.uses) for g in plan.groups]


def images(n: int, size: int = 16, seed: int = 0) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def manual_attention_logits(model: SelfAttention, tokens: Tensor, gate: Tensor) -> Tensor:
    """SelfAttention's forward written out, each head's output multiplied by ``gate[h]``
    before the output projection: Molchanov's gate on the head, independent of advkit."""
    attention = model.attention
    heads, dim = attention.num_heads, attention.head_dim
    x = model.embed(tokens)  # [batch, seq, embed]
    q, k, v = F.linear(x, attention.in_proj_weight, attention.in_proj_bias).chunk(3, dim=-1)
    split = lambda t: t.unflatten(-1, (heads, dim)).transpose(1, 2)  # noqa: E731
    weights = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(dim), dim=-1)
    per_head = (weights @ split(v)) * gate.view(1, heads, 1, 1)
    joined = per_head.transpose(1, 2).flatten(-2)
    return model.head(attention.out_proj(joined).mean(-2))


def test_taylor_head_score_is_the_squared_gradient_of_a_gate_on_the_head_output() -> None:
    torch.manual_seed(0)
    model = SelfAttention().eval()
    tokens, labels = torch.rand(6, 5, 6), torch.tensor([0, 1, 2, 0, 1, 2])
    gate = torch.ones(4, requires_grad=True)
    loss = F.cross_entropy(manual_attention_logits(model, tokens, gate), labels)
    (expected,) = torch.autograd.grad(loss, gate)

    _, groups = head_groups(model, tokens)
    (scores,) = AdversarialTaylor(None, [(tokens, labels)], batches=1).scores(model, groups)
    torch.testing.assert_close(scores, expected.double().square(), rtol=1e-5, atol=1e-12)
    assert bool((scores > 0).all())


def value_gated_reference(model: nn.Module, inputs: Tensor, labels: Tensor) -> list[Tensor]:
    """Squared gradients of gates scaling each head's value rows, through torch.func."""
    params, gates = {}, []
    for name in head_layers(model):
        layer = model.get_submodule(name)
        if isinstance(layer, nn.MultiheadAttention):
            owner, dim, names = name, layer.head_dim, ["in_proj_weight", "in_proj_bias"]
        else:
            owner, dim, names = f"{name}.qkv", layer.qkv.in_features // layer.num_heads, ["weight"]
            names += ["bias"] if layer.qkv.bias is not None else []
        gate = torch.ones(layer.num_heads, requires_grad=True)
        width = layer.num_heads * dim
        for parameter in names:
            full = model.get_parameter(f"{owner}.{parameter}").detach()
            factor = gate.repeat_interleave(dim).view([-1] + [1] * (full.ndim - 1))
            params[f"{owner}.{parameter}"] = torch.cat(
                [full[: 2 * width], full[2 * width :] * factor]
            )
        gates.append(gate)
    loss = F.cross_entropy(torch.func.functional_call(model, params, (inputs,)), labels)
    return [g.double().square() for g in torch.autograd.grad(loss, gates)]


@pytest.mark.parametrize("name", list(BUILDS))
def test_adversarial_taylor_scores_vit_and_swin_heads(name: str) -> None:
    torch.manual_seed(0)
    model = BUILDS[name]().eval()
    inputs, labels = images(4)
    attack = FGSM(eps=EPS)
    _, groups = head_groups(model, inputs)
    state = copy.deepcopy(model.state_dict())
    parameters = [id(p) for p in model.parameters()]
    scores = AdversarialTaylor(attack, [(inputs, labels)], batches=1).scores(model, groups)

    expected = value_gated_reference(model, attack(model, inputs, labels), labels)
    for got, want in zip(scores, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-12)
        assert bool((got > 0).all())
    # The parametrizations are gone: same classes, same parameter objects, same values.
    assert all(type(model.get_submodule(layer)) in HEAD_TYPES for layer in head_layers(model))
    assert [id(p) for p in model.parameters()] == parameters
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", list(BUILDS))
def test_top_k_forward_equals_the_model_with_those_heads_pruned(name: str) -> None:
    torch.manual_seed(1)
    model = BUILDS[name]().eval()
    inputs, _ = images(3, seed=1)
    plan = Pruner(ratio=0.5, targets="*", strict=False).plan(model, inputs[:1])
    assert any(len(g.uses) == 1 and g.uses[0].module in head_layers(model) for g in plan.groups)
    groups = [ChannelGroup(g.channels, g.uses) for g in plan.groups]
    gen = torch.Generator().manual_seed(1)
    random = [torch.randn(g.channels, generator=gen, dtype=torch.float64) for g in groups]
    scores = ChannelScores(
        {g.producers: s.abs() for g, s in zip(groups, random, strict=True)}, name="random"
    )
    network = copy.deepcopy(model)
    classes = [type(m) for m in network.modules()]
    scored = ScoredNetwork(network, groups, [len(g.keep) for g in plan.groups], random)
    pruner = Pruner(ratio=0.5, targets="*", strict=False, importance=scores)
    pruned = pruner.apply(model, pruner.plan(model, inputs[:1]))
    with torch.no_grad():
        torch.testing.assert_close(scored(inputs), pruned(inputs), rtol=1e-5, atol=1e-5)
    scored.remove()
    assert [type(m) for m in network.modules()] == classes  # the parametrizations are gone


def test_learned_scores_rank_vit_heads_and_leave_the_model_untouched() -> None:
    torch.manual_seed(0)
    model = vit().eval()
    inputs, labels = images(8)
    loader = [(inputs[:4], labels[:4]), (inputs[4:], labels[4:])]
    state = copy.deepcopy(model.state_dict())
    plan, groups = head_groups(model, inputs)
    initial = [scaled_l1_init(model, g) for g in groups]
    # HYDRA's scale with the fan-in of a head's projections: the embedding width (16).
    assert all(math.isclose(float(s.max()), math.sqrt(6 / 16)) for s in initial)

    learner = RobustScoreLearner(loader, MixedCE(PGD(eps=EPS, steps=2), adv_weight=1.0), epochs=2)
    learned = learner.prepare(model, plan)
    after = [learned(g, model) for g in groups]
    assert any(not torch.allclose(a, b) for a, b in zip(after, initial, strict=True))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(
        type(model.get_submodule(layer)) is nn.MultiheadAttention for layer in head_layers(model)
    )


def test_a_heads_handler_that_does_not_say_where_values_are_made_is_a_clear_error() -> None:
    with pytest.raises(NotImplementedError, match="Linear's handler gives no head_values"):
        LayerHandler().head_values(nn.Linear(2, 2))
    with pytest.raises(NotImplementedError, match="Linear's handler gives no head_dim"):
        LayerHandler().head_dim(nn.Linear(2, 2))
