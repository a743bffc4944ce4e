"""One process of test_the_process_group_advkit_created_is_destroyed_at_exit (run through
conftest.launch_two_ranks, not by pytest): it joins the group through advkit, evaluates, and
reports from an exit hook whether the group was still alive when the interpreter exited."""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for conftest

from advkit.evaluation import accuracy
from advkit.training.distributed import resolve_context
from conftest import blob_images, tiny_model


def report(out: Path) -> None:
    """Registered before advkit's hooks, so it runs after them (atexit runs in reverse)."""
    alive = dist.is_available() and dist.is_initialized()
    torch.save({"group_alive_at_exit": alive}, out / f"rank{os.environ['RANK']}.pt")


def main(out: Path) -> None:
    atexit.register(report, out)
    torch.set_num_threads(1)
    context = resolve_context(None, None)
    assert context.distributed and dist.is_initialized()
    images, labels = blob_images(16)
    accuracy(tiny_model(), [(images[:8], labels[:8]), (images[8:], labels[8:])], progress=False)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
