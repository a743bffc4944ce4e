"""One process of the two-process tests (run by the tests through launch_two_ranks, not by
pytest): certified_accuracy on a shard, and the smoothing objectives under DDP."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for conftest

from advkit.certification import Smooth, certified_accuracy
from advkit.training import Consistency, GaussianAugmentation, SmoothAdv, Trainer
from conftest import blob_images, tiny_model

SAMPLES, BATCH = 21, 4  # 6 batches, the last short

OBJECTIVES = {
    "gaussian": lambda: GaussianAugmentation(sigma=0.25),
    "smoothadv": lambda: SmoothAdv(sigma=0.25, eps=0.3, steps=2, samples=2),
    "consistency": lambda: Consistency(sigma=0.25, samples=2),
}


def certification_model() -> nn.Module:
    return tiny_model(seed=3)


def certify(distributed: bool | None) -> dict[str, Any]:
    images, labels = blob_images(SAMPLES, seed=2)
    loader = DataLoader(TensorDataset(images, labels), batch_size=BATCH)
    result = certified_accuracy(
        Smooth(certification_model(), 0.25),
        loader,
        n0=8,
        n=64,
        alpha=0.01,
        batch_size=50,
        attack_steps=1,
        attack_samples=2,
        generator=torch.Generator().manual_seed(3),
        progress=False,
        distributed=distributed,
    )
    return result.to_dict()


def other_weights() -> str:
    """certified_accuracy with another model on each process: the error every rank raises."""
    images, labels = blob_images(8, seed=2)
    smooth = Smooth(tiny_model(seed=int(os.environ["RANK"])), 0.25)
    try:
        certified_accuracy(smooth, [(images, labels)] * 2, n0=2, n=4, progress=False)
    except ValueError as err:
        return f"ValueError: {err}"
    return "ok"


def train() -> dict[str, Any]:
    images, labels = blob_images(32)
    data = TensorDataset(images, labels)
    results = {}
    for name, build in OBJECTIVES.items():
        torch.manual_seed(int(os.environ["RANK"]))
        trainer = Trainer(
            tiny_model(seed=0),
            lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
            objective=build(),
            device="cpu",
            progress=False,
        )
        loader = DataLoader(data, batch_size=8, sampler=DistributedSampler(data, shuffle=False))
        history = trainer.fit(loader, epochs=1)
        results[name] = {"state": trainer.model.state_dict(), "record": history.last}
    return results


def main(out: Path) -> None:
    torch.set_num_threads(1)
    saved = {"certified": certify(None), "other_weights": other_weights(), "training": train()}
    torch.save(saved, out / f"rank{os.environ['RANK']}.pt")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
