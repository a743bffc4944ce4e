"""AutoAttack in the evaluation functions: per-member accuracy, masking checks, grids, transfer."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor, nn

from advkit.attacks import APGD, AutoAttack, GradientMaskingWarning, Square
from advkit.evaluation import RobustAccuracy, evaluate_grid, robust_accuracy, transfer_matrix
from conftest import blob_images, tiny_model, train_tiny


def _attack(eps: float) -> AutoAttack:
    return AutoAttack(
        eps=eps,
        version="custom",
        attacks=[APGD(eps=eps, steps=5), Square(eps=eps, n_queries=30)],
    )


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, list[tuple[Tensor, Tensor]]]:
    images, labels = blob_images(96)
    model = train_tiny(tiny_model(), images, labels, epochs=40)
    return model, [(images[:48], labels[:48]), (images[48:], labels[48:])]


class Quantized(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(torch.round(x * 4) / 4)


def test_robust_accuracy_reports_each_member_and_the_checks(
    trained: tuple[nn.Module, list[tuple[Tensor, Tensor]]],
) -> None:
    model, loader = trained
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientMaskingWarning)  # a plain model: none fires
        result = robust_accuracy(model, loader, _attack(4 / 255), progress=False)
    names = [name for name, _ in result.members]
    assert names == ["apgd-ce", "square"]
    after = [accuracy.correct for _, accuracy in result.members]
    assert after[-1] == result.robust.correct and after == sorted(after, reverse=True)
    assert after[0] <= result.clean.correct
    checks = {check.name: check.passed for check in result.checks}
    assert {"logits", "zero_gradients", "randomized", "black_box", "large_eps"} <= set(checks)
    assert RobustAccuracy.from_json(result.to_json()) == result
    text = result.to_markdown()
    assert "| after member | robust acc. (%) |" in text and "- black_box: pass" in text


def test_masking_checks_fire_once_for_all_batches(
    trained: tuple[nn.Module, list[tuple[Tensor, Tensor]]],
) -> None:
    model, loader = trained
    with pytest.warns(GradientMaskingWarning) as caught:
        result = robust_accuracy(Quantized(model).eval(), loader, _attack(8 / 255), progress=False)
    masking = [w for w in caught if w.category is GradientMaskingWarning]
    failed = [check.name for check in result.checks if check.passed is False]
    assert "zero_gradients" in failed
    assert len(masking) == len(failed)  # one warning per failed check, not one per batch


def test_a_plain_attack_has_no_members(
    trained: tuple[nn.Module, list[tuple[Tensor, Tensor]]],
) -> None:
    model, loader = trained
    result = robust_accuracy(model, loader, APGD(eps=2 / 255, steps=3), progress=False)
    assert result.members == ()
    assert "after member" not in result.to_markdown()


def test_grid_over_eps_and_transfer_matrix_take_autoattack(
    trained: tuple[nn.Module, list[tuple[Tensor, Tensor]]],
) -> None:
    model, loader = trained
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientMaskingWarning)
        grid = evaluate_grid(
            model, loader, _attack(0.0), eps=[0, 4 / 255, 16 / 255], progress=False
        )
        matrix = transfer_matrix([model], [model], loader, _attack(4 / 255), progress=False)
    assert grid.steps == (None,)
    assert grid.accuracy(eps=0).correct == grid.clean.correct
    assert grid.accuracy(eps=16 / 255).correct <= grid.accuracy(eps=4 / 255).correct
    assert grid.passed
    assert matrix.robust[0][0].correct <= matrix.clean[0].correct
