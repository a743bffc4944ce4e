"""Bad input gets a ValueError/TypeError that names the problem."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advkit import FGSM, IFGSM, MIFGSM, PGD


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: FGSM(eps=-0.1), ValueError, r"eps must be finite and >= 0, got -0.1"),
        (lambda: FGSM(eps=float("nan")), ValueError, "eps must be finite"),
        (lambda: FGSM(eps="0.1"), TypeError, "eps must be a float or a 1-D tensor, got str"),
        (lambda: FGSM(eps=torch.tensor([0.1, -1.0])), ValueError, "eps must be finite and >= 0"),
        (lambda: FGSM(eps=torch.ones(2, 2)), ValueError, "must be 1-D floating point"),
        (lambda: IFGSM(eps=0.1, steps=0), ValueError, "steps must be >= 1, got 0"),
        (lambda: IFGSM(eps=0.1, steps=2.5), TypeError, "steps must be an int, got float"),
        (lambda: IFGSM(eps=0.1, steps=3, alpha=0.0), ValueError, "alpha must be > 0, got 0.0"),
        (lambda: PGD(eps=0.1, steps=3, alpha=-1.0), ValueError, "alpha must be finite and >= 0"),
        (lambda: PGD(eps=0.1, steps=3, random_start=1), TypeError, "random_start must be a bool"),
        (lambda: MIFGSM(eps=0.1, steps=3, decay=-0.5), ValueError, "decay must be finite and >= 0"),
        (
            lambda: FGSM(eps=0.1, bounds=(1.0, 0.0)),
            ValueError,
            "bounds must be finite with lo < hi",
        ),
        (lambda: FGSM(eps=0.1, bounds=0.5), TypeError, "bounds must be a pair of floats"),
        (lambda: FGSM(eps=0.1, loss="ce"), TypeError, "loss must be callable, got str"),
        (
            lambda: FGSM(eps=0.1, model_mode="test"),
            ValueError,
            "model_mode must be 'eval' or 'train'",
        ),
        (lambda: FGSM(eps=0.1, targeted="yes"), TypeError, "targeted must be a bool"),
        (lambda: FGSM(eps=0.1).replace(steps=3), TypeError, "steps"),
    ],
)
def test_bad_settings(build, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        build()


def _images() -> torch.Tensor:
    return torch.rand(4, 3, 8, 8)


@pytest.mark.parametrize(
    ("inputs", "labels", "error", "match"),
    [
        (
            _images() + 1.5,
            torch.zeros(4, dtype=torch.long),
            ValueError,
            r"inside bounds \(0.0, 1.0\)",
        ),
        (_images() - 1.0, torch.zeros(4, dtype=torch.long), ValueError, "inside bounds"),
        (
            _images().index_fill(0, torch.tensor([1]), float("nan")),
            torch.zeros(4, dtype=torch.long),
            ValueError,
            "inputs contain NaN",
        ),
        (_images(), torch.zeros(3, dtype=torch.long), ValueError, r"labels must have shape \[4\]"),
        (_images(), torch.zeros(4, 1, dtype=torch.long), ValueError, "labels must have shape"),
        (
            _images(),
            torch.zeros(4),
            TypeError,
            "labels must be an integer tensor, got dtype torch.float32",
        ),
        (_images(), torch.zeros(4, dtype=torch.bool), TypeError, "integer tensor"),
        (
            _images(),
            torch.tensor([0, 1, 2, 4]),
            ValueError,
            "labels must be < the number of classes 4",
        ),
        (_images(), torch.tensor([0, -1, 2, 3]), ValueError, "labels must be >= 0"),
        (
            _images().long(),
            torch.zeros(4, dtype=torch.long),
            TypeError,
            "inputs must be floating point",
        ),
        (
            _images().numpy(),
            torch.zeros(4, dtype=torch.long),
            TypeError,
            "inputs must be a torch.Tensor",
        ),
        (_images(), [0, 1, 2, 3], TypeError, "labels must be a torch.Tensor"),
        (torch.rand(0, 3, 8, 8), torch.zeros(0, dtype=torch.long), ValueError, "non-empty batch"),
    ],
)
@pytest.mark.parametrize("attack", [FGSM(eps=0.1), PGD(eps=0.1, steps=2)], ids=["FGSM", "PGD"])
def test_bad_batches(model: nn.Module, attack, inputs, labels, error, match: str) -> None:
    with pytest.raises(error, match=match):
        attack(model, inputs, labels)
    with pytest.raises(error, match=match):
        attack.run(model, inputs, labels)


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (nn.Identity(), r"logits of shape \[N, C\] = \[4, C\], got \[4, 3, 8, 8\]"),
        (nn.Sequential(nn.Flatten(0)), r"logits of shape \[N, C\]"),
        (nn.Sequential(nn.Flatten(), nn.Linear(192, 4), nn.Flatten(0)), r"got \[16\]"),
    ],
)
def test_model_must_return_logits(model: nn.Module, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        IFGSM(eps=0.1, steps=2)(model, _images(), torch.zeros(4, dtype=torch.long))


def test_model_returning_a_tuple_is_rejected() -> None:
    class TupleModel(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x.flatten(1), x

    with pytest.raises(TypeError, match="must return a tensor of logits, got tuple"):
        FGSM(eps=0.1)(TupleModel(), _images(), torch.zeros(4, dtype=torch.long))


def test_per_sample_eps_must_match_the_batch(model: nn.Module) -> None:
    with pytest.raises(ValueError, match="per-sample eps has 3 values but the batch has 4"):
        FGSM(eps=torch.full((3,), 0.1))(model, _images(), torch.zeros(4, dtype=torch.long))


def test_loss_of_wrong_shape(model: nn.Module) -> None:
    attack = FGSM(eps=0.1, loss=lambda logits, labels: logits)
    with pytest.raises(ValueError, match=r"loss must return a scalar or per-sample \[4\]"):
        attack(model, _images(), torch.zeros(4, dtype=torch.long))


def test_labels_on_another_device_message(model: nn.Module) -> None:
    labels = torch.zeros(4, dtype=torch.long, device="meta")
    with pytest.raises(ValueError, match="labels are on meta but inputs on cpu"):
        FGSM(eps=0.1)(model, _images(), labels)


def test_failed_validation_leaves_the_model_untouched(model: nn.Module) -> None:
    model.train()
    with pytest.raises(ValueError):
        IFGSM(eps=0.1, steps=2)(model, _images(), torch.tensor([0, 1, 2, 9]))
    assert all(module.training for module in model.modules())
