"""One process of the two-process evaluation test (run by test_sharded.py, not by pytest).

Each rank runs every evaluation of :func:`evaluations` on its shard and saves the global
results, the bad-input outcomes and a gather of sample indices to ``<out>/rank<R>.pt``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for conftest

from advkit.attacks import APGD, IFGSM, MIFGSM, PGD, AutoAttack, Square
from advkit.evaluation import (
    accuracy,
    evaluate_grid,
    robust_accuracy,
    shard_loader,
    transfer_matrix,
)
from conftest import blob_images, tiny_model, train_tiny

SAMPLES = 37  # not a multiple of the batch size or of the world size
BATCH = 8  # 5 batches: rank 0 evaluates 3 of them (21 samples), rank 1 two (16)


@cache
def models() -> tuple[nn.Module, nn.Module]:
    """Two tiny models trained on other blobs (shared: nothing may modify them)."""
    images, labels = blob_images(64 + SAMPLES, seed=4)
    images, labels = images[:64], labels[:64]
    return tuple(train_tiny(tiny_model(seed=s), images, labels) for s in (1, 2))  # type: ignore[return-value]


def data() -> tuple[Tensor, Tensor]:
    """Blob images, every fifth label wrong: some samples correct, some not."""
    images, labels = blob_images(64 + SAMPLES, seed=4)
    images, labels = images[64:], labels[64:]
    labels[::5] = (labels[::5] + 1) % 4
    return images, labels


def loader(batch_size: int = BATCH) -> DataLoader:
    return DataLoader(TensorDataset(*data()), batch_size=batch_size)


def evaluations() -> dict[str, Callable[[bool | None], dict[str, Any]]]:
    """Every evaluation the test compares, as ``distributed -> to_dict()`` (run on any rank)."""
    model, other = models()
    eps = [0.0, 2 / 255, 8 / 255]

    def seeded() -> torch.Generator:
        return torch.Generator().manual_seed(7)

    def as_list(batches: DataLoader) -> list[tuple[Tensor, Tensor]]:
        return list(batches)

    return {
        "accuracy": lambda d: accuracy(model, loader(), progress=False, distributed=d).to_dict(),
        "accuracy_one_batch": lambda d: accuracy(
            model, loader(batch_size=64), progress=False, distributed=d
        ).to_dict(),
        "robust_ifgsm": lambda d: robust_accuracy(
            model, loader(), IFGSM(eps=4 / 255, steps=3), progress=False, distributed=d
        ).to_dict(),
        "robust_pgd_seeded": lambda d: robust_accuracy(
            model,
            loader(),
            PGD(eps=8 / 255, steps=1),
            generator=seeded(),
            progress=False,
            distributed=d,
        ).to_dict(),
        "robust_list_loader": lambda d: robust_accuracy(
            model, as_list(loader()), MIFGSM(eps=4 / 255, steps=2), progress=False, distributed=d
        ).to_dict(),
        "robust_autoattack_seeded": lambda d: robust_accuracy(
            model,
            loader(),
            AutoAttack(
                eps=8 / 255,
                version="custom",
                attacks=[APGD(eps=8 / 255, steps=3), Square(eps=8 / 255, n_queries=10)],
            ),
            generator=seeded(),
            progress=False,
            distributed=d,
        ).to_dict(),
        "grid_ifgsm": lambda d: evaluate_grid(
            model,
            loader(),
            IFGSM,
            eps=eps,
            steps=[1, 3],
            max_batch=20,
            progress=False,
            distributed=d,
        ).to_dict(),
        "grid_pgd_seeded": lambda d: evaluate_grid(
            model,
            loader(),
            PGD,
            eps=eps[1:],
            steps=[2],
            generator=seeded(),
            progress=False,
            distributed=d,
        ).to_dict(),
        "transfer": lambda d: transfer_matrix(
            {"a": model, "b": other},
            {"a": model, "b": other},
            loader(),
            PGD(eps=8 / 255, steps=2),
            generator=seeded(),
            progress=False,
            distributed=d,
        ).to_dict(),
    }


def _outcome(run: Callable[[], Any]) -> str:
    """``"ok"`` or the exception's type and message."""
    try:
        run()
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return "ok"


