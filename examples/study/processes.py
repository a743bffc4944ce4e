"""One process or several: under ``torchrun`` every process trains and evaluates its share,
rank 0 alone writes files (stages, plots, report) and the others wait for it at a barrier.

Outside ``torchrun`` every function here is what a single process needs: ``is_main()`` is
true and ``barrier()`` does nothing.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from advkit.training.distributed import resolve_context

__all__ = ["barrier", "finish", "from_main", "is_main", "pick_device", "world_size"]


def world_size() -> int:
    """Number of processes of this run (``WORLD_SIZE`` under torchrun, else 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """Whether this process writes the study's files (rank 0, or the only process)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def from_main(text: str) -> str:
    """Rank 0's ``text`` on every process (``text`` itself in a single process): for what each
    process computes from its own share of the data, such as a pruning plan from gradient
    scores, but all must use alike."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return text
    shared = [text]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def pick_device(name: str) -> torch.device | None:
    """Under torchrun: join the process group and return this process's device
    (``cuda:LOCAL_RANK`` for ``auto``/``cuda`` with GPUs, else the CPU with gloo). ``None``
    for a single process, whose device the study resolves as before."""
    if world_size() < 2:
        return None
    return resolve_context(None if name == "auto" else name, None).device


def finish() -> None:
    """Leave the process group, if this run joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
