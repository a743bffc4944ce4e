"""A3's rules (``advkit.attacks.a3_rules``) and APGD's options that use them: online
statistics-based discarding (``keep_share``) and adaptive direction initialization
(``adi_steps``), against formulas written here and exact counts of the model's work."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from advkit.attacks import APGD, APGDT
from advkit.attacks.a3_rules import (
    ADI_TARGET_WEIGHT,
    DirectionStats,
    adi_weights,
    keep_highest,
    margin_loss,
)


def test_the_margin_is_the_highest_other_logit_minus_the_labels() -> None:
    logits = torch.randn(30, 7, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(30) % 7
    expected = [
        max(float(row[j]) for j in range(7) if j != int(label)) - float(row[label])
        for row, label in zip(logits, labels, strict=True)
    ]
    assert torch.allclose(margin_loss(logits, labels), torch.tensor(expected))
    assert torch.equal(margin_loss(logits, labels) > 0, logits.argmax(1) != labels)


@settings(max_examples=60, deadline=None)
@given(
    scores=st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=40),
    pattern=st.integers(0, 2**40 - 1),
    share=st.floats(0.01, 1.0),
)
def test_keep_highest_keeps_the_top_share_of_the_candidates(
    scores: list[float], pattern: int, share: float
) -> None:
    score = torch.tensor(scores)
    candidates = torch.tensor([bool(pattern >> i & 1) for i in range(len(scores))])
    kept = keep_highest(candidates, score, share)
    count = int(candidates.sum())
    assert not bool((kept & ~candidates).any())  # only candidates
    assert int(kept.sum()) == min(count, max(1, math.ceil(share * count)))
    dropped = candidates & ~kept
    if bool(kept.any()) and bool(dropped.any()):
        assert float(score[kept].min()) >= float(score[dropped].max())
    assert torch.equal(keep_highest(candidates, score, 1.0), candidates)


def test_unbiased_adi_weights_are_uniform_draws() -> None:
    labels = torch.tensor([0, 3, 5])
    weights = adi_weights(labels, None, 10, None, torch.Generator().manual_seed(4))
    expected = torch.rand(3, 10, generator=torch.Generator().manual_seed(4)) * 2 - 1
    assert torch.equal(weights, expected)


@pytest.mark.parametrize(
    ("toward_fooling", "toward_label", "target_weight", "label_interval"),
    [
        (1.0, 1.0, ADI_TARGET_WEIGHT, (-0.1, 0.5)),
        (-1.0, 1.0, -ADI_TARGET_WEIGHT, (-0.1, 0.5)),
        (-1.0, -1.0, -ADI_TARGET_WEIGHT, (-0.5, 0.1)),
        (0.0, 0.0, ADI_TARGET_WEIGHT, (-0.5, 0.1)),  # no statistics yet: the authors' default
    ],
)
def test_biased_adi_weights_follow_the_authors_four_cases(
    toward_fooling: float,
    toward_label: float,
    target_weight: float,
    label_interval: tuple[float, float],
) -> None:
    classes, n = 20, 200
    labels = torch.arange(n) % classes
    targets = (labels + 1 + torch.arange(n) % 3) % classes
    stats = DirectionStats(toward_fooling, toward_label, fooled=5)
    weights = adi_weights(labels, targets, classes, stats, torch.Generator().manual_seed(1))
    scale = classes / 10
    rows = torch.arange(n)
    assert torch.allclose(weights[rows, targets], torch.full((n,), scale * target_weight))
    label_entries = weights[rows, labels] / scale
    low, high = label_interval
    assert bool((label_entries >= low).all()) and bool((label_entries <= high).all())
    assert float(label_entries.max() - label_entries.min()) > 0.3  # drawn per sample
    others = torch.ones(n, classes, dtype=torch.bool)
    others[rows, labels] = others[rows, targets] = False
    assert bool((weights[others].abs() <= 1).all())
    with pytest.raises(ValueError, match="target classes"):
        adi_weights(labels, None, classes, stats, None)


def test_direction_statistics_sum_the_fooled_samples_weights() -> None:
    weights = torch.tensor([[0.1, 0.9, -0.4], [0.5, -0.2, 0.3], [-0.7, 0.6, 0.2]])
    labels, predicted = torch.tensor([0, 1, 2]), torch.tensor([1, 1, 0])
    stats = DirectionStats()
    stats.update(weights, labels, predicted, torch.tensor([True, False, True]))
    assert stats.fooled == 2
    assert stats.toward_fooling == pytest.approx(0.9 - 0.7)  # w[predicted] of rows 0 and 2
    assert stats.toward_label == pytest.approx(0.1 + 0.2)  # w[label] of rows 0 and 2
    stats.update(weights, labels, predicted, torch.zeros(3, dtype=torch.bool))
    assert stats.fooled == 2


class _Recording(nn.Module):
    """A linear classifier that records every batch it sees."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        self.linear.weight.data = weight
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(x.detach().clone())
        return self.linear(x.flatten(1))


