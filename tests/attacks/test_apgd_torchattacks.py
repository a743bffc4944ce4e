"""APGD side by side with torchattacks' and ART's implementations on a small trained model.

The runs start from different random points (each library draws its own), so the fooled sets
may differ in a few samples; advkit's robust accuracy must never be higher by more than one
sample in 200.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchattacks
from torch import Tensor, nn

from advkit.attacks import APGD, APGDT, Attack

STEPS = 50
SLACK = 1  # samples in 200


def robust_mask(model: nn.Module, adversarial: Tensor, labels: Tensor) -> Tensor:
    with torch.no_grad():
        return model(adversarial).argmax(dim=1) == labels


def robust_count(model: nn.Module, adversarial: Tensor, labels: Tensor) -> int:
    return int(robust_mask(model, adversarial, labels).sum())


def ours_robust(attack: Attack, model: nn.Module, x: Tensor, y: Tensor) -> int:
    """advkit's robust count; its adversarial inputs fool the model exactly where it says so."""
    result = attack.run(model, x, y)
    assert torch.equal(result.success, ~robust_mask(model, result.adversarial, y))
    assert torch.equal(result.success, result.fooled)
    return int((~result.fooled).sum())


CASES = [
    ("Linf", 8 / 255, "ce"),
    ("Linf", 8 / 255, "dlr"),
    ("Linf", 8 / 255, "targeted"),
    ("L2", 0.3, "ce"),
    ("L2", 0.3, "dlr"),
    ("L2", 0.3, "targeted"),
]


@pytest.mark.parametrize(("norm", "eps", "loss"), CASES)
def test_not_weaker_than_torchattacks(trained_model_and_data, norm, eps, loss) -> None:
    model, images, labels = trained_model_and_data
    x, y = images[:200], labels[:200]
    model.eval()  # torchattacks runs the model in whatever mode it is in
    if loss == "targeted":
        ours = APGDT(eps=eps, norm=norm, steps=STEPS, n_target_classes=3)
        theirs = torchattacks.APGDT(model, norm=norm, eps=eps, steps=STEPS, n_classes=4)
    else:
        ours = APGD(eps=eps, norm=norm, steps=STEPS, loss=loss)
        theirs = torchattacks.APGD(model, norm=norm, eps=eps, steps=STEPS, loss=loss)
    reference = robust_count(model, theirs(x, y), y)
    robust = ours_robust(ours, model, x, y)
    assert 0 < reference < 190  # a case where the attack matters
    assert robust <= reference + SLACK


@pytest.mark.parametrize("loss", ["cross_entropy", "difference_logits_ratio"])
def test_not_weaker_than_art(trained_model_and_data, loss) -> None:
    art_estimators = pytest.importorskip("art.estimators.classification")
    art_evasion = pytest.importorskip("art.attacks.evasion")
    model, images, labels = trained_model_and_data
    x, y = images[:200], labels[:200]
    eps = 8 / 255
    classifier = art_estimators.PyTorchClassifier(
        model=model.eval(),
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=4,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )
    art = art_evasion.AutoProjectedGradientDescent(
        classifier,
        norm=np.inf,
        eps=eps,
        eps_step=2 * eps,
        max_iter=STEPS,
        nb_random_init=1,
        batch_size=200,
        loss_type=loss,
        verbose=False,
    )
    reference = robust_count(model, torch.from_numpy(art.generate(x.numpy(), y.numpy())), y)
    ours = APGD(eps=eps, steps=STEPS, loss="ce" if loss == "cross_entropy" else "dlr")
    robust = ours_robust(ours, model, x, y)
    assert 0 < reference < 190
    assert robust <= reference + SLACK
