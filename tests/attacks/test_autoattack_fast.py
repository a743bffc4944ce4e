"""AutoAttack(version="fast"): exits and MALT targets, Square kept for gradient-masking models."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor, nn

from advkit.attacks import APGD, APGDT, AutoAttack, GradientMaskingWarning, ModelWork, Square
from advkit.attacks.autoattack import LARGE_EPS_STEPS
from conftest import RowCounter


class Quantized(nn.Module):
    """A non-differentiable input quantization in front of a model: zero input gradients."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(torch.round(x * 4) / 4)


def test_fast_members_have_exits_and_malt_targets() -> None:
    attack = AutoAttack(eps=8 / 255, version="fast")
    assert attack.names == ("apgd-ce", "apgd-t", "square")
    ce, targeted, square = attack.attacks
    assert isinstance(ce, APGD) and ce.exit_fooled and ce.steps == 100
    assert isinstance(targeted, APGDT) and targeted.exit_fooled
    assert (targeted.targeting, targeted.n_target_classes) == ("malt", 5)
    assert isinstance(square, Square) and square.n_queries == 5000  # the full budget
    standard = AutoAttack(eps=8 / 255)
    assert not standard.attacks[0].exit_fooled  # type: ignore[attr-defined]


def test_fast_skips_square_on_a_plain_model_and_costs_less(trained_model_and_data) -> None:
    model, images, labels = trained_model_and_data
    x, y = images[:48], labels[:48]
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientMaskingWarning)  # a plain model: none fires
        fast = AutoAttack(eps=6 / 255, version="fast").run(model, x, y)
        standard = AutoAttack(eps=6 / 255).run(model, x, y)
    robust_fast, robust_standard = int((~fast.fooled).sum()), int((~standard.fooled).sum())
    assert 0 < robust_standard < 48, "the case must have robust and fooled samples"
    assert robust_fast <= robust_standard + 1
    assert fast.member_work[2] == ModelWork()  # no check failed, the loss moved: no Square
    assert fast.robust_after[2] == fast.robust_after[1]
    assert [c.name for c in fast.checks if c.passed is None] == ["black_box"]
    assert fast.work.forward_equivalents < 0.5 * standard.work.forward_equivalents


def test_fast_runs_square_at_full_budget_when_gradients_are_masked(trained_model_and_data) -> None:
    model, images, labels = trained_model_and_data
    masked = Quantized(model).eval()
    x, y = images[:16], labels[:16]
    with pytest.warns(GradientMaskingWarning) as caught:
        fast = AutoAttack(eps=16 / 255, version="fast").run(masked, x, y)
    failed = {check.name for check in fast.checks if check.passed is False}
    assert "zero_gradients" in failed
    assert len(caught) >= 1
    # Square ran on every survivor of the white-box members, and fooled some of them.
    square_work = fast.member_work[2]
    assert square_work.forward_rows >= fast.robust_after[1]
    assert fast.robust_after[2] < fast.robust_after[1]
    assert square_work.gradient_rows == 0
    # As strong as the standard version's Square (same member, same budget): never weaker
    # than the white-box members alone.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientMaskingWarning)
        white = AutoAttack(eps=16 / 255, version="custom", attacks=["apgd-ce"]).run(masked, x, y)
    assert int((~fast.fooled).sum()) < int((~white.fooled).sum())


def test_an_unknown_version_is_refused() -> None:
    with pytest.raises(ValueError, match=r"version must be one of .*'fast'.*got 'fastest'"):
        AutoAttack(eps=8 / 255, version="fastest")  # type: ignore[arg-type]


def test_any_version_takes_the_black_box_rule(trained_model_and_data) -> None:
    model, images, labels = trained_model_and_data
    x, y = images[:48], labels[:48]
    members = [APGD(eps=6 / 255, steps=10), Square(eps=6 / 255, n_queries=50)]
    runs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientMaskingWarning)  # a plain model: none fires
        for rule in (None, "always", "when_masked"):
            attack = AutoAttack(eps=6 / 255, version="custom", attacks=members, black_box=rule)
            runs[rule] = attack.run(model, x, y)
    always, gated = runs["always"], runs["when_masked"]
    assert torch.equal(runs[None].adversarial, always.adversarial)  # custom's rule: always
    assert always.member_work[1].forward_rows > 0  # Square ran on APGD's survivors...
    assert gated.member_work[1] == ModelWork()  # ...and the gate skipped it
    # The members before Square saw the same draws: the same samples fell to them.
    assert gated.robust_after[0] == always.robust_after[0] == gated.robust_after[1]
    assert torch.equal(gated.member == 0, always.member == 0)
    assert [c.name for c in gated.checks if c.passed is None] == ["black_box"]
    assert gated.work.forward_equivalents < always.work.forward_equivalents
    # "fast" with Square on every survivor: the reference's rule on fast's members.
    fast_always = AutoAttack(eps=6 / 255, version="fast", black_box="always")
    assert fast_always.black_box == "always"
    assert "black_box='always'" in repr(fast_always)
    assert AutoAttack(eps=6 / 255, version="fast").black_box == "when_masked"


def test_a_gated_custom_ensemble_runs_square_when_gradients_are_masked(
    trained_model_and_data,
) -> None:
    model, images, labels = trained_model_and_data
    masked = Quantized(model).eval()
    x, y = images[:16], labels[:16]
    members = [APGD(eps=16 / 255, steps=5), Square(eps=16 / 255, n_queries=200)]
    with pytest.warns(GradientMaskingWarning):
        gated = AutoAttack(
            eps=16 / 255, version="custom", attacks=members, black_box="when_masked"
        ).run(masked, x, y)
    assert gated.member_work[1].forward_rows >= gated.robust_after[0] > 0
    assert gated.robust_after[1] < gated.robust_after[0]


@pytest.mark.parametrize("rule", ["sometimes", "", 3])
def test_an_unknown_black_box_rule_is_refused(rule: object) -> None:
    with pytest.raises(ValueError, match=r"black_box must be one of \['always', 'when_masked'\]"):
        AutoAttack(eps=8 / 255, black_box=rule)  # type: ignore[arg-type]


def test_the_large_eps_check_lets_a_fooled_sample_leave() -> None:
    # A linear model: at a radius that covers the box every sample falls within a few
    # steps, so the check's 20-step PGD must cost far less than 20 gradient rows a sample.
    torch.manual_seed(0)
    model = RowCounter(nn.Sequential(nn.Flatten(), nn.Linear(48, 4))).eval()
    x, y = torch.rand(32, 3, 4, 4), torch.arange(32) % 4
    members = [APGD(eps=1 / 255, steps=2)]
    work = {}
    for check in (False, True):
        model.forward_rows = model.gradient_rows = model.backward_rows = 0
        result = AutoAttack(
            eps=1 / 255, version="custom", attacks=members, check_large_eps=check
        ).run(model, x, y)
        work[check] = model.counted()
    survivors = result.robust_after[-1]
    assert survivors > 0
    assert result.masking.large_eps_attacked == survivors
    assert result.masking.large_eps_robust == 0  # the check passes: every sample can fall
    sweep_rows = work[True].gradient_rows - work[False].gradient_rows
    assert 0 < sweep_rows < LARGE_EPS_STEPS * survivors / 4
    assert result.work == work[True]  # and the result counts what the model saw
