"""Process-group plumbing: which process and device am I, global sums, and loader samplers.

Under ``torchrun`` (environment variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) each process
drives one device; the Trainer and the sharded evaluation join or create the process group here
(NCCL on CUDA, gloo on the CPU). Outside it everything is a no-op for a single process. Part of
the base layer: the evaluation and the training both build on it.
"""

from __future__ import annotations

import atexit
import gc
import os
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["ProcessContext", "release_at_exit", "resolve_context", "samplers"]


@dataclass(frozen=True)
class ProcessContext:
    """Where this process runs and which share of the work it does.

    Attributes:
        device: The device this process trains on.
        rank: Global index of this process, 0 when not distributed.
        world_size: Number of processes, 1 when not distributed.
        distributed: Whether a process group with more than one process is in use.
    """

    device: torch.device
    rank: int = 0
    world_size: int = 1
    distributed: bool = False

    @property
    def is_main(self) -> bool:
        """Whether this is the process that writes checkpoints and shows progress."""
        return self.rank == 0

    def all_reduce_sum(self, tensor: Tensor) -> Tensor:
        """Sum ``tensor`` over all processes, in place, and return it."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order (``[obj]`` when not distributed)."""
        if not self.distributed:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def broadcast_(self, tensor: Tensor) -> None:
        """Overwrite ``tensor`` with rank 0's copy."""
        if self.distributed:
            dist.broadcast(tensor, src=0)

    def barrier(self) -> None:
        """Wait until every process reaches this point."""
        if self.distributed:
            dist.barrier()


_exit_releases: list[weakref.WeakMethod] = []


def release_at_exit(release: Callable[[], None]) -> None:
    """Call ``release`` when the interpreter exits, then collect garbage.

    An owner of a DistributedDataParallel wrapper registers a method that drops the wrapper.
    A wrapper still alive when the interpreter finalizes is freed while Python is half torn down,
    and the gloo work objects it holds then release tensors without the GIL: now and then the
    process aborts (SIGABRT, "terminate called without an active exception"; pytorch/pytorch
    #179291), and torchrun reports a failed worker. Freed in an ``atexit`` hook, while the
    interpreter is whole, it is safe, before or after ``destroy_process_group``.

    Args:
        release: A bound method; it is held weakly, so registering keeps nothing alive.
    """
    if not _exit_releases:  # the first registration (the list is only emptied at exit)
        atexit.register(_release_all)
    _exit_releases[:] = [ref for ref in _exit_releases if ref() is not None]
    _exit_releases.append(weakref.WeakMethod(release))


def _release_all() -> None:
    for ref in _exit_releases:
        release = ref()
        if release is not None:
            release()
    _exit_releases.clear()
    gc.collect()  # wrappers are in reference cycles: free them now, not at finalization


def _destroy_group_at_exit() -> None:
    """Destroy the process group :func:`resolve_context` created, while the interpreter is
    whole. Left to finalization, gloo's threads are torn down with Python half gone and now and
    then the process aborts ("terminate called without an active exception"): a quarter of the
    two-process runs of the scaling guide's ``evaluate.py`` did. Runs after the wrappers
    registered with :func:`release_at_exit` are freed (``atexit`` runs hooks in reverse)."""
    gc.collect()  # work objects and tensors in reference cycles go first
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def _pick_device(
    device: torch.device | str | None, local_rank: int, distributed: bool
) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device must be a torch.device or a string like 'cuda:0', got {device!r}"
        ) from None
    if chosen.type == "cuda" and chosen.index is None:
        chosen = torch.device("cuda", local_rank if distributed else torch.cuda.current_device())
    return chosen


def resolve_context(device: torch.device | str | None, distributed: bool | None) -> ProcessContext:
    """Find this process's rank and device, joining or creating the process group if needed.

    A process group it creates is destroyed when the interpreter exits (an ``atexit`` hook),
    so a script needs no ``destroy_process_group`` of its own.

    Args:
        device: The device asked for, or ``None`` for CUDA when available (``cuda:LOCAL_RANK``
            under torchrun) and the CPU otherwise.
        distributed: ``None`` to use DistributedDataParallel exactly when more than one process
            is running (an initialized process group, or ``WORLD_SIZE > 1`` in the
            environment); ``False`` never to; ``True`` to require it.

    Returns:
        The process's context.

    Raises:
        ValueError: If ``distributed=True`` but only one process is running, or an environment
            variable is malformed.
    """
    if distributed is not None and not isinstance(distributed, bool):
        raise TypeError(f"distributed must be None or a bool, got {type(distributed).__name__}")
    available = dist.is_available()
    if available and dist.is_initialized():
        world_size = dist.get_world_size()
    else:
        world_size = _env_int("WORLD_SIZE", 1)
    wanted = world_size > 1 if distributed is None else distributed
    if wanted and (not available or world_size < 2):
        raise ValueError(
            "distributed=True needs several processes: launch the script with torchrun "
            f"(found WORLD_SIZE={world_size}, torch.distributed available: {available})"
        )
    if not wanted:
        return ProcessContext(device=_pick_device(device, 0, distributed=False))

    local_rank = _env_int("LOCAL_RANK", 0)
    chosen = _pick_device(device, local_rank, distributed=True)
    if chosen.type == "cuda":
        # NCCL and all_gather_object use the current device; make it this process's one.
        torch.cuda.set_device(chosen)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
        atexit.register(_destroy_group_at_exit)  # advkit created it: advkit tears it down
    return ProcessContext(
        device=chosen, rank=dist.get_rank(), world_size=dist.get_world_size(), distributed=True
    )


def samplers(loader: Iterable[Any]) -> Iterator[Any]:
    """The loader's sampler and its batch sampler's sampler, each once."""
    seen: set[int] = set()
    batch_sampler = getattr(loader, "batch_sampler", None)
    for sampler in (getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None)):
        if sampler is not None and id(sampler) not in seen:
            seen.add(id(sampler))
            yield sampler
