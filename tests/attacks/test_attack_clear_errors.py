"""Bad models and arguments that used to fail deep inside torch get a message that says why.

Each case here failed on the previous release with an obscure torch error (or said nothing,
for a model that returns probabilities).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

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
    check_gradient_masking,
)
from conftest import blob_images, tiny_model


class Detached(nn.Module):
    """A model whose output carries no gradient (e.g. computed through numpy)."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.net = tiny_model(classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).detach()


class IntegerScores(nn.Module):
    """A model that returns rounded scores as int64."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_model()

    def forward(self, x: Tensor) -> Tensor:
        return (self.net(x) * 100).long()


class Probabilities(nn.Module):
    """A model with a softmax as its last layer."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_model()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).softmax(dim=1)


@pytest.mark.parametrize(
    "attack",
    [
        APGD(eps=8 / 255, steps=2),
        APGDT(eps=8 / 255, steps=2, n_target_classes=3),
        FAB(eps=8 / 255, steps=2, n_target_classes=None),
        FAB(eps=8 / 255, steps=2, n_target_classes=3),
        PGD(eps=8 / 255, steps=2),
        FGSM(eps=8 / 255),
    ],
    ids=repr,
)
def test_a_detached_output_is_a_clear_error(attack: Attack) -> None:
    x, y = blob_images(4, num_classes=5)
    with pytest.raises(
        ValueError, match=r"needs the gradient of the model's output .* carries none"
    ):
        attack.run(Detached(5).eval(), x, y)


def test_autoattack_on_a_one_class_model_names_the_model_not_a_setting() -> None:
    x, _ = blob_images(4)
    model = tiny_model(1).eval()
    with pytest.raises(ValueError, match="at least 2 classes, the model returns 1 output"):
        AutoAttack(eps=8 / 255).run(model, x, torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize(
    ("inputs", "labels", "error", "match"),
    [
        (torch.rand(0, 3, 8, 8), torch.zeros(0, dtype=torch.long), ValueError, "non-empty batch"),
        (torch.rand(4, 3, 8, 8), torch.zeros(4), TypeError, "labels must be an integer tensor"),
        (
            torch.rand(4, 3, 8, 8, dtype=torch.float64),
            torch.zeros(4, dtype=torch.long),
            TypeError,
            r"inputs are torch.float64 but the model's parameters are torch.float32",
        ),
    ],
)
def test_check_gradient_masking_bad_batches(
    inputs: Tensor, labels: Tensor, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        check_gradient_masking(tiny_model().eval(), inputs, labels)


@pytest.mark.parametrize(
    "run",
    [
        lambda m, x, y: PGD(eps=8 / 255, steps=2).run(m, x, y),
        lambda m, x, y: FGSM(eps=8 / 255)(m, x, y),
        lambda m, x, y: APGD(eps=8 / 255, steps=2).run(m, x, y),
        lambda m, x, y: FAB(eps=8 / 255, steps=2, n_target_classes=None).run(m, x, y),
        lambda m, x, y: check_gradient_masking(m, x, y),
    ],
    ids=["PGD", "FGSM", "APGD", "FAB", "check_gradient_masking"],
)
def test_integer_logits_are_a_clear_error(run: Callable[..., object]) -> None:
    x, y = blob_images(4)
    with pytest.raises(
        TypeError, match=r"must return floating-point logits, got dtype torch\.int64"
    ):
        run(IntegerScores().eval(), x, y)


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x, y: PGD(eps=8 / 255, steps=2).run(m, x, y, generator=3),
        lambda m, x, y: PGD(eps=8 / 255, steps=2)(m, x, y, generator=3),
        lambda m, x, y: next(PGD(eps=8 / 255, steps=2).iterates(m, x, y, generator=3)),
        lambda m, x, y: APGD(eps=8 / 255, steps=2).run(m, x, y, generator=3),
    ],
    ids=["run", "call", "iterates", "APGD"],
)
def test_a_seed_given_as_generator_is_a_clear_error(call: Callable[..., object]) -> None:
    x, y = blob_images(4)
    with pytest.raises(TypeError, match=r"generator must be a torch.Generator or None, got int"):
        call(tiny_model().eval(), x, y)


@pytest.mark.parametrize(
    "attack",
    [
        PGD(eps=8 / 255, steps=2),
        FGSM(eps=8 / 255),
        IFGSM(eps=8 / 255, steps=2),
        MIFGSM(eps=8 / 255, steps=2),
        APGD(eps=8 / 255, steps=2),
        FAB(eps=8 / 255, steps=2, n_target_classes=None),
    ],
    ids=repr,
)
def test_every_gradient_attack_warns_about_a_model_that_returns_probabilities(
    attack: Attack,
) -> None:
    x, y = blob_images(8)
    with pytest.warns(GradientMaskingWarning, match="probabilities, not logits") as caught:
        attack.run(Probabilities().eval(), x, y)
    assert len([w for w in caught if w.category is GradientMaskingWarning]) == 1
    assert caught[0].filename == __file__  # attributed to the user's line


def test_logits_raise_no_probability_warning() -> None:
    x, y = blob_images(8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientMaskingWarning)
        PGD(eps=8 / 255, steps=2).run(tiny_model().eval(), x, y)
        # a softmax's log is not a probability row either
        model = nn.Sequential(tiny_model(), nn.LogSoftmax(dim=1)).eval()
        PGD(eps=8 / 255, steps=2).run(model, x, y)


def test_autoattack_warns_once_for_probabilities() -> None:
    x, y = blob_images(8)
    attack = AutoAttack(
        eps=2 / 255, version="custom", attacks=[PGD(eps=1, steps=2), APGD(eps=1, steps=2)]
    )
    with pytest.warns(GradientMaskingWarning) as caught:
        attack.run(Probabilities().eval(), x, y)
    found = [w for w in caught if "probabilities, not logits" in str(w.message)]
    assert len(found) == 1
