"""Reading image files of any PIL mode as 8-bit RGB, with errors that name the file.

Files are only ever opened for reading; nothing is written next to them.
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

__all__ = [
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


def read_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """Decode the image file at ``path`` into an ``"RGB"`` image, upright per its EXIF tag.

    Multi-frame files (GIF, TIFF) give their first frame.

    Args:
        path: The image file. It is opened read-only.

    Returns:
        The decoded ``"RGB"`` image, fully loaded (the file is closed).

    Raises:
        UnreadableImageError: If the file is missing, unreadable, not an image, truncated or
            otherwise corrupt; the message names the file and the decoder's complaint.
    """
    try:
        with Image.open(path) as image:
            image.load()
            upright = ImageOps.exif_transpose(image)
            return to_rgb(upright if upright is not None else image)
    # Decoders of untrusted files raise many types (OSError, SyntaxError, struct.error,
    # DecompressionBombError, ...); each of them means the same thing to a caller.
    except Exception as err:
        raise UnreadableImageError(path, _describe(err)) from err


def check_image(path: str | os.PathLike[str], level: CheckLevel = "header") -> None:
    """Check that ``path`` is a readable image without keeping its pixels.

    Args:
        path: The file to check; it is opened read-only.
        level: ``"header"`` parses the header only (fast: catches non-images, empty files and
            garbage with an image extension); ``"full"`` decodes every pixel (also catches
            truncated or corrupt pixel data); ``"none"`` checks nothing.

    Raises:
        UnreadableImageError: If the check fails; the message names the file.
        ValueError: If ``level`` is not one of the three above.
    """
    if level == "none":
        return
    if level == "full":
        read_rgb(path)
        return
    if level != "header":
        raise ValueError(f"level must be 'none', 'header' or 'full', got {level!r}")
    try:
        with Image.open(path) as image:
            if image.width < 1 or image.height < 1:
                raise ValueError(f"empty image of size {image.size}")
    except Exception as err:  # see read_rgb
        raise UnreadableImageError(path, _describe(err)) from err
