"""The Kaggle Animals-10 data set as the study uses it: 10 classes, a seeded 80/20 split.

Download: https://www.kaggle.com/datasets/alessiocorrado99/animals10 (by Alessio Corrado).
The archive unpacks to ``raw-img/`` with one folder per class, named in Italian::

    raw-img/
        cane/        OIP-....jpeg, ...      -> dog
        cavallo/     ...                    -> horse
        elefante/    ...                    -> elephant
        farfalla/    ...                    -> butterfly
        gallina/     ...                    -> chicken
        gatto/       ...                    -> cat
        mucca/       ...                    -> cow
        pecora/      ...                    -> sheep
        ragno/       ...                    -> spider
        scoiattolo/  ...                    -> squirrel
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from advkit._checks import check_bool, check_int
from advkit.data.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    CheckLevel,
    UnreadableImageError,
    check_image,
    check_regular_file,
    read_rgb,
)
from advkit.data.loaders import make_loaders
from advkit.data.split import check_seed, check_val_fraction, stratified_split
from advkit.data.transforms import StudyTransform, check_image_size

__all__ = ["CLASSES", "FOLDER_NAMES", "KAGGLE_URL", "Animals10", "animals10_loaders"]

KAGGLE_URL = "https://www.kaggle.com/datasets/alessiocorrado99/animals10"
"""Where to download the Animals-10 data set (Kaggle, by Alessio Corrado)."""

FOLDER_NAMES: dict[str, str] = {
    "cane": "dog",
    "cavallo": "horse",
    "elefante": "elephant",
    "farfalla": "butterfly",
    "gallina": "chicken",
    "gatto": "cat",
    "mucca": "cow",
    "pecora": "sheep",
    "ragno": "spider",
    "scoiattolo": "squirrel",
}
"""Italian folder name -> English class name."""

CLASSES: tuple[str, ...] = tuple(FOLDER_NAMES.values())
"""English class names; label ``i`` is ``CLASSES[i]``. The order is that of the Italian folder
names sorted alphabetically, i.e. what ``torchvision.datasets.ImageFolder`` assigns to the
Kaggle download, so labels agree with models trained that way."""

Split = Literal["train", "val"]
OnError = Literal["raise", "skip"]

_SKIP_HINT = "pass on_error='skip' to leave unreadable files out"


def _visible(name: str) -> bool:
    # Hidden entries are OS or tool metadata (.DS_Store, .ipynb_checkpoints), never data.
    return not name.startswith(".")


def _class_of(name: str) -> int | None:
    lowered = name.lower()
    english = FOLDER_NAMES.get(lowered, lowered)
    return CLASSES.index(english) if english in CLASSES else None


def _resolve_root(root: str | os.PathLike[str]) -> Path:
    """The folder that holds the class folders: ``root`` itself or its ``raw-img/``."""
    if not isinstance(root, str | os.PathLike):
        raise TypeError(f"root must be a path, got {type(root).__name__}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise ValueError(
            f"Animals-10 folder not found: {str(path)!r}; expected the raw-img/ folder of the "
            f"Kaggle download ({KAGGLE_URL}) with one folder per class"
        )
    has_classes = any(
        entry.is_dir() and _class_of(entry.name) is not None for entry in path.iterdir()
    )
    nested = path / "raw-img"
    if not has_classes and nested.is_dir():
        return nested
    return path


def _class_folders(root: Path) -> list[Path]:
    """One folder per class, in label order; Italian or English names, any letter case."""
    found: dict[int, list[Path]] = {}
    unknown: list[str] = []
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or not _visible(entry.name):
            continue
        label = _class_of(entry.name)
        if label is None:
            unknown.append(entry.name)
        else:
            found.setdefault(label, []).append(entry)
    for label, folders in found.items():
        if len(folders) > 1:
            names = ", ".join(repr(f.name) for f in folders)
            raise ValueError(
                f"class {CLASSES[label]!r} has several folders in {str(root)!r}: {names}; "
                "keep exactly one"
            )
    missing = [label for label in range(len(CLASSES)) if label not in found]
    if missing:
        italian = list(FOLDER_NAMES)
        wanted = ", ".join(f"{italian[i]!r} (or {CLASSES[i]!r})" for i in missing)
        present = sorted(f[0].name for f in found.values()) + unknown
        raise ValueError(
            f"missing class folders in {str(root)!r}: {wanted}; found {present}. Expected the "
            f"raw-img/ folder of the Kaggle Animals-10 download ({KAGGLE_URL})"
        )
    if unknown:
        warnings.warn(
            f"ignoring folders that are not Animals-10 classes in {str(root)!r}: {unknown}",
            stacklevel=3,  # the caller of Animals10()
        )
    return [found[label][0] for label in range(len(CLASSES))]


def _files_in(folder: Path) -> list[Path]:
    """Every visible file below ``folder``, in a platform-independent order."""
    files: list[Path] = []
    for directory, subdirs, names in os.walk(folder):
        subdirs[:] = [d for d in subdirs if _visible(d)]
        files.extend(Path(directory, name) for name in names if _visible(name))
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _check_link(path: Path, root: Path, follow_symlinks: bool) -> None:
    """Refuse a symbolic link (or a path through one) that leads out of ``root``."""
    if follow_symlinks:
        return
    real_root = os.path.realpath(root)
    target = os.path.realpath(path)
    if os.path.commonpath([real_root, target]) != real_root:
        raise UnreadableImageError(
            path,
            f"a symbolic link to {target!r}, outside the data folder {real_root!r} (pass "
            "follow_symlinks=True to read such files)",
        )


def _find_unreadable(
    paths: Sequence[Path],
    level: CheckLevel,
    progress: bool,
    stop_at_first: bool,
    *,
    root: Path,
    max_pixels: int,
    follow_symlinks: bool,
) -> list[UnreadableImageError]:
    """Check files (in threads: PIL releases the GIL while decoding); return the failures."""

    def check(path: Path) -> UnreadableImageError | None:
        if not _is_image_name(path):
            return UnreadableImageError(
                path, f"not an image file (extension {path.suffix!r}, expected {IMAGE_EXTENSIONS})"
            )
        try:
            _check_link(path, root, follow_symlinks)
            check_regular_file(path)  # also with verify="none": a FIFO would hang the loader
            check_image(path, level, max_pixels=max_pixels)
        except UnreadableImageError as err:
            return err
        return None

    failures: list[UnreadableImageError] = []
    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
    try:
        results: Iterable[UnreadableImageError | None] = (
            pool.map(check, paths) if level != "none" else map(check, paths)
        )
        bar = tqdm(
            results,
            total=len(paths),
            desc=f"checking images ({level})",
            unit="file",
            disable=not progress or level == "none",
            leave=False,
        )
        for failure in bar:
            if failure is not None:
                failures.append(failure)
                if stop_at_first:
                    break
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return failures


class Animals10(Dataset[tuple[Tensor, int]]):
    """Kaggle Animals-10: real photographs of 10 animal classes, split 80/20 by a seed.

    ``root`` is the ``raw-img/`` folder of the download (see the module docstring) or the
    folder that contains it. Class folders may carry the Italian names of the download or the
    English names of :data:`CLASSES`, in any letter case; hidden files and folders are
    ignored, other folders are ignored with a warning. Images of any PIL mode (RGB, RGBA,
    palette, greyscale, CMYK, 16-bit, ...) are read as RGB.

    The split is stratified (each class contributes ``val_fraction`` of its files to ``"val"``)
    and depends only on the class, the file's path inside its class folder and ``seed``
    (see :func:`~advkit.data.split.stratified_split`): ``"train"`` and ``"val"`` built with the
    same arguments are disjoint and together hold every file.

    Unreadable files: the files of this split are checked when the data set is built, at the
    depth ``verify`` asks for (``"header"``, the default, takes seconds for the whole data
    set; ``"full"`` decodes every image: about a minute). A file that fails, or that does not
    have an image extension, raises :class:`~advkit.data.images.UnreadableImageError` (a
    ``ValueError`` naming the file) when ``on_error="raise"``; with ``on_error="skip"`` it is
    left out with one warning and listed in :attr:`skipped`. A file that passes the check but
    fails to decode when loaded (possible unless ``verify="full"``) raises likewise, or with
    ``on_error="skip"`` is reported in a warning and replaced by the next readable sample of
    the split, so a data loader never sees a hole. Nothing is ever written into ``root``.

    Args:
        root: The ``raw-img/`` folder, or a folder containing ``raw-img/``.
        split: ``"train"`` or ``"val"``.
        image_size: Side of the square output images (the study uses 224).
        seed: Selects the split.
        val_fraction: Share of each class in ``"val"``, in ``(0, 1)`` (the study: 0.2).
        transform: Maps the RGB :class:`PIL.Image.Image` to the returned image. Defaults to
            :class:`~advkit.data.transforms.StudyTransform`: resize to ``image_size`` squared,
            random horizontal flip for ``"train"`` only, float32 in ``[0, 1]``, no
            normalization (the model normalizes).
        on_error: ``"raise"`` or ``"skip"`` for unreadable files, as described above.
        verify: ``"header"``, ``"full"`` or ``"none"``: how deeply files are checked when the
            data set is built. A file without an image extension (:data:`IMAGE_EXTENSIONS`)
            counts as unreadable whatever this says.
        progress: Show a progress bar while checking files.
        max_pixels: Images of more pixels (width x height) are unreadable: refused from the
            header, before decoding, so a decompression bomb cannot exhaust memory.
        follow_symlinks: Read symbolic links that lead outside ``root``. By default such a
            file is unreadable (it is not part of the data folder); links inside ``root``
            are always followed. Only regular files are ever read: FIFOs, devices and
            sockets named like images are unreadable.

    Attributes:
        classes: English class names, :data:`CLASSES`.
        class_to_idx: Class name -> label.
        samples: ``(path, label)`` of every item, in a fixed order.
        targets: The label of every item.
        skipped: ``(path, reason)`` of every file left out or replaced so far.
        root: The resolved folder holding the class folders.
        synthetic: ``False``: these are real photographs.
        description: One line saying what the data is, for reports.

    Raises:
        ValueError: If the folder or a class folder is missing, a class has no image files,
            an argument is out of range, or (with ``on_error="raise"``) a file is unreadable.
        TypeError: If an argument has the wrong type.
    """

    synthetic = False

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: Split = "train",
        *,
        image_size: int = 224,
        seed: int = 0,
        val_fraction: float = 0.2,
        transform: Callable[[Image.Image], Any] | None = None,
        on_error: OnError = "raise",
        verify: CheckLevel = "header",
        progress: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        follow_symlinks: bool = False,
    ) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if verify not in ("none", "header", "full"):
            raise ValueError(f"verify must be 'none', 'header' or 'full', got {verify!r}")
        self.follow_symlinks = check_bool(follow_symlinks, "follow_symlinks")
        self.max_pixels = check_int(max_pixels, "max_pixels", minimum=1)
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        self.split: Split = split
        self.image_size = check_image_size(image_size)
        self.seed = check_seed(seed)
        self.val_fraction = check_val_fraction(val_fraction)
        self.on_error: OnError = on_error
        self.transform = transform or StudyTransform(self.image_size, train=split == "train")
        self.root = _resolve_root(root)
        self.classes: tuple[str, ...] = CLASSES
        self.class_to_idx = {name: label for label, name in enumerate(CLASSES)}
        self.skipped: list[tuple[str, str]] = []

        paths, labels, keys = self._list(_class_folders(self.root))
        train, val = stratified_split(keys, labels, val_fraction=self.val_fraction, seed=seed)
        chosen = train if split == "train" else val
        self.samples: list[tuple[str, int]] = self._drop_unreadable(
            [(paths[i], labels[i]) for i in chosen], verify, progress
        )
        if not self.samples:
            raise ValueError(f"no readable images in the {split!r} split of {str(self.root)!r}")
        self.targets = [label for _, label in self.samples]
        self._unreadable: set[int] = set()

    @staticmethod
    def _list(folders: list[Path]) -> tuple[list[str], list[int], list[str]]:
        paths: list[str] = []
        labels: list[int] = []
        keys: list[str] = []
        for label, folder in enumerate(folders):
            files = _files_in(folder)
            if not any(_is_image_name(f) for f in files):
                raise ValueError(
                    f"class folder {str(folder)!r} ({CLASSES[label]}) has no image files; "
                    f"expected files ending in one of {IMAGE_EXTENSIONS}"
                )
            for file in files:
                paths.append(str(file))
                labels.append(label)
                # English name + path inside the class folder: renaming folders keeps the split.
                keys.append(f"{CLASSES[label]}/{file.relative_to(folder).as_posix()}")
        return paths, labels, keys

    def _drop_unreadable(
        self, samples: list[tuple[str, int]], verify: CheckLevel, progress: bool
    ) -> list[tuple[str, int]]:
        stop_at_first = self.on_error == "raise"
        failures = _find_unreadable(
            [Path(p) for p, _ in samples],
            verify,
            progress,
            stop_at_first,
            root=self.root,
            max_pixels=self.max_pixels,
            follow_symlinks=self.follow_symlinks,
        )
        if failures and self.on_error == "raise":
            first = failures[0]
            raise UnreadableImageError(first.path, f"{first.reason} ({_SKIP_HINT})")
        if not failures:
            return samples
        bad = {failure.path for failure in failures}
        self.skipped.extend((f.path, f.reason) for f in failures)
        shown = "; ".join(f"{f.path!r}: {f.reason}" for f in failures[:5])
        more = f" and {len(failures) - 5} more (see .skipped)" if len(failures) > 5 else ""
        warnings.warn(
            f"skipping {len(failures)} unreadable file(s) in the {self.split!r} split: "
            f"{shown}{more}",
            stacklevel=3,
        )
        return [(path, label) for path, label in samples if path not in bad]

    @property
    def description(self) -> str:
        """One line for reports: what the data is and how it was split."""
        return (
            f"Animals-10 (Kaggle, real photographs), {self.split} split: {len(self)} images, "
            f"{len(self.classes)} classes, {self.image_size}x{self.image_size}, "
            f"stratified {1 - self.val_fraction:.0%}/{self.val_fraction:.0%} split, seed "
            f"{self.seed}"
        )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        """Return ``(image, label)``; see the class docstring for unreadable files."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index %= len(self)
        for offset in range(len(self)):
            current = (index + offset) % len(self)
            if current in self._unreadable:
                continue
            path, label = self.samples[current]
            try:
                image = read_rgb(path, max_pixels=self.max_pixels)
            except UnreadableImageError as err:
                if self.on_error == "raise":
                    raise UnreadableImageError(path, f"{err.reason} ({_SKIP_HINT})") from err
                self._unreadable.add(current)
                self.skipped.append((path, err.reason))
                warnings.warn(f"{err}; using the next readable sample instead", stacklevel=2)
                continue
            return self.transform(image), label
        raise ValueError(f"no readable images left in the {self.split!r} split")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"samples={len(self)}, image_size={self.image_size}, seed={self.seed})"
        )


