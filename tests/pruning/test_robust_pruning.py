"""Robust pruning: adversarial Taylor scores, learned (HYDRA-style) scores, the iterative
schedule and the prune-and-fine-tune pipeline."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from pruning_cases import DepthwiseSeparable, SharedConv, VGGStyle, WithGroups, randomize_batchnorm
from torch import Tensor, nn

from advkit.attacks import FGSM, PGD
from advkit.pruning import Pruner, analyze
from advkit.pruning.graph import ChannelGroup, ChannelUse
from advkit.recipes import (
    AdversarialTaylor,
    ChannelScores,
    FineTune,
    RobustScoreLearner,
    ScoredNetwork,
    iterative_prune,
    plan_widths,
    robust_prune,
    scaled_l1_init,
)
from advkit.training import MixedCE
from conftest import blob_images, tiny_model

EPS = 8 / 255


class Residual(nn.Module):
    """``h`` is read by two convolutions whose outputs are summed: two readers, one group."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.left = nn.Conv2d(6, 5, 3, padding=1)
        self.right = nn.Conv2d(6, 5, 1)
        self.head = nn.Linear(5, 4)

    def forward(self, inputs: Tensor) -> Tensor:
        h = torch.relu(self.bn(self.stem(inputs)))
        return self.rest(h)

    def rest(self, h: Tensor) -> Tensor:
        x = torch.relu(self.left(h) + self.right(h))
        return self.head(x.mean((2, 3)))


def _loader(n: int = 16, batch_size: int = 8, seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    images, labels = blob_images(n, seed=seed)
    return [
        (images[i : i + batch_size], labels[i : i + batch_size]) for i in range(0, n, batch_size)
    ]


def _hand_taylor(model: nn.Module, head, tail, loader, attack) -> Tensor:
    """Molchanov et al. 2019, eq. 8 on a gate after the group: ``(sum a * dL/da)^2`` per
    channel for each batch's mean loss, averaged over batches; ``a = head(x_adv)``."""
    total = 0
    for inputs, labels in loader:
        adv = attack(model, inputs, labels)
        with torch.no_grad():
            a = head(adv)
        a.requires_grad_(True)
        loss = F.cross_entropy(tail(a), labels)
        (grad,) = torch.autograd.grad(loss, a)
        dims = (0, *range(2, a.ndim))
        total = total + (a * grad).double().sum(dims).square()
    return total / len(loader)


def test_taylor_equals_the_hand_computed_value_on_the_tiny_model() -> None:
    model = randomize_batchnorm(tiny_model(channels=4)).eval()
    loader = _loader()
    attack = FGSM(eps=EPS)
    graph = analyze(model, loader[0][0])
    taylor = AdversarialTaylor(attack, loader, batches=2)
    # Group of layer 0: read by conv 3 (after BatchNorm and ReLU).
    expected = _hand_taylor(model, model[:3], model[3:], loader, attack)
    torch.testing.assert_close(taylor(graph.group_of("0"), model), expected, rtol=1e-4, atol=1e-12)
    # Group of layer 3: read by the linear layer after pooling and flattening.
    expected = _hand_taylor(model, model[:8], model[8:], loader, attack)
    torch.testing.assert_close(taylor(graph.group_of("3"), model), expected, rtol=1e-4, atol=1e-12)


def test_taylor_sums_over_every_reader_of_the_group() -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm(Residual()).eval()
    loader = _loader()
    attack = FGSM(eps=EPS)
    group = analyze(model, loader[0][0]).group_of("stem")
    assert [u.module for u in group.uses if u.role == "in"] == ["left", "right"]
    expected = _hand_taylor(
        model, lambda x: torch.relu(model.bn(model.stem(x))), model.rest, loader, attack
    )
    torch.testing.assert_close(
        AdversarialTaylor(attack, loader, batches=2)(group, model), expected, rtol=1e-4, atol=1e-12
    )


def test_taylor_on_flattened_channels_and_prepare_agree_with_per_group_calls() -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm(VGGStyle()).eval()
    images, labels = blob_images(8, size=16)
    loader = [(images, labels)]
    taylor = AdversarialTaylor(PGD(eps=EPS, steps=2, random_start=False), loader, batches=1)
    plan = Pruner(ratio=0.5, targets="features.*").plan(model, images[:1])
    prepared = taylor.prepare(model, plan)
    last = next(g for g in plan.groups if "features.8" in g.layers)  # read by the linear layer
    group = ChannelGroup(last.channels, last.uses)
    assert any(u.expansion == 4 for u in group.uses)
    # Channel c owns features 4c .. 4c+3 of the flattened map: sum their products, then square.
    adv = taylor.attack(model, images, labels)
    a = torch.flatten(model.features(adv), 1).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model.classifier(a), labels), a)
    per_channel = (a * grad).double().sum(0).view(-1, 4).sum(1).square()
    torch.testing.assert_close(prepared(group, model), per_channel, rtol=1e-4, atol=1e-12)
    for g in plan.groups:
        one = ChannelGroup(g.channels, g.uses)
        torch.testing.assert_close(prepared(one, model), taylor(one, model))


