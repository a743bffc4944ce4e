"""Builds small folders in the Kaggle Animals-10 layout, with every image mode and extension."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from advkit.data import FOLDER_NAMES

ITALIAN = tuple(FOLDER_NAMES)
ENGLISH = tuple(FOLDER_NAMES.values())


def _pattern(label: int, number: int, size: tuple[int, int]) -> np.ndarray:
    """An RGB uint8 array that is not left-right symmetric, different for every file."""
    width, height = size
    ramp = np.linspace(0, 255, width, dtype=np.float64)[None, :].repeat(height, 0)
    red = ramp
    green = np.full((height, width), 20.0 * label + 3.0 * number)
    blue = 255.0 - ramp
    return np.stack([red, green, blue], axis=-1).clip(0, 255).astype(np.uint8)


def _rgb(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array)


def _rgba(array: np.ndarray) -> Image.Image:
    image = _rgb(array).convert("RGBA")
    image.putalpha(200)
    return image


def _palette(array: np.ndarray) -> Image.Image:
    image = _rgb(array).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    image.info["transparency"] = 0
    return image


def _grey16(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array[..., 0].astype(np.uint16) * 257)


# (mode maker, file name suffix, PIL format) -- every mode and extension case the loader meets.
VARIANTS: tuple[tuple[Callable[[np.ndarray], Image.Image], str, str], ...] = (
    (_rgb, ".jpeg", "JPEG"),
    (lambda a: _rgb(a).convert("L"), ".jpg", "JPEG"),
    (_rgba, ".png", "PNG"),
    (_palette, ".PNG", "PNG"),
    (lambda a: _rgb(a).convert("CMYK"), ".JPG", "JPEG"),
    (_grey16, ".png", "PNG"),
    (lambda a: _rgb(a).convert("LA"), ".Jpeg", "PNG"),  # a PNG named .Jpeg: read by content
    (lambda a: _rgb(a).convert("1"), ".png", "PNG"),
)


def image_bytes(label: int, number: int, variant: int, size: tuple[int, int] = (13, 9)) -> bytes:
    """The encoded file for one image, with its variant's mode and format."""
    make, _, fmt = VARIANTS[variant % len(VARIANTS)]
    buffer = io.BytesIO()
    make(_pattern(label, number, size)).save(buffer, format=fmt)
    return buffer.getvalue()


def make_tree(
    root: Path,
    *,
    per_class: int = 6,
    names: tuple[str, ...] = ITALIAN,
) -> dict[str, int]:
    """Write ``per_class`` tiny images into each class folder of ``root`` (created).

    Returns:
        Relative path -> label, for every file written.
    """
    written: dict[str, int] = {}
    for label, name in enumerate(names):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for number in range(per_class):
            variant = label + number
            suffix = VARIANTS[variant % len(VARIANTS)][1]
            relative = f"{name}/img_{number:03d}{suffix}"
            (root / relative).write_bytes(image_bytes(label, number, variant))
            written[relative] = label
    return written


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every entry below ``root``: size, modification time and content hash (dirs: empty)."""
    state: dict[str, tuple[int, int, str]] = {}
    for directory, subdirs, files in os.walk(root):
        for name in subdirs + files:
            path = Path(directory, name)
            info = path.stat()
            digest = "" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
            state[path.relative_to(root).as_posix()] = (info.st_size, info.st_mtime_ns, digest)
    return state
