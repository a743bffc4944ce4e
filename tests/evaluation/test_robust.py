"""robust_accuracy counts what an independent loop over attack.run counts."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from evaluation_cases import Loader, make_loader
from torch import Tensor, nn

from advkit.attacks import FGSM, IFGSM, MIFGSM, PGD, Attack
from advkit.attacks.compose import Transfer, WorstCase
from advkit.evaluation import robust_accuracy
from conftest import tiny_model


@pytest.fixture(scope="module")
def model(trained_model_and_data: tuple[nn.Module, Tensor, Tensor]) -> nn.Module:
    return trained_model_and_data[0]


@pytest.fixture(scope="module")
def loader(trained_model_and_data: tuple[nn.Module, Tensor, Tensor]) -> Loader:
    _, images, labels = trained_model_and_data
    y = labels[:80].clone()
    y[::9] = (y[::9] + 1) % 4  # some samples the model gets wrong
    return make_loader(images[:80], y, 32)


def reference(model: nn.Module, loader: Loader, attack: Attack) -> tuple[int, int]:
    """Clean and robust counts, attacking every sample of every batch."""
    clean = robust = 0
    for x, y in loader:
        with torch.no_grad():
            correct = model(x).argmax(1) == y
        fooled = attack.run(model, x, y).fooled
        clean += int(correct.sum())
        robust += int((correct & ~fooled).sum())
    return clean, robust


ATTACKS = {
    "FGSM": FGSM(eps=4 / 255),
    "IFGSM": IFGSM(eps=4 / 255, steps=4),
    "MIFGSM": MIFGSM(eps=2 / 255, steps=3),
    "WorstCase": WorstCase([FGSM(eps=2 / 255), IFGSM(eps=4 / 255, steps=2)]),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("early_stop", [False, True])
def test_robust_accuracy_matches_a_plain_loop(
    model: nn.Module, loader: Loader, name: str, early_stop: bool
) -> None:
    attack = ATTACKS[name]
    clean, robust = reference(model, loader, attack)
    result = robust_accuracy(model, loader, attack, early_stop=early_stop, progress=False)
    assert (result.clean.correct, result.robust.correct) == (clean, robust)
    assert result.clean.total == result.robust.total == 80
    assert 0 < robust < clean < 80
    assert float(result) == robust / 80
    assert result.attack == repr(attack) and result.early_stop is early_stop


def test_only_correctly_classified_samples_are_attacked(model: nn.Module, loader: Loader) -> None:
    result = robust_accuracy(model, loader, IFGSM(eps=0.01, steps=3), early_stop=False)
    assert result.work.grad_samples == 3 * result.clean.correct
    assert result.work.grad_calls == 3 * len(loader)
    assert (result.work.forward_calls, result.work.forward_samples) == (len(loader), 80)


def test_eps_zero_changes_nothing(model: nn.Module, loader: Loader) -> None:
    result = robust_accuracy(model, loader, PGD(eps=0.0, steps=3), progress=False)
    assert result.robust.correct == result.clean.correct
    assert next(c for c in result.checks if c.name == "zero_eps").passed is True


def test_a_transfer_attack_is_evaluated_on_the_target(model: nn.Module, loader: Loader) -> None:
    surrogate = tiny_model(seed=5).eval()
    attack = Transfer(surrogate, IFGSM(eps=8 / 255, steps=2))
    clean, robust = reference(model, loader, attack)
    result = robust_accuracy(model, loader, attack, progress=False)
    assert (result.clean.correct, result.robust.correct) == (clean, robust)


def test_a_random_start_is_reproducible_with_a_generator(model: nn.Module, loader: Loader) -> None:
    attack = PGD(eps=4 / 255, steps=2)
    first, second = (
        robust_accuracy(model, loader, attack, generator=torch.Generator().manual_seed(3))
        for _ in range(2)
    )
    assert first.robust == second.robust


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"attack": FGSM(eps=0.1, targeted=True)}, ValueError, "needs an untargeted attack"),
        ({"attack": FGSM(eps=torch.full((32,), 0.1))}, ValueError, "needs a scalar eps"),
        ({"attack": FGSM}, TypeError, "attack must be an advkit Attack"),
        ({"attack": lambda m, x, y: x}, TypeError, "attack must be an advkit Attack"),
        ({"early_stop": 1}, TypeError, "early_stop must be a bool"),
        ({"loader": []}, ValueError, "loader yielded no batches"),
        ({"loader": [(torch.full((2, 3, 8, 8), 2.0), torch.zeros(2, dtype=torch.long))]},
         ValueError, "inside bounds"),
        ({"model": None}, TypeError, r"model must be a torch\.nn\.Module"),
        ({"confidence": -0.5}, ValueError, r"confidence must be in \(0, 1\)"),
    ],
)  # fmt: skip
def test_robust_accuracy_rejects_bad_input(
    model: nn.Module, loader: Loader, kwargs: dict[str, Any], error: type, match: str
) -> None:
    arguments: dict[str, Any] = {
        "model": model,
        "loader": loader,
        "attack": FGSM(eps=0.1),
        "progress": False,
    } | kwargs
    with pytest.raises(error, match=match):
        robust_accuracy(**arguments)
