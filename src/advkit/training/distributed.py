"""DistributedDataParallel for the Trainer: wrapping the model and keeping processes in step.

The process context itself (which process and device am I, global sums) lives in the base
layer (``advkit._process``), so that the sharded evaluation uses it without importing the
training package; this module re-exports it at its documented path and adds what only
training needs: the DDP wrapper, BatchNorm statistics from rank 0, and flags every process
agrees on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from advkit._process import ProcessContext, release_at_exit, resolve_context

__all__ = [
    "ProcessContext",
    "any_process",
    "release_at_exit",
    "resolve_context",
    "sync_buffers",
    "wrap",
]


def wrap(
    model: nn.Module, context: ProcessContext, ddp_options: Mapping[str, Any] | None
) -> nn.Module:
    """``model`` in a DistributedDataParallel wrapper when distributed, else ``model`` itself."""
    if not context.distributed:
        return model
    return DistributedDataParallel(
        model,
        device_ids=[context.device] if context.device.type == "cuda" else None,
        **dict(ddp_options or {}),
    )


def sync_buffers(model: nn.Module, context: ProcessContext) -> None:
    """Give every process rank 0's buffers (DDP only syncs BatchNorm statistics per forward)."""
    if context.distributed:
        for buffer in model.buffers():
            context.broadcast_(buffer)


def any_process(flag: bool, context: ProcessContext) -> bool:
    """Whether ``flag`` is true on any process (``flag`` itself when not distributed)."""
    if not context.distributed:
        return flag
    total = torch.tensor([float(flag)], device=context.device)
    return bool(context.all_reduce_sum(total).item() > 0)
