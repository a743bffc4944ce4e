"""Reading files of every PIL mode as RGB, checked pixel by pixel against hand-computed values."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from advkit.data import UnreadableImageError, read_rgb, to_rgb
from advkit.data.images import check_image


def _pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image, dtype=np.int64)


def test_rgb_is_returned_unchanged() -> None:
    image = Image.new("RGB", (3, 2), (10, 20, 30))
    assert to_rgb(image) is image


def test_greyscale_and_one_bit_replicate_into_three_channels() -> None:
    grey = Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8))
    assert _pixels(to_rgb(grey))[0].tolist() == [[0, 0, 0], [77, 77, 77], [255, 255, 255]]
    bits = grey.convert("1")
    assert _pixels(to_rgb(bits))[0, :, 0].tolist() == [0, 0, 255]


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    # PIL's own convert would clip 257 * v at 255 (all white); scaling maps it back to v.
    values = np.array([[0, 1, 128, 200, 255]], dtype=np.uint16)
    image = Image.fromarray(values * 257)
    assert image.mode == "I;16"
    assert _pixels(to_rgb(image))[0, :, 1].tolist() == [0, 1, 128, 200, 255]


def test_32_bit_integer_greyscale_with_16_bit_values_is_scaled() -> None:
    image = Image.fromarray(np.array([[0, 65535, 257 * 100]], dtype=np.int32))
    assert image.mode == "I"
    assert _pixels(to_rgb(image))[0, :, 0].tolist() == [0, 255, 100]


def test_32_bit_integer_greyscale_with_8_bit_values_is_kept() -> None:
    image = Image.fromarray(np.array([[0, 17, 255]], dtype=np.int32))
    assert _pixels(to_rgb(image))[0, :, 2].tolist() == [0, 17, 255]


def test_float_greyscale_in_unit_range_is_scaled() -> None:
    image = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert image.mode == "F"
    assert _pixels(to_rgb(image))[0, :, 0].tolist() == [0, 128, 255]


def test_transparency_is_composited_onto_white() -> None:
    rgba = Image.new("RGBA", (2, 1), (100, 50, 0, 255))
    rgba.putpixel((1, 0), (100, 50, 0, 0))
    assert _pixels(to_rgb(rgba))[0].tolist() == [[100, 50, 0], [255, 255, 255]]
    half = Image.new("RGBA", (1, 1), (0, 0, 0, 128))
    # 0 * 128/255 + 255 * 127/255 = 127, up to PIL's rounding.
    assert np.abs(_pixels(to_rgb(half)) - 127).max() <= 1
    grey_alpha = Image.new("LA", (1, 1), (40, 0))
    assert _pixels(to_rgb(grey_alpha)).tolist() == [[[255, 255, 255]]]


def test_palette_transparency_is_composited_onto_white() -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    image.info["transparency"] = 0
    assert _pixels(to_rgb(image))[0].tolist() == [[255, 255, 255], [0, 0, 255]]
    del image.info["transparency"]
    assert _pixels(to_rgb(image))[0].tolist() == [[255, 0, 0], [0, 0, 255]]


def test_cmyk_converts_to_rgb() -> None:
    image = Image.new("CMYK", (3, 1))
    image.putpixel((0, 0), (0, 0, 0, 0))
    image.putpixel((1, 0), (0, 0, 0, 255))
    image.putpixel((2, 0), (255, 0, 0, 0))
    assert _pixels(to_rgb(image))[0].tolist() == [[255, 255, 255], [0, 0, 0], [0, 255, 255]]


def test_read_rgb_applies_exif_orientation(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    Image.new("RGB", (20, 10), (200, 10, 10)).save(path, exif=exif)
    assert read_rgb(path).size == (10, 20)


def _jpeg(size: tuple[int, int] = (32, 32)) -> bytes:
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_truncated_file_passes_the_header_check_but_not_a_full_read(tmp_path: Path) -> None:
    path = tmp_path / "truncated.jpg"
    data = _jpeg()
    path.write_bytes(data[: len(data) // 2])
    check_image(path, "header")
    with pytest.raises(UnreadableImageError, match=r"truncated\.jpg"):
        check_image(path, "full")
    with pytest.raises(UnreadableImageError, match=r"cannot read image .*truncated\.jpg"):
        read_rgb(path)


@pytest.mark.parametrize(
    ("name", "content"),
    [("garbage.jpg", b"this is not a jpeg at all" * 10), ("empty.png", b"")],
)
def test_non_images_fail_the_header_check(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnreadableImageError, match=name.replace(".", r"\.")) as info:
        check_image(path, "header")
    assert isinstance(info.value, ValueError)
    assert info.value.path == str(path)
    check_image(path, "none")  # checks nothing


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImageError, match=r"nowhere\.png.*FileNotFoundError"):
        read_rgb(tmp_path / "nowhere.png")


def test_check_image_rejects_an_unknown_level(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="level must be 'none', 'header' or 'full', got 'deep'"):
        check_image(tmp_path / "x.png", "deep")  # type: ignore[arg-type]
