"""The study's transform: square resize, [0, 1] float32, random flips only for training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from advkit.data import RandomHorizontalFlip, StudyTransform


def _noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@given(
    width=st.integers(1, 40),
    height=st.integers(1, 40),
    size=st.integers(1, 24),
    train=st.booleans(),
)
def test_output_is_square_float32_in_unit_range(
    width: int, height: int, size: int, train: bool
) -> None:
    image = StudyTransform(size, train=train)(_noise_image(width, height))
    assert type(image) is torch.Tensor
    assert image.shape == (3, size, size) and image.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0


def test_values_are_the_bilinear_resize_divided_by_255() -> None:
    image = _noise_image(37, 23)
    expected = np.asarray(image.resize((16, 16), Image.Resampling.BILINEAR), dtype=np.float32)
    output = StudyTransform(16, train=False)(image)
    assert torch.equal(output, torch.from_numpy(expected / 255.0).permute(2, 0, 1))


def test_a_flat_colour_stays_exact() -> None:
    output = StudyTransform(8, train=False)(Image.new("RGB", (30, 11), (255, 0, 51)))
    assert torch.equal(output[:, 3, 5], torch.tensor([255.0, 0.0, 51.0]) / 255.0)


def test_training_flips_about_half_the_time_and_validation_never() -> None:
    image = _noise_image(10, 10)
    plain = StudyTransform(10, train=False)(image)
    train = StudyTransform(10, train=True)
    torch.manual_seed(1)
    draws = [train(image) for _ in range(200)]
    flipped = sum(torch.equal(d, plain.flip(-1)) for d in draws)
    unflipped = sum(torch.equal(d, plain) for d in draws)
    assert flipped + unflipped == 200
    assert 70 <= flipped <= 130  # Binomial(200, 0.5): outside this range has p < 1e-4
    val = StudyTransform(10, train=False)
    assert all(torch.equal(val(image), plain) for _ in range(50))


def test_flips_repeat_after_reseeding() -> None:
    image = _noise_image(6, 6)
    train = StudyTransform(6, train=True)
    torch.manual_seed(7)
    first = [train(image) for _ in range(10)]
    torch.manual_seed(7)
    assert all(torch.equal(a, train(image)) for a in first)


def test_flip_probability_extremes() -> None:
    x = torch.arange(6.0).view(1, 2, 3)
    assert all(torch.equal(RandomHorizontalFlip(0.0)(x), x) for _ in range(20))
    assert all(torch.equal(RandomHorizontalFlip(1.0)(x), x.flip(-1)) for _ in range(20))
    assert RandomHorizontalFlip(1.0)(x)[0, 0].tolist() == [2.0, 1.0, 0.0]


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="expected an RGB image, got mode 'L'"):
        StudyTransform(8, train=False)(Image.new("L", (4, 4)))
    with pytest.raises(ValueError, match="image_size must be >= 1, got -3"):
        StudyTransform(-3, train=False)
    with pytest.raises(TypeError, match="image_size must be an int, got float"):
        StudyTransform(8.0, train=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\], got 1.5"):
        RandomHorizontalFlip(1.5)


def test_repr_names_the_settings() -> None:
    assert repr(StudyTransform(224, train=True)) == "StudyTransform(image_size=224, train=True)"
    assert repr(RandomHorizontalFlip()) == "RandomHorizontalFlip(p=0.5)"
