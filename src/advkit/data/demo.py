"""SYNTHETIC demo data: ten families of procedural shapes and textures, made in memory.

Not animals, not photographs. It exists so that the study and the examples run anywhere in
minutes, without downloading Animals-10; every result on it must be labelled synthetic.

Each image is one object on a shaded background. The class fixes the object's shape
(disc, ring, square, triangle, cross, star, crescent) or its texture (stripes, checker,
dots, inside a disc or a square); everything else is drawn at random and independently of the
class: position, size, a tilt of up to 29 degrees, aspect ratio, the object's and the
background's colours, a smooth background shading, a small distractor blob, and pixel noise.
The class cannot be read off one pixel or the mean colour; a model has to learn shapes and
textures. The difficulty (the constants below) is set so that a ResNet-18 trained from
scratch for a few epochs on a CPU classifies most images correctly, as the study's demo needs.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from advkit._checks import check_int
from advkit.data.split import check_seed, check_val_fraction, stratified_split
from advkit.data.transforms import RandomHorizontalFlip, check_image_size

__all__ = ["DEMO_CLASSES", "SyntheticAnimals10", "render_synthetic"]

DEMO_CLASSES: tuple[str, ...] = (
    "disc",
    "ring",
    "square",
    "triangle",
    "cross",
    "star",
    "crescent",
    "stripes",
    "checker",
    "dots",
)
"""Class names of the synthetic demo set; label ``i`` is ``DEMO_CLASSES[i]``."""

_NUM_LINES = 0
_NUM_BLOBS = 1
# Layout of each image's uniform draws: 16 for the background and object, then
# 8 per distractor line (ends, width, colour) and 6 per blob (centre, radius, colour).
_LINES = slice(16, 16 + 8 * _NUM_LINES)
_BLOBS = slice(_LINES.stop, _LINES.stop + 6 * _NUM_BLOBS)
_NUM_PARAMS = _BLOBS.stop
_SHADING_GRID = 4
_SHADING = 0.2  # amplitude of the background's smooth shading
_RADIUS = (0.55, 0.25)  # object radius: lowest value and range, in half-widths of the image
_CONTRAST = (0.5, 0.3)  # object-background difference per channel: lowest value and range
_NOISE = (0.01, 0.02)  # standard deviation of the pixel noise: lowest value and range
_ROTATION = 0.08  # the object turns by up to this fraction of a full turn either way


def _image_seed(seed: int, index: int) -> int:
    """A 63-bit seed for image ``index``: images do not depend on which others are made."""
    digest = hashlib.sha256(f"advkit-demo\x00{seed}\x00{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _shape_mask(label: int, u: Tensor, v: Tensor, extra: Tensor) -> Tensor:
    """Inside-ness of the class's object in object coordinates ``u, v`` (radius 1)."""
    rho = torch.sqrt(u * u + v * v)
    if label == 0:  # disc
        return rho < 1.0
    if label == 1:  # ring
        return (rho < 1.0) & (rho > 0.6)
    if label == 2:  # square
        return torch.maximum(u.abs(), v.abs()) < 0.85
    if label == 3:  # equilateral triangle of circumradius 1
        sides = [u * math.cos(a) + v * math.sin(a) for a in (0.0, 2 * math.pi / 3, 4 * math.pi / 3)]
        return torch.stack(sides).amax(0) < 0.5
    if label == 4:  # plus-shaped cross
        arm, reach = 0.3, 0.95
        return ((u.abs() < arm) & (v.abs() < reach)) | ((v.abs() < arm) & (u.abs() < reach))
    if label == 5:  # five-pointed star
        return rho < 0.55 + 0.4 * torch.cos(5 * torch.atan2(v, u))
    if label == 6:  # crescent: a disc with an offset disc cut out
        return (rho < 1.0) & (torch.sqrt((u - 0.45) ** 2 + v * v) > 0.8)
    # Textures fill a disc or a square, chosen at random so that the outline says nothing.
    freq = (1.5 + 1.0 * extra[:, 0])[:, None, None] * math.pi
    phase = (2 * math.pi * extra[:, 1])[:, None, None]
    region = torch.where(
        (extra[:, 2] < 0.5)[:, None, None], rho < 1.0, torch.maximum(u.abs(), v.abs()) < 0.85
    )
    if label == 7:  # stripes
        texture = torch.sin(freq * u + phase) > 0
    elif label == 8:  # checkerboard
        texture = torch.sin(freq * u + phase) * torch.sin(freq * v + phase) > 0
    else:  # dots on a square lattice
        texture = torch.cos(freq * u + phase) + torch.cos(freq * v + phase) > 0.6
    return region & texture


