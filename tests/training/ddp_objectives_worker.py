"""One process of the two-process DDP test of the objectives (run by test_objectives_ddp.py).

Each rank trains TRADES, AWP on TRADES and free AT under DistributedDataParallel (gloo)
and saves its final weights to ``<out>/rank<R>.pt``: the ranks must end identical. Then
TRADES once more with the Trainer's generator, seeded with the rank, checkpointed in
``<out>/generator``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for conftest

from advkit.training import AWP, TRADES, FreeAT, Trainer
from conftest import blob_images, tiny_model

OBJECTIVES = {
    "trades": lambda: TRADES(eps=8 / 255, steps=2),
    "awp": lambda: AWP(TRADES(eps=8 / 255, steps=2), gamma=0.01),
    "free": lambda: FreeAT(eps=8 / 255, replays=2),
}


def main(out: Path) -> None:
    torch.set_num_threads(1)
    images, labels = blob_images(32)
    data = TensorDataset(images, labels)
    results = {}
    for name, build in OBJECTIVES.items():
        torch.manual_seed(
            int(torch.distributed.get_rank()) if torch.distributed.is_initialized() else 0
        )
        trainer = Trainer(
            tiny_model(seed=0),
            lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
            objective=build(),
            device="cpu",
            progress=False,
        )
        loader = DataLoader(data, batch_size=8, sampler=DistributedSampler(data, shuffle=False))
        history = trainer.fit(loader, epochs=1)
        results[name] = {
            "state": trainer.model.state_dict(),
            "distributed": trainer.world_size,
            "record": history.last,
        }
    results["generator"] = _train_with_a_generator(loader, out / "generator")
    torch.save(results, out / f"rank{trainer.rank}.pt")
    # Leave the group together: a rank that exits while the other's gloo threads still talk
    # to it aborts ("terminate called without an active exception").
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def _train_with_a_generator(loader: DataLoader, checkpoint_dir: Path) -> dict:
    rank = int(torch.distributed.get_rank()) if torch.distributed.is_initialized() else 0
    torch.manual_seed(0)  # the same global state everywhere: the generators must differ
    trainer = Trainer(
        tiny_model(seed=0),
        lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
        objective=TRADES(eps=8 / 255, steps=2),
        device="cpu",
        progress=False,
        checkpoint_dir=checkpoint_dir,
        generator=torch.Generator().manual_seed(rank),  # one stream per process
    )
    trainer.fit(loader, epochs=1)
    return {"state": trainer.model.state_dict(), "generator": trainer.generator.get_state()}


if __name__ == "__main__":
    main(Path(sys.argv[1]))
