"""Invariants every attack keeps, for any eps: inside the bounds and the ball, no side effects."""

from __future__ import annotations

import pytest
import torch
from attack_cases import ATTACK_FACTORIES, ball_slack, distance
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from conftest import blob_images, tiny_model

NAMES = sorted(ATTACK_FACTORIES)
eps_values = st.floats(min_value=0.0, max_value=0.5, allow_nan=False)


@pytest.mark.parametrize("name", NAMES)
@given(eps=eps_values, seed=st.integers(0, 2**16))
def test_output_inside_bounds_and_ball(name: str, eps: float, seed: int) -> None:
    model = tiny_model().eval()
    images, labels = blob_images(6, seed=seed)
    adversarial = ATTACK_FACTORIES[name](eps)(model, images, labels)
    assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0
    slack = ball_slack(eps, images, l2=name.endswith("-L2"))
    assert torch.all(distance(name, adversarial, images) <= slack)


@pytest.mark.parametrize("name", NAMES)
@given(eps=st.lists(eps_values, min_size=6, max_size=6), seed=st.integers(0, 2**16))
def test_per_sample_eps_bounds_each_sample(name: str, eps: list[float], seed: int) -> None:
    model = tiny_model().eval()
    images, labels = blob_images(6, seed=seed)
    eps_t = torch.tensor(eps)
    adversarial = ATTACK_FACTORIES[name](eps_t)(model, images, labels)
    assert torch.all(
        distance(name, adversarial, images) <= ball_slack(eps_t, images, name.endswith("-L2"))
    )
    assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0


# PGD's random start draws per batch, so its deterministic twin "PGD-no-start" stands in.
@pytest.mark.parametrize(
    "name", [name for name in NAMES if not name.startswith("PGD-L2") and name != "PGD"]
)
def test_per_sample_eps_matches_separate_runs(name: str) -> None:
    """One batch with eps per sample equals running each eps on its own samples."""
    model = tiny_model().eval()
    images, labels = blob_images(8)
    eps = torch.tensor([0.0, 0.01, 0.03, 0.1] * 2)
    together = ATTACK_FACTORIES[name](eps)(model, images, labels)
    for value in eps.unique():
        rows = eps == value
        alone = ATTACK_FACTORIES[name](float(value))(model, images[rows], labels[rows])
        torch.testing.assert_close(together[rows], alone, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_zero_eps_returns_input_exactly(name: str, model: nn.Module, batch) -> None:
    images, labels = batch
    assert torch.equal(ATTACK_FACTORIES[name](0.0)(model, images, labels), images)


@pytest.mark.parametrize("name", NAMES)
def test_input_tensor_unchanged_and_output_detached(name: str, model: nn.Module, batch) -> None:
    images, labels = batch
    before_images, before_labels = images.clone(), labels.clone()
    adversarial = ATTACK_FACTORIES[name](0.1)(model, images, labels)
    assert torch.equal(images, before_images) and torch.equal(labels, before_labels)
    assert not adversarial.requires_grad and adversarial.grad_fn is None
    assert adversarial.data_ptr() != images.data_ptr()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_device_follow_the_input(name: str, dtype: torch.dtype) -> None:
    model = tiny_model().eval().to(dtype)
    images, labels = blob_images(5)
    images = images.to(dtype)
    adversarial = ATTACK_FACTORIES[name](0.05)(model, images, labels)
    assert adversarial.shape == images.shape
    assert adversarial.dtype == dtype and adversarial.device == images.device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_runs_on_cuda(name: str) -> None:
    model = tiny_model().eval().cuda()
    images, labels = (t.cuda() for t in blob_images(5))
    adversarial = ATTACK_FACTORIES[name](torch.full((5,), 0.05, device="cuda"))(
        model, images, labels
    )
    assert adversarial.device == images.device
    assert (adversarial - images).abs().max() <= 0.05 + 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_works_under_no_grad(name: str, model: nn.Module, batch) -> None:
    images, labels = batch
    expected = ATTACK_FACTORIES[name](0.1)(model, images, labels, generator=_gen())
    with torch.no_grad():
        got = ATTACK_FACTORIES[name](0.1)(model, images, labels, generator=_gen())
    assert torch.equal(got, expected)
    assert not torch.equal(got, images)


@pytest.mark.parametrize("name", NAMES)
def test_model_without_parameters(name: str, batch) -> None:
    images, labels = batch
    # A fixed linear read-out with no nn.Parameter at all.
    weight = torch.randn(4, images[0].numel(), generator=_gen())

    class ParameterFree(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1) @ weight.T

    model = ParameterFree()
    assert not list(model.parameters())
    adversarial = ATTACK_FACTORIES[name](0.1)(model, images, labels)
    assert (adversarial - images).abs().max() <= 0.1 + 1e-6
    assert not torch.equal(adversarial, images)


def test_plain_callable_model_is_accepted(batch) -> None:
    images, labels = batch
    weight = torch.randn(4, images[0].numel(), generator=_gen())
    adversarial = ATTACK_FACTORIES["IFGSM"](0.1)(lambda x: x.flatten(1) @ weight.T, images, labels)
    assert (adversarial - images).abs().max() <= 0.1 + 1e-6


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(7)