def _contrasting(base: Tensor, amount: Tensor, sign: Tensor) -> Tensor:
    """A colour that differs from ``base`` by ``amount`` in every channel, kept in [0, 1]."""
    up = base + amount
    down = base - amount
    prefer_up = sign > 0
    fits_up = up <= 1.0
    fits_down = down >= 0.0
    choose_up = torch.where(prefer_up, fits_up | ~fits_down, ~fits_down)
    return torch.where(choose_up, up, down).clamp(0.0, 1.0)


def _segment_mask(x: Tensor, y: Tensor, seg: Tensor) -> Tensor:
    """Thin line segment ``seg [B, 5]`` = x0, y0, x1, y1, half-width -> mask ``[B, H, W]``."""
    x0, y0, x1, y1, width = (seg[:, k, None, None] for k in range(5))
    dx, dy = x1 - x0, y1 - y0
    px, py = x - x0, y - y0
    t = ((px * dx + py * dy) / (dx * dx + dy * dy + 1e-8)).clamp_(0.0, 1.0)
    return (px - t * dx).square_() + (py - t * dy).square_() < width.square()


def _render_chunk(
    labels: Tensor, params: Tensor, noise: Tensor, shading: Tensor, size: int
) -> Tensor:
    """Render images ``[B, 3, size, size]`` in [0, 1] from their random draws ``params``."""
    batch = labels.shape[0]
    # Small images are drawn at twice the size and averaged down, so edges stay smooth.
    supersample = 2 if size <= 32 else 1
    fine = size * supersample
    axis = (torch.arange(fine, dtype=torch.float32) + 0.5) / fine * 2.0 - 1.0
    y, x = (t.expand(batch, fine, fine) for t in torch.meshgrid(axis, axis, indexing="ij"))
    p = params

    # Layers from back to front; ``top`` holds the front-most layer covering each pixel.
    # 0 is the shaded background, then distractor lines and blobs, then the object.
    top = torch.zeros(batch, fine, fine, dtype=torch.uint8)
    colours = [p[:, 0:3]]
    lines = p[:, _LINES].view(batch, _NUM_LINES, 8)
    for k in range(_NUM_LINES):
        ends = lines[:, k, :4] * 2.0 - 1.0
        segment = torch.cat([ends, 0.01 + 0.02 * lines[:, k, 4:5]], dim=1)
        top.masked_fill_(_segment_mask(x, y, segment), len(colours))
        colours.append(lines[:, k, 5:8])
    blobs = p[:, _BLOBS].view(batch, _NUM_BLOBS, 6)
    for k in range(_NUM_BLOBS):
        bx, by = (2 * blobs[:, k, 0:2, None, None] - 1).unbind(1)
        radius = (0.03 + 0.06 * blobs[:, k, 2])[:, None, None]
        top.masked_fill_((x - bx).square() + (y - by).square() < radius.square(), len(colours))
        colours.append(blobs[:, k, 3:6])

    # The object: class shape, random pose, a colour that contrasts with the background.
    radius = (_RADIUS[0] + _RADIUS[1] * p[:, 3])[:, None, None]
    cx, cy = ((2 * p[:, 4:6] - 1) * (0.95 - radius[:, :, 0])).unbind(1)
    angle = (2 * math.pi * _ROTATION * (2 * p[:, 6] - 1))[:, None, None]
    aspect = (0.9 + 0.2 * p[:, 7])[:, None, None]
    cos, sin = torch.cos(angle) / radius, torch.sin(angle) / radius
    dx, dy = x - cx[:, None, None], y - cy[:, None, None]
    u = (dx * cos + dy * sin) * aspect
    v = (dy * cos - dx * sin) / aspect
    mask = torch.zeros(batch, fine, fine, dtype=torch.bool)
    for label in labels.unique().tolist():
        rows = labels == label
        mask[rows] = _shape_mask(label, u[rows], v[rows], p[rows, 8:11])
    top.masked_fill_(mask, len(colours))
    sign = (p[:, 14:15] - 0.5).expand(-1, 3)
    colours.append(_contrasting(p[:, 0:3], _CONTRAST[0] + _CONTRAST[1] * p[:, 11:14], sign))

    palette = torch.stack(colours, dim=1)  # [B, layers, 3]
    index = top.long().view(batch, 1, -1).expand(-1, 3, -1)
    image = palette.transpose(1, 2).gather(2, index).view(batch, 3, fine, fine)
    # Smooth shading on the background only; the foreground layers are flat colours.
    shade = F.interpolate(shading - 0.5, size=(fine, fine), mode="bilinear", align_corners=False)
    image = image + _SHADING * shade * (top == 0).unsqueeze(1)
    if supersample > 1:
        image = F.avg_pool2d(image, supersample)
    sigma = (_NOISE[0] + _NOISE[1] * p[:, 15])[:, None, None, None]
    return image.add_(sigma * noise).clamp_(0.0, 1.0)


