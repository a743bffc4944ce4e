"""The study's data: Animals-10 from disk, or the embedded SYNTHETIC demo set, and its loaders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from advkit.data import Animals10, SyntheticAnimals10, make_loaders

from .config import StudyConfig
from .processes import world_size

__all__ = ["StudyData", "load_data"]


@dataclass
class StudyData:
    """Training and validation sets, with what a report must say about them.

    Attributes:
        train: The training split (random horizontal flips).
        val: The validation split (no augmentation).
        classes: Class names, label ``i`` is ``classes[i]``.
        synthetic: Whether these are the synthetic demo images rather than Animals-10.
        description: One line per split, for the report.
    """

    train: Dataset[Any]
    val: Dataset[Any]
    classes: tuple[str, ...]
    synthetic: bool
    description: str

    def training_loaders(
        self, config: StudyConfig, images: int = 0
    ) -> tuple[DataLoader[tuple[Tensor, Tensor]], DataLoader[tuple[Tensor, Tensor]]]:
        """Shuffled training (last partial batch dropped) and ordered validation loaders, seeded
        by ``config.seed``.

        With ``images`` > 0 the training loader holds only that many training images, a
        fixed random subset drawn by the seed (every stage that asks gets the same one).
        Under torchrun each process gets ``batch_size / processes`` samples of every step
        from a ``DistributedSampler``, so a step of the Trainer's DDP sees ``batch_size``
        samples as one process does.
        """
        train: Dataset[Any] = self.train
        total = len(self.train)  # type: ignore[arg-type]
        if 0 < images < total:
            order = torch.randperm(total, generator=torch.Generator().manual_seed(config.seed))
            train = Subset(self.train, sorted(order[:images].tolist()))
        processes = world_size()
        if processes > 1:
            return self._sharded_loaders(config, processes, train)
        return make_loaders(
            train,
            self.val,
            batch_size=config.batch_size,
            seed=config.seed,
            num_workers=config.num_workers,
            pin_memory=torch.cuda.is_available(),
            # A last batch of a few images gives BatchNorm a near-zero variance and the step
            # explodes (on the tiny preset's 50 images: weights of 2e3, NaN logits in eval).
            drop_last=len(train) > config.batch_size,  # type: ignore[arg-type]
        )

    def _sharded_loaders(
        self, config: StudyConfig, processes: int, train_set: Dataset[Any]
    ) -> tuple[DataLoader[tuple[Tensor, Tensor]], DataLoader[tuple[Tensor, Tensor]]]:
        if config.batch_size % processes:
            raise ValueError(
                f"--batch-size {config.batch_size} must be a multiple of the number of "
                f"processes ({processes}): each process trains on an equal share of a batch"
            )
        common: dict[str, Any] = {
            "batch_size": config.batch_size // processes,
            "num_workers": config.num_workers,
            "pin_memory": torch.cuda.is_available(),
        }
        train = DataLoader(
            train_set,
            sampler=DistributedSampler(train_set, shuffle=True, seed=config.seed),
            **common,
        )
        val = DataLoader(self.val, sampler=DistributedSampler(self.val, shuffle=False), **common)
        return train, val

    def val_loader(self, config: StudyConfig) -> DataLoader[tuple[Tensor, Tensor]]:
        """The whole validation split, for clean accuracy."""
        return DataLoader(self.val, batch_size=config.eval_batch, num_workers=config.num_workers)

    def subset_indices(self, size: int, seed: int) -> list[int]:
        """``size`` validation indices drawn without replacement by ``seed`` (all if fewer).

        Drawn at random rather than taken from the front: Animals-10's validation split is
        ordered by class, so its first images would all be dogs.
        """
        total = len(self.val)  # type: ignore[arg-type]
        if size >= total:
            return list(range(total))
        order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
        return sorted(order[:size].tolist())

    def held_out_batch(self, size: int, config: StudyConfig) -> tuple[Tensor, Tensor]:
        """``size`` validation images outside the attacked subset (fast AT's guard watches them).

        Taken from the attacked subset's complement, so the guard never sees the images the
        evaluations report on; from the whole split if the complement is empty.
        """
        attacked = set(self.subset_indices(config.eval_size, config.seed))
        total = len(self.val)  # type: ignore[arg-type]
        rest = [i for i in range(total) if i not in attacked] or list(range(total))
        items = [self.val[i] for i in rest[:size]]
        return torch.stack([image for image, _ in items]), torch.tensor([y for _, y in items])

    def attack_loader(self, size: int, config: StudyConfig) -> DataLoader[tuple[Tensor, Tensor]]:
        """The validation images every attack evaluation uses (the same for every model)."""
        subset = Subset(self.val, self.subset_indices(size, config.seed))
        return DataLoader(subset, batch_size=config.eval_batch, num_workers=config.num_workers)


def load_data(config: StudyConfig) -> StudyData:
    """Build both splits of the configured data set.

    Raises:
        ValueError: If the Animals-10 folder is missing or malformed (from :class:`Animals10`).
    """
    if config.data is None:
        common: dict[str, Any] = {
            "image_size": config.image_size,
            "num_images": config.demo_images,
            "seed": config.seed,
            "val_fraction": config.val_fraction,
            "progress": config.progress,
        }
        train: Any = SyntheticAnimals10("train", **common)
        val: Any = SyntheticAnimals10("val", **common)
    else:
        common = {
            "image_size": config.image_size,
            "seed": config.seed,
            "val_fraction": config.val_fraction,
            "progress": config.progress,
        }
        train = Animals10(config.data, "train", **common)
        val = Animals10(config.data, "val", **common)
    return StudyData(
        train=train,
        val=val,
        classes=tuple(train.classes),
        synthetic=bool(train.synthetic),
        description=f"{train.description}; {val.description}",
    )
