"""Kill saves with SIGKILL at random moments and check what is left on disk.

Each trial writes a good file, starts a process that saves the same kind of file to the same
path in a loop, kills it with ``SIGKILL`` after a random delay, and checks that

* the file at the path still loads (the last complete save, old or new: never a torn one),
* the next save of that kind in the folder leaves no temporary file behind.

Kinds: ``checkpoint`` (:meth:`advkit.training.Trainer.save`), ``free`` and ``awp`` (the
Trainer's checkpoint with a :class:`~advkit.training.FreeAT` objective holding a carried
perturbation, or an :class:`~advkit.training.AWP` objective; loaded back with the objective's
state) and ``pruned`` (:func:`advkit.pruning.save_pruned`). The test suite runs a handful of trials
(``tests/training/test_fault_injection.py``); run more from the repository root with::

    PYTHONPATH=src python tools/fault_injection.py --trials 30

It prints one JSON line per kind: trials, how many kills left a temporary file (which the
next save then removed), and failures (must be 0).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import signal
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import torch
from torch import nn

KINDS = ("checkpoint", "free", "awp", "pruned")
CHECKPOINT_KINDS = ("checkpoint", "free", "awp")


def model(seed: int, width: int = 512) -> nn.Module:
    """A conv net of ~4 MB, so that a save takes long enough to be killed part-way."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, width, 3), nn.BatchNorm2d(width), nn.Conv2d(width, width, 3), nn.Flatten()
    )


def objective(kind: str, seed: int) -> object:
    """The objective a checkpoint of ``kind`` trains with (``None`` for the default)."""
    from advkit.training import AWP, TRADES, FreeAT

    if kind == "free":
        free = FreeAT(eps=8 / 255, replays=2)
        generator = torch.Generator().manual_seed(seed)
        delta = (torch.rand(8, 3, 8, 8, generator=generator) * 2 - 1) * 8 / 255
        free.load_state_dict({"delta": delta, "replay": 1})
        return free
    if kind == "awp":
        return AWP(TRADES(eps=8 / 255, steps=2), gamma=0.01)
    return None


def trainer(kind: str, seed: int) -> object:
    """A Trainer of ``kind`` on :func:`model` with ``seed``."""
    from advkit.training import Trainer

    net = model(seed)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    chosen = objective(kind, seed)
    extra = {} if chosen is None else {"objective": chosen}
    return Trainer(net, optimizer, device="cpu", progress=False, **extra)


def save(kind: str, path: Path, seed: int) -> None:
    """One save of ``kind`` to ``path``."""
    if kind in CHECKPOINT_KINDS:
        trainer(kind, seed).save(path)  # type: ignore[attr-defined]
    else:
        from advkit.pruning import save_pruned

        save_pruned(model(seed), path)


def load(kind: str, path: Path) -> None:
    """Load ``path`` fully (checksum included); raises if it is damaged."""
    if kind == "checkpoint":
        from advkit.training import load_weights

        load_weights(model(0), path)
    elif kind in CHECKPOINT_KINDS:
        loaded = trainer(kind, 0)
        loaded.load(path)  # type: ignore[attr-defined]
        if kind == "free":  # the objective's state came back whole
            state = loaded.objective.state_dict()  # type: ignore[attr-defined]
            delta = state["delta"]
            if state["replay"] != 1 or delta is None or delta.shape != (8, 3, 8, 8):
                raise ValueError(f"the loaded FreeAT state is not a saved one: {state}")
    else:
        from advkit.pruning import load_pruned

        load_pruned(path, model(0))


def temporaries(folder: Path) -> list[Path]:
    """The temporary files in ``folder``."""
    return sorted(p for p in folder.iterdir() if p.name.endswith(".tmp"))


def trial(kind: str, folder: Path, rng: random.Random, max_delay: float = 0.5) -> dict:
    """One kill; returns what was found (``ok`` is False on any failure)."""
    path = folder / f"{kind}.pt"
    save(kind, path, seed=1)
    # A forked child has everything imported already: it starts saving at once.
    ready, told = multiprocessing.get_context("fork").Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=_child, args=(kind, path, told))
    child.start()
    ready.recv()  # the child finished one save and is saving in a loop
    time.sleep(rng.uniform(0, max_delay))
    os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
    child.join()
    result: dict = {"kind": kind, "left_temp": bool(temporaries(folder)), "ok": True}
    try:
        load(kind, path)
    except Exception as err:  # reported, not raised: the caller counts failures
        result.update(ok=False, error=f"load after kill: {err}")
        return result
    save(kind, path, seed=2)
    left = temporaries(folder)
    if left:
        result.update(ok=False, error=f"temporary files after the next save: {left}")
    return result


def run(kind: str, trials: int, seed: int = 0) -> dict:
    """``trials`` kills of saves of ``kind``; a summary."""
    rng = random.Random(seed)
    results = []
    for _ in range(trials):
        with tempfile.TemporaryDirectory() as folder:
            results.append(trial(kind, Path(folder), rng))
    return {
        "kind": kind,
        "trials": trials,
        "kills_leaving_temp": sum(r["left_temp"] for r in results),
        "failures": [r["error"] for r in results if not r["ok"]],
    }


def _child(kind: str, path: Path, ready: Connection) -> None:
    save(kind, path, seed=3)  # warm up, so that the parent's delay lands in saves
    ready.send(True)
    seed = 4
    while True:
        save(kind, path, seed)
        seed += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    failed = False
    for kind in KINDS:
        summary = run(kind, args.trials, args.seed)
        failed |= bool(summary["failures"])
        print(json.dumps(summary))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
