"""One process of the two-process DDP test (run by test_distributed.py, not by pytest).

Each rank trains the same setups under DistributedDataParallel with the gloo backend and saves
its final weights, history and metrics to ``<out>/rank<R>.pt`` for the test to compare. At exit it
writes how many DistributedDataParallel wrappers were still alive to ``<out>/rank<R>.exit``: a
wrapper freed during interpreter finalization can abort the process (SIGABRT, "terminate called
without an active exception"), so advkit's Trainers drop theirs at exit, even when the script keeps
the Trainers referenced, as this one does.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for conftest

import advkit.training.trainer as trainer_module
from advkit import IFGSM
from advkit.training import Trainer
from conftest import blob_images, tiny_model

LOCAL_BATCH = 8
EPOCHS = 2
KEPT: list[Trainer] = []  # Trainers still referenced when the interpreter exits


def count_wrappers_at_exit(path: Path) -> None:
    """Registered before any Trainer exists, so it runs after advkit's exit hook (LIFO)."""
    gc.collect()
    path.write_text(str(sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())))


def bn_free_model() -> nn.Module:
    """Without BatchNorm, DDP on 2 x 8 samples computes the same step as one process on 16."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


def datasets() -> tuple[TensorDataset, TensorDataset]:
    images, labels = blob_images(96)
    return TensorDataset(images[:64], labels[:64]), TensorDataset(images[64:], labels[64:])


def make_trainer(model: nn.Module, **options: Any) -> Trainer:
    """The adversarial setup both the DDP run and the single-process reference use."""
    return Trainer(
        model,
        lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
        attack=IFGSM(eps=8 / 255, steps=2),
        adv_weight=0.5,
        val_attack=IFGSM(eps=8 / 255, steps=3),
        device="cpu",  # gloo on the CPU, also on machines with GPUs
        progress=False,
        **options,
    )


def sharded(dataset: TensorDataset, *, shuffle: bool = False) -> DataLoader:
    sampler = DistributedSampler(dataset, shuffle=shuffle, seed=0)
    return DataLoader(dataset, batch_size=LOCAL_BATCH, sampler=sampler)


def main(out_dir: Path) -> None:
    atexit.register(count_wrappers_at_exit, out_dir / f"rank{os.environ['RANK']}.exit")
    writes: list[str] = []
    original_save = trainer_module.save_checkpoint

    def counting_save(state: dict[str, Any], path: Path) -> Path:
        writes.append(Path(path).name)
        return original_save(state, path)

    trainer_module.save_checkpoint = counting_save
    train_set, val_set = datasets()

    trainer = make_trainer(bn_free_model(), checkpoint_dir=out_dir / "checkpoints")
    history = trainer.fit(sharded(train_set), sharded(val_set), epochs=EPOCHS)
    final = trainer.evaluate(sharded(val_set), attack=IFGSM(eps=8 / 255, steps=3))

    # BatchNorm model, shuffled shards: running statistics must end equal on both ranks.
    bn_trainer = Trainer(
        tiny_model(), lambda p: torch.optim.SGD(p, lr=0.1), device="cpu", progress=False
    )
    bn_trainer.fit(sharded(train_set, shuffle=True), epochs=1)

    torch.save(
        {
            "rank": trainer.rank,
            "world_size": trainer.world_size,
            "state": trainer.model.state_dict(),
            "history": history.epochs,
            "final": final,
            "writes": writes,
            "bn_state": bn_trainer.model.state_dict(),
        },
        out_dir / f"rank{trainer.rank}.pt",
    )
    KEPT.extend([trainer, bn_trainer])
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