def animals10_loaders(
    root: str | os.PathLike[str],
    *,
    batch_size: int = 64,
    image_size: int = 224,
    seed: int = 0,
    val_fraction: float = 0.2,
    num_workers: int = 0,
    on_error: OnError = "raise",
    verify: CheckLevel = "header",
    progress: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    follow_symlinks: bool = False,
    **loader_kwargs: Any,
) -> tuple[DataLoader[tuple[Tensor, Tensor]], DataLoader[tuple[Tensor, Tensor]]]:
    """Train and validation loaders over Animals-10 with the study's settings.

    Args:
        root: The ``raw-img/`` folder, or a folder containing it.
        batch_size: Images per batch (the study: 64).
        image_size: Side of the square images (the study: 224).
        seed: Selects the split and the shuffling order.
        val_fraction: Share of each class used for validation.
        num_workers: Loader worker processes.
        on_error: What unreadable files do; see :class:`Animals10`.
        verify: How deeply files are checked up front; see :class:`Animals10`.
        progress: Show a progress bar while checking files.
        max_pixels: Largest image read; see :class:`Animals10`.
        follow_symlinks: Read links that leave ``root``; see :class:`Animals10`.
        **loader_kwargs: Passed to :func:`~advkit.data.loaders.make_loaders`
            (``pin_memory``, ``drop_last``, ``persistent_workers``).

    Returns:
        ``(train_loader, val_loader)``; see :func:`~advkit.data.loaders.make_loaders`.
    """
    common: dict[str, Any] = {
        "image_size": image_size,
        "seed": seed,
        "val_fraction": val_fraction,
        "on_error": on_error,
        "verify": verify,
        "progress": progress,
        "max_pixels": max_pixels,
        "follow_symlinks": follow_symlinks,
    }
    train = Animals10(root, "train", **common)
    val = Animals10(root, "val", **common)
    return make_loaders(
        train, val, batch_size=batch_size, seed=seed, num_workers=num_workers, **loader_kwargs
    )