def _robust_case(n: int = 8) -> tuple[_Recording, Tensor, Tensor]:
    """Samples that no point of a tiny ball can fool: every run attacks every survivor."""
    weight = torch.randn(5, 12, generator=torch.Generator().manual_seed(0))
    model = _Recording(weight).eval()
    x = torch.rand(n, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        labels = model(x).argmax(1)
    model.seen.clear()
    return model, x, labels


def test_discarding_attacks_the_top_share_in_every_later_run() -> None:
    model, x, y = _robust_case(8)
    steps = 4
    full = APGD(eps=1e-4, steps=steps, n_restarts=3).run(model, x, y)
    model.seen.clear()
    kept = APGD(eps=1e-4, steps=steps, n_restarts=3, keep_share=0.5).run(model, x, y)
    assert int(full.fooled.sum()) == int(kept.fooled.sum()) == 0
    assert full.grad_samples == 3 * 8 * (steps + 1)
    # Run 0 attacks all 8, runs 1 and 2 the ceil(0.5 * 8) = 4 of highest margin.
    assert kept.grad_samples == (8 + 4 + 4) * (steps + 1)
    sizes = [batch.shape[0] for batch in model.seen]
    assert sizes == [8] + [8] * (steps + 1) + [4] * 2 * (steps + 1) + [8]
    assert kept.work.forward_equivalents < full.work.forward_equivalents
    # The share kept is those of highest margin after run 0: the samples nearest the boundary.
    run1 = model.seen[1 + steps + 1]
    attacked = [int(((x - row).abs().flatten(1).amax(1) <= 1e-4 + 1e-6).nonzero()) for row in run1]
    with torch.no_grad():
        logits = model.linear(x.flatten(1))
    ranking = margin_loss(logits, y).argsort(descending=True)[:4]
    assert sorted(attacked) == sorted(ranking.tolist())


def test_discarding_counts_only_real_successes() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 5)).eval()
    x = torch.rand(40, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    y = torch.arange(40) % 5
    for attack in (
        APGD(eps=0.05, steps=12, n_restarts=3, keep_share=0.3),
        APGDT(eps=0.05, steps=12, n_target_classes=3, keep_share=0.3, exit_fooled=True),
    ):
        result = attack.run(model, x, y)
        assert torch.equal(result.fooled, result.success)  # every fooled point fools
        assert bool((result.adversarial - x).abs().amax() <= 0.05 + 1e-6)
        reference = attack.replace(keep_share=1.0).run(model, x, y)
        assert result.work.forward_equivalents < reference.work.forward_equivalents
        assert bool(result.fooled.any())


def test_adi_steps_follow_the_gradient_of_the_weighted_logits() -> None:
    model, x, y = _robust_case(6)
    eps, steps = 1e-4, 3
    result = APGD(eps=eps, steps=steps, adi_steps=2, seed=7).run(model, x, y)
    # Recompute the run by hand from the same generator: weights first, then the start.
    gen = torch.Generator().manual_seed(7)
    weights = torch.rand(6, 5, generator=gen) * 2 - 1
    noise = torch.rand(x.shape, generator=gen) * 2 - 1
    scale = noise.abs().flatten(1).amax(1).view(-1, 1, 1, 1)
    start = (x + eps * noise / (scale + 1e-12)).clamp(x - eps, x + eps).clamp(0, 1)
    # d(w . Wx)/dx = W^T w: one full-radius sign step per ADI step, projected.
    direction = (weights @ model.linear.weight.data).view_as(x).sign()
    first = (start + eps * direction).clamp(x - eps, x + eps).clamp(0, 1)
    second = (first + eps * direction).clamp(x - eps, x + eps).clamp(0, 1)
    seen = model.seen  # clean pass, ADI at start, ADI at first, APGD from second, ...
    assert torch.allclose(seen[1], start) and torch.allclose(seen[2], first)
    assert torch.allclose(seen[3], second)
    assert result.grad_samples == 6 * (2 + steps + 1)
    assert APGD(eps=eps, steps=steps, adi_steps=2).iterate_count() == 1 + (1 + 2 + steps)


def test_adi_points_are_counted_and_fooled_samples_leave() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 5)).eval()
    x = torch.rand(40, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    y = torch.arange(40) % 5
    attack = APGDT(eps=0.08, steps=10, n_target_classes=3, adi_steps=3)
    result = attack.run(model, x, y)
    assert torch.equal(result.fooled, result.success)
    assert int(result.success_step.max()) < attack.iterate_count()
    # Points 1 .. 3 of the first run are its start and two ADI points: some fall there.
    assert bool(((result.success_step >= 1) & (result.success_step <= 3)).any())
    norm = (result.adversarial - x).abs().flatten(1).amax(1)
    assert bool((norm <= 0.08 + 1e-6).all())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"keep_share": 0.0}, "keep_share"),
        ({"keep_share": 1.5}, "keep_share"),
        ({"adi_steps": -1}, "adi_steps"),
        ({"adi_steps": 2.5}, "adi_steps"),
    ],
)
def test_bad_a3_options_are_refused(options: dict[str, object], message: str) -> None:
    for kind in (APGD, APGDT):
        with pytest.raises((ValueError, TypeError), match=message):
            kind(eps=0.1, **options)  # type: ignore[arg-type]


