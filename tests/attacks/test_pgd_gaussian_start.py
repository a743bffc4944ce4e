"""PGD's ``start_std``: the Gaussian start of TRADES's and MART's reference code, through the walk;
and a model without input gradient is a clear error for gradient attacks."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from advkit.attacks import FGSM, IFGSM, MIFGSM, PGD
from conftest import blob_images, tiny_model


def test_the_walk_starts_at_x_plus_std_times_a_normal_draw_from_the_generator() -> None:
    images, labels = blob_images(4)
    images = 0.1 + 0.8 * images
    attack = PGD(eps=8 / 255, steps=2, start_std=0.001)
    walk = attack.iterates(
        tiny_model().eval(), images, labels, generator=torch.Generator().manual_seed(3)
    )
    start = next(walk).inputs
    walk.close()
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(3))
    assert torch.equal(start, images + 0.001 * noise)  # not clipped: the first step projects
    assert not attack.starts_at_center and not attack.shares_walks()
    adversarial = attack(tiny_model().eval(), images, labels)
    assert (adversarial - images).abs().max() <= 8 / 255 + 1e-7


def test_start_std_replaces_the_uniform_start_and_is_kept_by_replace() -> None:
    attack = PGD(eps=8 / 255, start_std=0.01)
    assert attack.replace(eps=4 / 255).start_std == 0.01
    assert "start_std=0.01" in repr(attack)
    assert PGD(eps=8 / 255, random_start=False).starts_at_center


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (0.0, ValueError, r"start_std must be finite and > 0, got 0\.0"),
        (-1.0, ValueError, "start_std must be finite and > 0"),
        (float("nan"), ValueError, "start_std must be finite and > 0"),
        ("0.001", TypeError, "start_std must be a float, got str"),
    ],
)
def test_a_bad_start_std_is_refused(value: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        PGD(eps=8 / 255, start_std=value)  # type: ignore[arg-type]


class DetachesInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_model()

    def forward(self, inputs: Tensor) -> Tensor:
        return self.net(inputs.detach())


@pytest.mark.parametrize(
    "attack", [FGSM(eps=0.03), IFGSM(eps=0.03), PGD(eps=0.03), MIFGSM(eps=0.03)]
)
def test_a_model_without_input_gradient_is_a_clear_error(attack) -> None:
    images, labels = blob_images(4)
    with pytest.raises(ValueError, match="the output carries none"):
        attack(DetachesInput().eval(), images, labels)
