"""Mixed precision for the Trainer: the autocast context, the GradScaler, and the scaled step.

On CUDA, ``amp=True`` runs the training and evaluation forward passes under
:func:`torch.autocast`; with ``torch.float16`` a :class:`~torch.amp.GradScaler` scales the loss
so that small gradients do not underflow (``torch.bfloat16`` has float32's range and needs
none). Attacks always run in full precision. Elsewhere ``amp=True`` is a no-op with a warning.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from advkit._checks import warn

__all__ = ["autocast", "backward", "check_amp_dtype", "optimizer_step", "resolve_amp"]


def check_amp_dtype(amp_dtype: torch.dtype) -> torch.dtype:
    """``amp_dtype`` if it is ``torch.float16`` or ``torch.bfloat16``.

    Raises:
        ValueError: If it is another dtype.
    """
    if amp_dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"amp_dtype must be torch.float16 or torch.bfloat16, got {amp_dtype}")
    return amp_dtype


def resolve_amp(
    amp: bool, amp_dtype: torch.dtype, device: torch.device
) -> tuple[bool, torch.amp.GradScaler | None]:
    """Whether mixed precision is on for ``device``, and the GradScaler it needs (or ``None``).

    ``amp_dtype`` is checked by :func:`check_amp_dtype` first.
    """
    enabled = bool(amp) and device.type == "cuda"
    if amp and not enabled:
        warn(f"amp=True has no effect on {device.type}: mixed precision runs on CUDA only")
    scaler = torch.amp.GradScaler("cuda") if enabled and amp_dtype == torch.float16 else None
    return enabled, scaler


def autocast(
    enabled: bool, device: torch.device, dtype: torch.dtype
) -> AbstractContextManager[Any]:
    """The context a forward pass runs in: autocast to ``dtype`` when ``enabled``."""
    if not enabled:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def backward(loss: Tensor, scaler: torch.amp.GradScaler | None) -> None:
    """``loss.backward()``, through the scaler when there is one."""
    if scaler is None:
        loss.backward()
    else:
        scaler.scale(loss).backward()


def optimizer_step(
    optimizer: Optimizer,
    scaler: torch.amp.GradScaler | None,
    before_step: Callable[[], None],
    *,
    unscale: bool,
) -> None:
    """Call ``before_step`` and step ``optimizer`` (through the scaler when there is one).

    Args:
        optimizer: The optimizer to step.
        scaler: The GradScaler, or ``None`` without float16 AMP.
        before_step: Called just before the step (the callbacks' ``on_before_optimizer_step``).
        unscale: Unscale the gradients first, so that ``before_step`` sees the true ones.
    """
    if scaler is None:
        before_step()
        optimizer.step()
        return
    if unscale:
        scaler.unscale_(optimizer)
    before_step()
    scaler.step(optimizer)
    scaler.update()