def test_taylor_leaves_the_model_unchanged() -> None:
    model = tiny_model().train()
    model[0].weight.requires_grad_(False)
    state = copy.deepcopy(model.state_dict())
    loader = _loader()
    AdversarialTaylor(PGD(eps=EPS, steps=2), loader).scores(
        model, analyze(model, loader[0][0]).groups[:2]
    )
    assert model.training and model[1].training
    assert not model[0].weight.requires_grad and model[3].weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


CASES = {
    "tiny": (lambda: tiny_model(channels=6), 8, ["0", "3"]),
    "residual": (Residual, 8, ["stem", "left"]),
    "vgg_flatten": (VGGStyle, 16, ["features.*"]),
    "depthwise": (DepthwiseSeparable, 8, ["expand", "project"]),
    "shared_conv": (SharedConv, 8, ["stem"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
@given(seed=st.integers(0, 2**16), ratio=st.sampled_from([0.2, 0.5, 0.7]))
def test_top_k_forward_equals_the_pruned_model(case: str, seed: int, ratio: float) -> None:
    build, size, targets = CASES[case]
    torch.manual_seed(seed % 7)
    model = randomize_batchnorm(build(), seed=seed).eval()
    inputs = torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(seed))
    draft = Pruner(ratio=ratio, targets=targets).plan(model, inputs[:1])
    gen = torch.Generator().manual_seed(seed)
    groups = [ChannelGroup(g.channels, g.uses) for g in draft.groups]
    random = [torch.randn(g.channels, generator=gen, dtype=torch.float64) for g in groups]
    scores = ChannelScores(
        {g.producers: s.abs() for g, s in zip(groups, random, strict=True)}, name="random"
    )
    scored = ScoredNetwork(
        copy.deepcopy(model), groups, [len(g.keep) for g in draft.groups], random
    )
    pruner = Pruner(ratio=ratio, targets=targets, importance=scores)
    pruned = pruner.apply(model, pruner.plan(model, inputs[:1]))
    with torch.no_grad():
        torch.testing.assert_close(scored(inputs), pruned(inputs), rtol=1e-5, atol=1e-5)


class GroupedNet(nn.Module):
    """A grouped (not depthwise) convolution between a stem and a prunable pointwise conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = WithGroups().conv  # 3 -> 8
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.pointwise = nn.Conv2d(8, 6, 1)
        self.bn = nn.BatchNorm2d(6)
        self.head = nn.Linear(6, 4)

    def forward(self, inputs: Tensor) -> Tensor:
        x = torch.relu(self.grouped(torch.relu(self.stem(inputs))))
        return self.head(torch.relu(self.bn(self.pointwise(x))).mean((2, 3)))


def test_a_grouped_convolution_is_pruned_robustly_with_equal_group_widths() -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm(GroupedNet()).eval()
    inputs, labels = blob_images(8)
    taylor = AdversarialTaylor(FGSM(eps=EPS), [(inputs, labels)], batches=1)
    pruned, schedule = iterative_prune(
        model, inputs[:1], ratio=0.5, targets=["stem", "grouped", "pointwise"],
        importance=taylor, steps=2,
    )  # fmt: skip
    assert schedule.final_widths == {"stem": 4, "pointwise": 3}  # grouped is in stem's group
    assert not schedule.steps[0].plan.skipped
    grouped = pruned.get_submodule("grouped")
    # Both groups keep the same width: 8 -> 4 channels in 2 groups of 2, in and out.
    assert grouped.groups == 2 and grouped.in_channels == grouped.out_channels == 4
    assert pruned(inputs).shape == (8, 4)


def test_learned_scores_leave_the_weights_untouched_and_match_the_pruned_forward() -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm(tiny_model(channels=6)).eval()
    model[3].weight.requires_grad_(False)
    images, labels = blob_images(32)
    loader = [(images[i : i + 8], labels[i : i + 8]) for i in range(0, 32, 8)]
    state = copy.deepcopy(model.state_dict())
    flags = [p.requires_grad for p in model.parameters()]
    objective = MixedCE(PGD(eps=EPS, steps=2), adv_weight=1.0)
    learner = RobustScoreLearner(loader, objective, epochs=2)
    plan = Pruner(ratio=0.5, targets=["0", "3"]).plan(model, images[:1])
    scores = learner.prepare(model, plan)

    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert [p.requires_grad for p in model.parameters()] == flags
    assert not model.training and all(p.grad is None for p in model.parameters())

    groups = [ChannelGroup(g.channels, g.uses) for g in plan.groups]
    initial = [scaled_l1_init(model, g) for g in groups]
    learned = [scores(g, model) for g in groups]
    assert any(not torch.allclose(a, b.abs()) for a, b in zip(learned, initial, strict=True))
    assert scores.seconds > 0

    scored = ScoredNetwork(
        copy.deepcopy(model), groups, [len(g.keep) for g in plan.groups], learned
    )
    pruner = Pruner(ratio=0.5, targets=["0", "3"], importance=scores)
    pruned = pruner.apply(model, pruner.plan(model, images[:1]))
    with torch.no_grad():
        torch.testing.assert_close(scored(images), pruned(images), rtol=1e-5, atol=1e-5)


def test_scored_network_trains_only_the_scores_in_eval_mode() -> None:
    model = randomize_batchnorm(tiny_model(channels=4)).eval()
    plan = Pruner(ratio=0.5, targets="0").plan(model, torch.rand(1, 3, 8, 8))
    group = ChannelGroup(plan.groups[0].channels, plan.groups[0].uses)
    scored = ScoredNetwork(model, [group], [2], [scaled_l1_init(model, group)])
    scored.train()
    assert scored.training and not scored.network.training
    stats = model[1].running_mean.clone()
    F.cross_entropy(scored(torch.rand(4, 3, 8, 8)), torch.tensor([0, 1, 2, 3])).backward()
    assert torch.equal(model[1].running_mean, stats)
    assert [n for n, p in scored.named_parameters() if p.requires_grad] == ["scores.0"]
    assert scored.scores[0].grad is not None and bool(scored.scores[0].grad.abs().sum() > 0)
    scored.remove()
    assert not model[3]._forward_pre_hooks


def test_scaled_l1_init_follows_hydra_scaling() -> None:
    conv = nn.Conv2d(2, 3, 3, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(1.0, 4.0).view(3, 1, 1, 1).expand(3, 2, 3, 3))
    group = ChannelGroup(3, (ChannelUse("", "out"),))
    expected = (6 / 18) ** 0.5 * torch.tensor([1 / 3, 2 / 3, 1.0], dtype=torch.float64)
    torch.testing.assert_close(scaled_l1_init(conv, group), expected)


@given(
    channels=st.tuples(st.integers(2, 12), st.integers(2, 12)),
    ratio=st.floats(0.0, 0.95),
    steps=st.integers(1, 4),
)
def test_iterative_schedule_reaches_exactly_the_one_shot_widths(
    channels: tuple[int, int], ratio: float, steps: int
) -> None:
    torch.manual_seed(0)
    first, second = channels
    model = nn.Sequential(
        nn.Conv2d(3, first, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(first, second, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(second * 16, 3),
    )
    inputs = torch.rand(1, 3, 4, 4)
    pruned, schedule = iterative_prune(model, inputs, ratio=ratio, targets=["0", "2"], steps=steps)
    one_shot = Pruner(ratio=ratio, targets=["0", "2"]).plan(model, inputs)
    assert schedule.final_widths == one_shot.kept_filters()
    assert (pruned[0].out_channels, pruned[2].out_channels) == tuple(
        one_shot.kept_filters().values()
    )
    for layer, c in (("0", first), ("2", second)):
        removed = min(round(ratio * c), c - 1)
        widths = [step.widths[layer] for step in schedule.steps]
        assert widths == [c - round(removed * i / steps) for i in range(1, steps + 1)]
    assert schedule.params_after == sum(p.numel() for p in pruned.parameters())
    assert model[0].out_channels == first  # the caller's model is not pruned


def test_iterative_schedule_with_adversarial_finetune_records_the_cost() -> None:
    torch.manual_seed(0)
    model = tiny_model(channels=8).eval()
    images, labels = blob_images(32)
    loader = [(images[i : i + 8], labels[i : i + 8]) for i in range(0, 32, 8)]
    state = copy.deepcopy(model.state_dict())
    finetune = FineTune(
        loader, epochs=1, optimizer=lambda p: torch.optim.SGD(p, lr=0.01), attack=FGSM(eps=EPS)
    )
    taylor = AdversarialTaylor(FGSM(eps=EPS), loader, batches=1)
    pruned, schedule = iterative_prune(
        model, images[:1], ratio=0.5, targets=["0", "3"], importance=taylor, steps=2,
        finetune=finetune,
    )  # fmt: skip
    assert [s.widths for s in schedule.steps] == [{"0": 6, "3": 6}, {"0": 4, "3": 4}]
    assert all(len(s.history) == 1 and "train_adv_accuracy" in s.history[0] for s in schedule.steps)
    assert all(s.finetune_seconds > 0 and s.importance_seconds > 0 for s in schedule.steps)
    assert schedule.to_dict()["steps"][1]["plan"]["groups"][0]["channels"] == 6
    assert "step 2" in schedule.summary()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert pruned(images).shape == (32, 4)


def test_robust_prune_reports_before_and_after_with_intervals() -> None:
    torch.manual_seed(0)
    model = tiny_model(channels=8).eval()
    images, labels = blob_images(24)
    loader = [(images[:12], labels[:12]), (images[12:], labels[12:])]
    result = robust_prune(
        model, images[:1], ratio=0.5, targets=["0", "3"], eval_loader=loader,
        eval_attack=FGSM(eps=EPS),
    )  # fmt: skip
    assert result.before.params == sum(p.numel() for p in model.parameters())
    assert result.after.params == sum(p.numel() for p in result.model.parameters())
    assert result.after.flops < result.before.flops
    assert result.before.clean.total == result.after.robust.total == 24
    assert result.after.robust.correct <= result.after.clean.correct
    table = result.to_markdown()
    assert "| before |" in table and "| after |" in table and "[" in table


def test_bad_arguments_are_rejected() -> None:
    loader = _loader()
    model = tiny_model()
    with pytest.raises(ValueError, match="batches must be >= 1"):
        AdversarialTaylor(None, loader, batches=0)
    with pytest.raises(TypeError, match="attack must be an advkit Attack"):
        AdversarialTaylor("pgd", loader)  # type: ignore[arg-type]
    group = analyze(model, loader[0][0]).group_of("0")
    with pytest.raises(ValueError, match="loader yielded no batch"):
        AdversarialTaylor(None, [])(group, model)
    with pytest.raises(TypeError, match="objective must be an advkit Objective"):
        RobustScoreLearner(loader, "pgd")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        RobustScoreLearner(loader, MixedCE(), epochs=0)
    with pytest.raises(ValueError, match="has no scores for the group"):
        ChannelScores({("x",): torch.ones(2)}, name="s")(group, model)
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\)"):
        iterative_prune(model, loader[0][0], ratio=1.0, targets="0")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        iterative_prune(model, loader[0][0], ratio=0.5, targets="0", steps=0)
    with pytest.raises(ValueError, match=r"width of \('0',\) must be in \[1, 8\], got 9"):
        plan_widths(model, loader[0][0], targets="0", widths=lambda c: c + 1)
    with pytest.raises(ValueError, match="either objective= or attack="):
        FineTune(loader, 1, torch.optim.SGD, objective=MixedCE(), attack=FGSM(eps=EPS))
