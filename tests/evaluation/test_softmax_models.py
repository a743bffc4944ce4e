"""A model that returns probabilities (a softmax last layer) is warned about by every evaluation.

The warning comes from the attacks' walk at a batch's first point, so robust_accuracy and the
grid inherit it; on the previous release only AutoAttack said anything.
"""

from __future__ import annotations

import warnings

import pytest
from evaluation_cases import Loader, make_loader
from torch import Tensor, nn

from advkit.attacks import IFGSM, PGD, GradientMaskingWarning
from advkit.evaluation import evaluate_grid, robust_accuracy


class Softmaxed(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).softmax(dim=1)


@pytest.fixture(scope="module")
def data(trained_model_and_data: tuple[nn.Module, Tensor, Tensor]) -> tuple[nn.Module, Loader]:
    net, images, labels = trained_model_and_data
    return net, make_loader(images[:48], labels[:48], 16)


def test_robust_accuracy_warns_for_probabilities(data: tuple[nn.Module, Loader]) -> None:
    net, loader = data
    attack = PGD(eps=2 / 255, steps=2)
    with pytest.warns(GradientMaskingWarning, match="probabilities, not logits"):
        robust_accuracy(Softmaxed(net), loader, attack, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientMaskingWarning)
        robust_accuracy(net, loader, attack, progress=False)


@pytest.mark.parametrize("kwargs", [{}, {"random_start": False}], ids=["random", "shared-start"])
def test_the_grid_warns_for_probabilities(data: tuple[nn.Module, Loader], kwargs: dict) -> None:
    net, loader = data
    with pytest.warns(GradientMaskingWarning, match="probabilities, not logits"):
        evaluate_grid(
            Softmaxed(net), loader, PGD, eps=[1 / 255, 2 / 255], steps=[1, 2],
            attack_kwargs=kwargs, progress=False,
        )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientMaskingWarning)
        evaluate_grid(net, loader, IFGSM, eps=[1 / 255], steps=[1, 2], progress=False)
