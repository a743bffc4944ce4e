"""Data for the study: the real Animals-10 photographs and a synthetic demo set.

:class:`Animals10` reads the Kaggle download (see :data:`~advkit.data.animals10.KAGGLE_URL`);
:class:`SyntheticAnimals10` makes a SYNTHETIC 10-class data set of procedural shapes in
memory, for runs without the download. Both yield ``(image, label)`` with float32 images
``[3, S, S]`` in ``[0, 1]`` (the model normalizes) and flip training images at random.
"""

from advkit.data.animals10 import CLASSES, FOLDER_NAMES, KAGGLE_URL, Animals10, animals10_loaders
from advkit.data.demo import DEMO_CLASSES, SyntheticAnimals10, render_synthetic
from advkit.data.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    UnreadableImageError,
    read_rgb,
    to_rgb,
)
from advkit.data.loaders import make_loaders
from advkit.data.split import stratified_split
from advkit.data.transforms import RandomHorizontalFlip, StudyTransform

__all__ = [
    "CLASSES",
    "DEFAULT_MAX_PIXELS",
    "DEMO_CLASSES",
    "FOLDER_NAMES",
    "IMAGE_EXTENSIONS",
    "KAGGLE_URL",
    "Animals10",
    "RandomHorizontalFlip",
    "StudyTransform",
    "SyntheticAnimals10",
    "UnreadableImageError",
    "animals10_loaders",
    "make_loaders",
    "read_rgb",
    "render_synthetic",
    "stratified_split",
    "to_rgb",
]
