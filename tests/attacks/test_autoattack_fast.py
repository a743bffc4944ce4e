"""AutoAttack(version="fast"): exits and MALT targets, Square kept for gradient-masking models."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor, nn

from advkit.attacks import APGD, APGDT, AutoAttack, GradientMaskingWarning, ModelWork, Square


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