def bad_inputs(rank: int) -> dict[str, str]:
    """Wrong calls: each must stop every rank with a message, none may hang."""
    model, _ = models()
    images, labels = data()
    attack = IFGSM(eps=4 / 255, steps=1)
    broken = images.clone()
    broken[BATCH + 1] = 2.0  # outside the bounds, in batch 1: rank 1's
    mine = loader(batch_size=BATCH if rank == 0 else 4)
    shuffled = DataLoader(
        TensorDataset(images, labels),
        batch_size=BATCH,
        shuffle=True,
        generator=torch.Generator().manual_seed(rank),
    )
    padded = DataLoader(
        TensorDataset(images, labels), batch_size=BATCH, sampler=DistributedSampler(images)
    )
    return {
        "lengths": _outcome(lambda: accuracy(model, mine, progress=False)),
        "calls": _outcome(
            lambda: (
                accuracy(model, loader(), progress=False)
                if rank == 0
                else robust_accuracy(model, loader(), attack, progress=False)
            )
        ),
        "one_rank_fails": _outcome(
            lambda: robust_accuracy(
                model,
                DataLoader(TensorDataset(broken, labels), batch_size=BATCH),
                attack,
                progress=False,
            )
        ),
        "order": _outcome(lambda: accuracy(model, shuffled, progress=False)),
        "distributed_sampler": _outcome(lambda: accuracy(model, padded, progress=False)),
        "generators": _outcome(
            lambda: robust_accuracy(
                model,
                loader(),
                PGD(eps=4 / 255, steps=1),
                generator=torch.Generator().manual_seed(rank),
                progress=False,
            )
        ),
        # Same length, other data: a map-style loader (a checksum of its first sample) and a
        # list (every batch's checksum, compared at the end).
        "other_data": _outcome(lambda: accuracy(model, other_data(rank), progress=False)),
        "other_data_list": _outcome(
            lambda: accuracy(model, list(other_data(rank)), progress=False)
        ),
        "other_labels_list": _outcome(
            lambda: accuracy(model, list(other_data(rank, labels_only=True)), progress=False)
        ),
        # Unseeded models: each process holds other weights (issue 29, the scaling guide).
        "other_weights": _outcome(
            lambda: robust_accuracy(tiny_model(seed=rank), loader(), attack, progress=False)
        ),
        "timeout_inf": _outcome(lambda: with_timeout("inf", lambda: accuracy(model, loader()))),
        "still_usable": _outcome(lambda: accuracy(model, loader(), progress=False)),
    }


def with_timeout(value: str, run: Callable[[], Any]) -> Any:
    """``run()`` with ADVKIT_EVAL_TIMEOUT set to ``value``, restored after."""
    before = os.environ.get("ADVKIT_EVAL_TIMEOUT")
    os.environ["ADVKIT_EVAL_TIMEOUT"] = value
    try:
        return run()
    finally:
        if before is None:
            del os.environ["ADVKIT_EVAL_TIMEOUT"]
        else:
            os.environ["ADVKIT_EVAL_TIMEOUT"] = before


def other_data(rank: int, labels_only: bool = False) -> DataLoader:
    """A loader as long as :func:`loader` over data drawn without a common seed."""
    images, labels = data()
    drawn = torch.rand(images.shape, generator=torch.Generator().manual_seed(100 + rank))
    if labels_only:
        labels = labels.clone()
        labels[-1] = (labels[-1] + 1 + rank) % 4  # the last batch differs, in one label
    return DataLoader(TensorDataset(images if labels_only else drawn, labels), batch_size=BATCH)


class Stalling(nn.Module):
    """A model whose forward pass sleeps ``seconds`` once (a dead GPU, a stuck worker)."""

    def __init__(self, model: nn.Module, seconds: float) -> None:
        super().__init__()
        self.model, self.seconds = model, seconds

    def forward(self, inputs: Tensor) -> Tensor:
        if self.seconds:
            time.sleep(self.seconds)
            self.seconds = 0.0
        return self.model(inputs)


def stall(out_dir: Path, rank: int, seconds: float) -> None:
    """Rank 1 stalls inside forward mid-evaluation; rank 0 must stop at the end's timeout."""
    model = Stalling(tiny_model(seed=1), seconds if rank == 1 else 0.0)
    start = time.monotonic()
    outcome = _outcome(
        lambda: robust_accuracy(model, loader(), IFGSM(eps=2 / 255, steps=1), progress=False)
    )
    saved = {"outcome": outcome, "seconds": time.monotonic() - start}
    torch.save(saved, out_dir / f"rank{rank}.pt")
    other = out_dir / f"rank{1 - rank}.pt"
    deadline = time.monotonic() + 60
    while not other.exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # the other rank may still be waiting in a barrier with this one
    os._exit(0)


def sample_order(batch_size: int) -> tuple[Tensor, Tensor]:
    """Every sample's index, and a random number drawn for it from its batch's generator,
    gathered from the shards in the loader's order."""
    indices = torch.arange(SAMPLES)
    batches = DataLoader(TensorDataset(indices, indices), batch_size=batch_size)
    seen, drawn = [], []
    generator = torch.Generator().manual_seed(11)
    with shard_loader(batches, call="sample_order", generator=generator) as shard:
        for inputs, _ in shard.batches(None, progress=False, description=""):
            seen.append(inputs)
            drawn.append(torch.rand(inputs.shape[0], generator=shard.generator))
    return shard.gather(seen), shard.gather(drawn)


def main(out_dir: Path) -> None:
    rank = int(os.environ["RANK"])
    if "STALL_SECONDS" in os.environ:
        stall(out_dir, rank, float(os.environ["STALL_SECONDS"]))
    results = {name: run(None) for name, run in evaluations().items()}
    saved = {
        "rank": rank,
        "results": results,
        "orders": {size: sample_order(size) for size in (BATCH, 64)},
        "bad": bad_inputs(rank),
    }
    torch.save(saved, out_dir / f"rank{rank}.pt")
    # Last: rank 1 never starts the evaluation; rank 0 must stop at the timeout, not hang.
    if rank == 0:
        start = time.monotonic()
        missing = _outcome(lambda: accuracy(models()[0], loader(), progress=False))
        torch.save(
            {"missing": missing, "seconds": time.monotonic() - start}, out_dir / "missing.pt"
        )
    else:
        deadline = time.monotonic() + 60
        while not (out_dir / "missing.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    os._exit(0)  # the process group is left mid-barrier on purpose: no orderly shutdown


if __name__ == "__main__":
    main(Path(sys.argv[1]))