def test_a3_options_are_recorded() -> None:
    attack = APGDT(eps=0.1, keep_share=0.5, adi_steps=7)
    assert attack.settings["keep_share"] == 0.5 and attack.settings["adi_steps"] == 7
    assert "keep_share" not in APGD(eps=0.1).settings
    assert "keep_share=0.5" in repr(attack)


def test_untargeted_adi_runs_favour_the_next_highest_logits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import advkit.attacks.apgd as apgd_module

    model, x, y = _robust_case(6)
    seen: list[Tensor | None] = []

    def recording(labels: Tensor, targets: Tensor | None, *args: object) -> Tensor:
        seen.append(targets)
        return adi_weights(labels, targets, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(apgd_module, "adi_weights", recording)
    steps = 2
    result = APGD(eps=1e-4, steps=steps, n_restarts=3, adi_steps=1).run(model, x, y)
    assert result.grad_samples == 3 * 6 * (1 + steps + 1)  # every run: ADI step, start, steps
    with torch.no_grad():
        order = model.linear(x.flatten(1)).argsort(dim=1, descending=True)
    assert seen[0] is None  # run 0: unbiased, it gathers the statistics
    assert torch.equal(seen[1], order[:, 1]) and torch.equal(seen[2], order[:, 2])


def test_bad_inputs_to_a3_rules_are_refused() -> None:
    logits, labels = torch.zeros(4, 5), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"logits must have shape \[N, C\]"):
        margin_loss(torch.zeros(4), labels)
    with pytest.raises(ValueError, match=r"labels must have shape \[4\]"):
        margin_loss(logits, torch.zeros(3, dtype=torch.long))
    candidates, scores = torch.ones(4, dtype=torch.bool), torch.zeros(4)
    for share in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="share"):
            keep_highest(candidates, scores, share)
    with pytest.raises(TypeError, match="candidates must be a bool tensor"):
        keep_highest(torch.ones(4), scores, 0.5)
    with pytest.raises(ValueError, match=r"shape \[N\]"):
        keep_highest(candidates, torch.zeros(5), 0.5)
    with pytest.raises(ValueError, match="num_classes"):
        adi_weights(labels, None, 1, None, None)
    with pytest.raises(TypeError, match="num_classes"):
        adi_weights(labels, None, 5.0, None, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="targets must have the labels' shape"):
        adi_weights(labels, torch.zeros(3, dtype=torch.long), 5, DirectionStats(), None)
