"""Guards against non-finite losses: nothing NaN is stepped on (the weights' check before a
save is :func:`advkit._integrity.check_finite_weights`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

NonFiniteLoss = Literal["raise", "skip"]


def check_nonfinite_policy(value: Any) -> NonFiniteLoss:
    """Validate the Trainer's ``nonfinite_loss`` option."""
    if value not in ("raise", "skip"):
        raise ValueError(f"nonfinite_loss must be 'raise' or 'skip', got {value!r}")
    return value


def nonfinite_loss_message(loss: Tensor, epoch: int, batch: int) -> str:
    """What went wrong, where, and what the user can do about it."""
    return (
        f"the training loss is non-finite ({float(loss.detach())}) at epoch {epoch + 1}, "
        f"batch {batch}; no gradient or optimizer step was taken (BatchNorm running statistics "
        "may have seen the batch). Look for NaN or inf in the "
        "inputs or labels, or for a learning rate that is too large; pass "
        "Trainer(nonfinite_loss='skip') to skip such batches with a warning"
    )


def snapshot_buffers(model: nn.Module) -> list[tuple[Tensor, Tensor]]:
    """Copies of the model's buffers (BatchNorm statistics), to undo a skipped batch's forward."""
    return [(buffer, buffer.detach().clone()) for buffer in model.buffers()]


def restore_buffers(snapshot: Sequence[tuple[Tensor, Tensor]]) -> None:
    """Write back the buffers saved by :func:`snapshot_buffers`."""
    with torch.no_grad():
        for buffer, saved in snapshot:
            buffer.copy_(saved)
