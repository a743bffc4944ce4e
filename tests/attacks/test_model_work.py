"""ModelWork: the rows every attack sends through the model, against a counting wrapper."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from advkit.attacks import (
    APGD,
    APGDT,
    FAB,
    FGSM,
    IFGSM,
    MIFGSM,
    PGD,
    Attack,
    AutoAttack,
    GradientMaskingWarning,
    ModelWork,
    Square,
)
from conftest import RowCounter


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4))


ATTACKS: dict[str, Attack] = {
    "FGSM": FGSM(eps=0.1),
    "IFGSM": IFGSM(eps=0.1, steps=3),
    "PGD": PGD(eps=0.1, steps=3),
    "MIFGSM": MIFGSM(eps=0.1, steps=3),
    "APGD": APGD(eps=0.1, steps=5),
    "APGDT": APGDT(eps=0.1, steps=5, n_target_classes=2),
    "FAB-T": FAB(eps=0.1, steps=3, n_target_classes=2),
    "FAB": FAB(eps=0.1, steps=3, n_target_classes=None),
    "Square": Square(eps=0.1, n_queries=20),
    "AutoAttack": AutoAttack(
        eps=0.1,
        version="custom",
        attacks=[
            APGD(eps=0.1, steps=5),
            APGDT(eps=0.1, steps=5, n_target_classes=2),
            FAB(eps=0.1, steps=3, n_target_classes=2),
            Square(eps=0.1, n_queries=20),
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("early_stop", [False, True])
def test_work_equals_a_counting_wrapper(name: str, early_stop: bool) -> None:
    x, y = torch.rand(12, 3, 2, 2, generator=torch.Generator().manual_seed(1)), torch.arange(12) % 4
    counter = RowCounter(_model())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientMaskingWarning)
        result = ATTACKS[name].run(
            counter, x, y, generator=torch.Generator().manual_seed(0), early_stop=early_stop
        )
    expected = counter.counted()
    assert result.work == expected
    assert expected.forward_rows > 0 or expected.gradient_rows > 0
    if name == "Square":
        assert result.work.gradient_rows == 0 == result.work.backward_rows
    if name not in ("Square", "FAB"):  # one backward pass per gradient row
        assert result.work.backward_rows == result.work.gradient_rows
        assert result.work.gradient_rows == result.grad_samples
    if name == "FAB":  # the Jacobian: one backward pass per class
        assert result.work.backward_rows == 4 * result.work.gradient_rows
    assert result.work.forward_equivalents == (
        expected.forward_rows + expected.gradient_rows + 2 * expected.backward_rows
    )


def test_autoattack_reports_each_members_work() -> None:
    x, y = torch.rand(12, 3, 2, 2, generator=torch.Generator().manual_seed(1)), torch.arange(12) % 4
    attack = ATTACKS["AutoAttack"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientMaskingWarning)
        result = attack.run(_model(), x, y)
        alone = attack.attacks[0].run(_model(), x, y, generator=torch.Generator().manual_seed(0))
    assert len(result.member_work) == len(result.member_names) == 4
    total = sum(result.member_work, ModelWork())
    # The checks (one gradient pass, one forward pass, the large-eps PGD) are on top.
    assert total.forward_equivalents < result.work.forward_equivalents
    assert result.member_work[0] == alone.work  # the first member runs on the whole batch


def test_model_work_units_and_bad_addition() -> None:
    work = ModelWork(forward_rows=5, gradient_rows=2, backward_rows=2)
    assert work.forward_equivalents == 5 + 3 * 2
    assert work + ModelWork(1, 0, 0) == ModelWork(6, 2, 2)
    with pytest.raises(TypeError, match="unsupported operand"):
        work + 1  # type: ignore[operator]


@pytest.mark.parametrize("early_stop", [False, True])
def test_a_walk_counts_its_work_as_run_does(early_stop: bool) -> None:
    x, y = torch.rand(12, 3, 2, 2, generator=torch.Generator().manual_seed(1)), torch.arange(12) % 4
    attack = PGD(eps=0.1, steps=4)
    counter = RowCounter(_model())
    walk = attack.iterates(counter, x, y, generator=torch.Generator().manual_seed(0))
    followed = walk.follow(early_stop=early_stop)
    ran = attack.run(
        _model(), x, y, generator=torch.Generator().manual_seed(0), early_stop=early_stop
    )
    assert followed.work == ran.work == walk.work
    assert walk.work == ModelWork(
        counter.forward_rows, counter.gradient_rows, counter.backward_rows
    )
