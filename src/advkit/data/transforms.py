"""The study's image transforms: resize to a square, flip at random when training, pixels in [0, 1].

There is no mean/std normalization here: it is the first layer of the model
(:class:`advkit.models.Normalize`), so attacks measure eps in pixel space.
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from advkit._checks import check_int

__all__ = ["RandomHorizontalFlip", "StudyTransform", "check_image_size"]


def check_image_size(image_size: int) -> int:
    """Validate a square image side length: an integer >= 1."""
    return check_int(image_size, "image_size", minimum=1)


class RandomHorizontalFlip:
    """Mirror a ``[..., H, W]`` tensor left-right with probability ``p``.

    Draws from torch's global RNG, which a :class:`~torch.utils.data.DataLoader` seeds in each
    worker from its own generator; with ``num_workers=0`` call :func:`torch.manual_seed` for
    repeatable flips.

    Args:
        p: Probability of flipping, in ``[0, 1]``.
    """

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, image: Tensor) -> Tensor:
        if float(torch.rand(())) < self.p:
            return image.flip(-1)
        return image

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class StudyTransform:
    """PIL image -> float32 tensor ``[3, S, S]`` in ``[0, 1]``, as the study preprocesses.

    Resizes to ``image_size x image_size`` (bilinear, antialiased; the aspect ratio is not
    kept, as in the study), converts to float in ``[0, 1]``, and for training flips
    horizontally with probability 0.5.

    Args:
        image_size: Side length ``S`` of the output.
        train: Apply the random horizontal flip.

    Example:
        >>> from PIL import Image
        >>> to_tensor = StudyTransform(32, train=False)
        >>> x = to_tensor(Image.new("RGB", (50, 20), (255, 0, 0)))
        >>> x.shape, x.dtype, x[:, 0, 0].tolist()
        (torch.Size([3, 32, 32]), torch.float32, [1.0, 0.0, 0.0])
    """

    def __init__(self, image_size: int, *, train: bool) -> None:
        self.image_size = check_image_size(image_size)
        self.train = bool(train)
        self.flip = RandomHorizontalFlip(0.5) if self.train else None

    def __call__(self, image: Image.Image) -> Tensor:
        if image.mode != "RGB":
            raise ValueError(f"expected an RGB image, got mode {image.mode!r}")
        size = [self.image_size, self.image_size]
        resized = TF.resize(image, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
        pixels = TF.pil_to_tensor(resized).to(torch.float32).div_(255.0)
        return self.flip(pixels) if self.flip is not None else pixels

    def __repr__(self) -> str:
        return f"{type(self).__name__}(image_size={self.image_size}, train={self.train})"
