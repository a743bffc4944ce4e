"""The attacks work: on a trained model, accuracy collapses as eps grows."""

from __future__ import annotations

import pytest
import torch
from attack_cases import ATTACK_FACTORIES
from torch import Tensor, nn

from advkit import FGSM, IFGSM, PGD


def _accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    with torch.no_grad():
        return (model(images).argmax(dim=1) == labels).float().mean().item()


def test_ifgsm_accuracy_falls_to_zero_and_never_rises(trained_model_and_data) -> None:
    model, images, labels = trained_model_and_data
    clean = _accuracy(model, images, labels)
    assert clean > 0.9
    accuracies = [
        _accuracy(model, IFGSM(eps=eps, steps=10)(model, images, labels), labels)
        for eps in (0.0, 2 / 255, 8 / 255, 32 / 255, 0.3)
    ]
    assert accuracies[0] == clean
    assert accuracies == sorted(accuracies, reverse=True), accuracies
    assert accuracies[-1] == 0.0, accuracies


@pytest.mark.parametrize("eps", [2 / 255, 8 / 255, 16 / 255])
def test_ifgsm_at_least_as_strong_as_fgsm(trained_model_and_data, eps: float) -> None:
    model, images, labels = trained_model_and_data
    fgsm = _accuracy(model, FGSM(eps=eps)(model, images, labels), labels)
    ifgsm = _accuracy(model, IFGSM(eps=eps, steps=10)(model, images, labels), labels)
    assert ifgsm <= fgsm, (ifgsm, fgsm)


@pytest.mark.parametrize("name", sorted(ATTACK_FACTORIES))
def test_every_attack_lowers_accuracy(trained_model_and_data, name: str) -> None:
    model, images, labels = trained_model_and_data
    eps = 16 / 255
    if name.endswith("-L2"):  # a ball of comparable size: half the L2 radius of the L-inf cube
        eps *= images[0].numel() ** 0.5 / 2
    attacked = _accuracy(model, ATTACK_FACTORIES[name](eps)(model, images, labels), labels)
    assert attacked < _accuracy(model, images, labels) - 0.3


def test_targeted_attack_reaches_its_targets(trained_model_and_data) -> None:
    model, images, labels = trained_model_and_data
    targets = (labels + 1) % 4
    result = PGD(eps=0.3, steps=20, targeted=True).run(
        model, images, targets, generator=torch.Generator().manual_seed(0)
    )
    hit_rate = (result.logits.argmax(dim=1) == targets).float().mean().item()
    assert hit_rate > 0.95
    assert torch.equal(result.success, result.logits.argmax(dim=1) == targets)


def test_custom_per_sample_loss(trained_model_and_data) -> None:
    """A margin loss (per-sample) drives the attack as well as cross-entropy."""
    model, images, labels = trained_model_and_data

    def margin(logits: Tensor, y: Tensor) -> Tensor:
        true = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.masked_fill(nn.functional.one_hot(y, logits.shape[1]).bool(), -1e9)
        return other.max(dim=1).values - true

    attacked = _accuracy(
        model, IFGSM(eps=32 / 255, steps=10, loss=margin)(model, images, labels), labels
    )
    assert attacked < 0.2
