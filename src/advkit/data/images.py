"""Reading image files of any PIL mode as 8-bit RGB, with errors that name the file.

Files are only ever opened for reading; nothing is written next to them. Only regular files are
opened (a FIFO or device named ``.jpg`` would block or stream forever), and an image of more
than ``max_pixels`` pixels is refused from its header, before its pixels are decoded (a
decompression bomb: a small file that expands to gigabytes).
"""

from __future__ import annotations

import os
import stat
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

from advkit._checks import check_int

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "UnreadableImageError",
    "check_image",
    "read_rgb",
    "to_rgb",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpeg",
    ".jpg",
    ".png",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
)
"""File extensions treated as images (compared case-insensitively). Animals-10 uses the first
three."""

DEFAULT_MAX_PIXELS = 50_000_000
"""Largest image (width x height) read by default: 50 megapixels, 150 MB as 8-bit RGB; far above
any photograph of a classification data set, far below a decompression bomb."""

CheckLevel = Literal["none", "header", "full"]

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_BACKGROUND = (255, 255, 255)


class UnreadableImageError(ValueError):
    """A file that cannot be decoded as an image; ``path`` names it and ``reason`` says why."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path!r}: {reason}")


def _describe(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _high_depth_to_8bit(image: Image.Image) -> Image.Image:
    """Scale a 16/32-bit integer or float greyscale image to 8 bits.

    PIL's own ``convert`` clips such images at 255 instead of scaling them, which turns most
    16-bit photographs white.
    """
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        # Float images are either in [0, 1] or in [0, 255].
        scale = 1.0 if values.size and float(np.nanmax(values)) <= 1.0 else 255.0
    elif image.mode.startswith("I;16"):
        scale = 65535.0
    else:  # "I": 32-bit ints, usually 16-bit data that an older PIL decoded this way
        peak = float(values.max()) if values.size else 0.0
        scale = 255.0 if peak <= 255 else 65535.0 if peak <= 65535 else peak
    scaled = np.nan_to_num(values / scale, nan=0.0).clip(0.0, 1.0)
    return Image.fromarray(np.rint(scaled * 255.0).astype(np.uint8))


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded image of any mode to ``"RGB"``.

    Transparent pixels are composited onto white (palette transparency included), 16-bit and
    float greyscale images are scaled rather than clipped, CMYK, YCbCr, LAB, HSV, 1-bit and
    greyscale go through PIL's conversions.

    Args:
        image: A PIL image (already loaded or lazily opened).

    Returns:
        A new ``"RGB"`` image of the same size (or ``image`` itself if it already is RGB).
    """
    if image.mode == "RGB":
        return image
    if image.mode in _HIGH_DEPTH_MODES:
        return _high_depth_to_8bit(image).convert("RGB")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def check_regular_file(path: str | os.PathLike[str]) -> None:
    """Raise :class:`UnreadableImageError` unless ``path`` is (a link to) a regular file.

    Opening a FIFO blocks until someone writes to it, and a device can stream forever: neither
    is ever opened.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        raise UnreadableImageError(path, _describe(err)) from err
    if not stat.S_ISREG(mode):
        raise UnreadableImageError(path, f"{_file_kind(mode)}, not a regular file")


def _check_size(image: Image.Image, max_pixels: int) -> None:
    pixels = image.width * image.height
    if pixels > max_pixels:
        raise ValueError(
            f"{image.width}x{image.height} = {pixels} pixels, more than max_pixels="
            f"{max_pixels} (a decompression bomb?); pass a larger max_pixels to read it"
        )


def read_rgb(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode the image file at ``path`` into an ``"RGB"`` image, upright per its EXIF tag.

    Multi-frame files (GIF, TIFF) give their first frame.

    Args:
        path: The image file. It is opened read-only, and only if it is a regular file.
        max_pixels: Refuse images of more pixels than this (checked in the header, before
            decoding).

    Returns:
        The decoded ``"RGB"`` image, fully loaded (the file is closed).

    Raises:
        UnreadableImageError: If the file is missing, not a regular file, unreadable, not an
            image, larger than ``max_pixels``, truncated or otherwise corrupt; the message
            names the file and the reason.
    """
    max_pixels = check_int(max_pixels, "max_pixels", minimum=1)
    check_regular_file(path)
    try:
        with Image.open(path) as image:
            _check_size(image, max_pixels)
            image.load()
            upright = ImageOps.exif_transpose(image)
            return to_rgb(upright if upright is not None else image)
    # Decoders of untrusted files raise many types (OSError, SyntaxError, struct.error,
    # DecompressionBombError, ...); each of them means the same thing to a caller.
    except Exception as err:
        raise UnreadableImageError(path, _describe(err)) from err


def check_image(
    path: str | os.PathLike[str],
    level: CheckLevel = "header",
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> None:
    """Check that ``path`` is a readable image without keeping its pixels.

    Args:
        path: The file to check; it is opened read-only, and only if it is a regular file.
        level: ``"header"`` parses the header only (fast: catches non-images, empty files,
            images over ``max_pixels`` and garbage with an image extension); ``"full"``
            decodes every pixel (also catches truncated or corrupt pixel data); ``"none"``
            checks nothing.
        max_pixels: Refuse images of more pixels than this.

    Raises:
        UnreadableImageError: If the check fails; the message names the file.
        ValueError: If ``level`` is not one of the three above.
    """
    if level == "none":
        return
    if level == "full":
        read_rgb(path, max_pixels=max_pixels)
        return
    if level != "header":
        raise ValueError(f"level must be 'none', 'header' or 'full', got {level!r}")
    max_pixels = check_int(max_pixels, "max_pixels", minimum=1)
    check_regular_file(path)
    try:
        with Image.open(path) as image:
            if image.width < 1 or image.height < 1:
                raise ValueError(f"empty image of size {image.size}")
            _check_size(image, max_pixels)
    except Exception as err:  # see read_rgb
        raise UnreadableImageError(path, _describe(err)) from err
