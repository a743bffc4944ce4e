"""Non-finite logits are an error where they enter, unless explicitly allowed (issue 20, #1)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from advkit.attacks import FGSM, IFGSM, MIFGSM, PGD, WorstCase, allow_nonfinite_logits
from advkit.evaluation import accuracy, evaluate_grid, robust_accuracy, transfer_matrix
from conftest import blob_images, tiny_model


class NaNLogits(nn.Module):
    """Returns NaN logits for the samples whose first pixel is below ``threshold``."""

    def __init__(self, threshold: float = 2.0, value: float = float("nan")) -> None:
        super().__init__()
        self.inner = tiny_model()
        self.threshold = threshold
        self.value = value

    def forward(self, x: Tensor) -> Tensor:
        logits = self.inner(x)
        bad = x.flatten(1)[:, 0] < self.threshold
        return torch.where(bad[:, None], torch.full_like(logits, self.value), logits)


ATTACKS = [
    FGSM(eps=0.03),
    IFGSM(eps=0.03, steps=2),
    PGD(eps=0.03, steps=2),
    MIFGSM(eps=0.03, steps=2),
    WorstCase([FGSM(eps=0.03), IFGSM(eps=0.03, steps=2)]),
]


@pytest.mark.parametrize("attack", ATTACKS, ids=repr)
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_attacks_refuse_nonfinite_logits(attack, value: float) -> None:
    images, _ = blob_images(8)
    labels = torch.zeros(8, dtype=torch.long)  # argmax of NaN is 0: "correct" without the check
    model = NaNLogits(value=value).eval()
    with pytest.raises(ValueError, match=r"non-finite logits \(NaN or inf\) for 8 of 8"):
        attack.run(model, images, labels)


def test_one_bad_sample_is_named() -> None:
    images, labels = blob_images(8)
    images[3, 0, 0, 0] = 0.0
    model = NaNLogits(threshold=1e-12).eval()
    with pytest.raises(ValueError, match=r"for 1 of 8 samples \(batch positions 3\)"):
        IFGSM(eps=0.03, steps=2).run(model, images, labels)


def test_evaluations_refuse_nonfinite_logits() -> None:
    images, _ = blob_images(8)
    labels = torch.zeros(8, dtype=torch.long)
    model = NaNLogits().eval()
    loader = [(images, labels)]
    match = "non-finite logits"
    with pytest.raises(ValueError, match=match):
        accuracy(model, loader, progress=False)
    with pytest.raises(ValueError, match=match):
        robust_accuracy(model, loader, IFGSM(eps=0.03, steps=2), progress=False)
    with pytest.raises(ValueError, match=match):
        evaluate_grid(
            model, loader, IFGSM(eps=0.03, steps=2), eps=[0.01], steps=[1], progress=False
        )
    with pytest.raises(ValueError, match=match):
        transfer_matrix({"a": model}, {"a": model}, loader, FGSM(eps=0.03), progress=False)


def test_nonfinite_appearing_during_the_attack_is_caught() -> None:
    # Finite at the clean inputs, NaN once the perturbation moves the first pixel up.
    images, labels = blob_images(8)
    images[:, 0, 0, 0] = 0.5

    class Late(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = tiny_model()

        def forward(self, x: Tensor) -> Tensor:
            logits = self.inner(x)
            bad = x.flatten(1)[:, 0] != 0.5
            return torch.where(bad[:, None], torch.full_like(logits, float("nan")), logits)

    with pytest.raises(ValueError, match="non-finite logits"):
        IFGSM(eps=0.1, steps=3).run(Late().eval(), images, labels)


def test_allow_nonfinite_logits_restores_the_old_behaviour() -> None:
    images, _ = blob_images(8)
    labels = torch.zeros(8, dtype=torch.long)
    model = NaNLogits().eval()
    with allow_nonfinite_logits():
        result = accuracy(model, [(images, labels)], progress=False)
        IFGSM(eps=0.03, steps=2).run(model, images, labels)
    assert result.correct == 8  # what a user explicitly asked for
    with pytest.raises(ValueError, match="non-finite logits"):  # and only inside the block
        accuracy(model, [(images, labels)], progress=False)