def render_synthetic(
    indices: list[int],
    *,
    image_size: int,
    seed: int,
    chunk: int | None = None,
    progress: bool = False,
) -> tuple[Tensor, Tensor]:
    """Render the synthetic images with the given global indices.

    Image ``i`` depends only on ``(seed, i, image_size)``, and its label is ``i % 10``, so a
    subset renders exactly as it would inside a larger set. Every size shows the same scene;
    only the pixel noise is drawn anew.

    Args:
        indices: Global image indices, each >= 0.
        image_size: Side of the square images.
        seed: Seed of the whole set.
        chunk: Images rendered per vectorized step, >= 1; by default sized to keep memory
            modest.
        progress: Show a progress bar.

    Returns:
        ``(images, labels)``: ``uint8 [N, 3, S, S]`` (8-bit, like decoded photographs) and
        ``int64 [N]``.

    Raises:
        ValueError: If an index is negative, or ``image_size`` or ``chunk`` is below 1.
        TypeError: If an index, ``image_size``, ``seed`` or ``chunk`` is not an int.
    """
    size = check_image_size(image_size)
    check_seed(seed)
    for index in indices:
        check_int(index, "indices", minimum=0)
    if chunk is not None:
        check_int(chunk, "chunk", minimum=1)
    labels = torch.tensor([i % len(DEMO_CLASSES) for i in indices], dtype=torch.int64)
    images = torch.empty(len(indices), 3, size, size, dtype=torch.uint8)
    step = chunk or max(1, 2**17 // (size * size))
    starts = range(0, len(indices), step)
    for start in tqdm(starts, desc="rendering synthetic images", disable=not progress, leave=False):
        part = indices[start : start + step]
        params, noise, shading = [], [], []
        for index in part:
            gen = torch.Generator().manual_seed(_image_seed(seed, index))
            params.append(torch.rand(_NUM_PARAMS, generator=gen))
            shading.append(torch.rand(3, _SHADING_GRID, _SHADING_GRID, generator=gen))
            noise.append(torch.randn(3, size, size, generator=gen))
        rendered = _render_chunk(
            labels[start : start + step],
            torch.stack(params),
            torch.stack(noise),
            torch.stack(shading),
            size,
        )
        images[start : start + len(part)] = (rendered * 255.0).round_().to(torch.uint8)
    return images, labels


class SyntheticAnimals10(Dataset[tuple[Tensor, int]]):
    """SYNTHETIC stand-in for Animals-10: 10 classes of procedural shapes, made in memory.

    Same interface as :class:`~advkit.data.animals10.Animals10` (``classes``, ``split``,
    ``image_size``, ``targets``, ``synthetic``, ``description``; items are ``(image, label)``
    with float32 images ``[3, S, S]`` in ``[0, 1]`` and horizontal flips for ``"train"``), but
    the classes are the shape and texture families of :data:`DEMO_CLASSES`, not animals (see
    the module docstring). ``synthetic`` is ``True`` and ``description`` says so: print it
    beside every result.

    The ``num_images`` images (``i % 10`` is the label of image ``i``) are split by
    :func:`~advkit.data.split.stratified_split` and only this split is rendered, as 8-bit
    pixels, when the data set is built: 2000 images at 64x64 take about a second.
    Everything is a function of ``seed``: two data sets built with the same arguments are
    identical, and ``"train"`` and ``"val"`` hold different images.

    Args:
        split: ``"train"`` or ``"val"``.
        image_size: Side of the square images (works from 16 to 224 and beyond).
        num_images: Images in both splits together, >= 10.
        seed: Selects the images and the split.
        val_fraction: Share of each class in ``"val"``, in ``(0, 1)``.
        transform: Maps the float image tensor to the returned image; by default a random
            horizontal flip for ``"train"`` and nothing for ``"val"``.
        progress: Show a progress bar while rendering.

    Attributes:
        classes: :data:`DEMO_CLASSES`.
        indices: Global index of every item (its image's identity in the whole set).
        targets: The label of every item.
        synthetic: ``True``.
        description: One line for reports, starting with "SYNTHETIC".

    Raises:
        ValueError: If an argument is out of range.
        TypeError: If an argument has the wrong type.

    Example:
        >>> val = SyntheticAnimals10("val", image_size=32, num_images=100, progress=False)
        >>> image, label = val[0]
        >>> len(val), tuple(image.shape), val.classes[label], val.synthetic
        (20, (3, 32, 32), 'ring', True)
    """

    synthetic = True

    def __init__(
        self,
        split: Literal["train", "val"] = "train",
        *,
        image_size: int = 64,
        num_images: int = 2000,
        seed: int = 0,
        val_fraction: float = 0.2,
        transform: Callable[[Tensor], Any] | None = None,
        progress: bool = True,
    ) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        check_int(num_images, "num_images", minimum=len(DEMO_CLASSES))
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        self.split = split
        self.image_size = check_image_size(image_size)
        self.num_images = num_images
        self.seed = check_seed(seed)
        self.val_fraction = check_val_fraction(val_fraction)
        self.classes: tuple[str, ...] = DEMO_CLASSES
        self.class_to_idx = {name: label for label, name in enumerate(DEMO_CLASSES)}
        if transform is None and split == "train":
            transform = RandomHorizontalFlip(0.5)
        self.transform = transform

        keys = [str(i) for i in range(num_images)]
        all_labels = [i % len(DEMO_CLASSES) for i in range(num_images)]
        train, val = stratified_split(keys, all_labels, val_fraction=self.val_fraction, seed=seed)
        self.indices: list[int] = train if split == "train" else val
        if not self.indices:
            raise ValueError(
                f"the {split!r} split of {num_images} images with val_fraction "
                f"{self.val_fraction} is empty; use more images"
            )
        self._images, labels = render_synthetic(
            self.indices, image_size=self.image_size, seed=seed, progress=progress
        )
        self.targets: list[int] = labels.tolist()

    @property
    def description(self) -> str:
        """One line for reports; it starts with "SYNTHETIC" so no one mistakes it for photos."""
        return (
            f"SYNTHETIC demo data (procedural shapes and textures, not animals), {self.split} "
            f"split: {len(self)} images, {len(self.classes)} classes, "
            f"{self.image_size}x{self.image_size}, seed {self.seed}"
        )

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        """Return ``(image, label)``, the image float32 ``[3, S, S]`` in ``[0, 1]``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        image = self._images[index].to(torch.float32).div_(255.0)
        label = self.targets[index]
        return (self.transform(image) if self.transform is not None else image), label

    def tensors(self) -> tuple[Tensor, Tensor]:
        """All images (float32 ``[N, 3, S, S]`` in ``[0, 1]``, no flips) and labels ``[N]``."""
        return self._images.to(torch.float32).div_(255.0), torch.tensor(self.targets)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, samples={len(self)}, "
            f"image_size={self.image_size}, seed={self.seed}, synthetic=True)"
        )
