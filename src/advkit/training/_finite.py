"""Guards against non-finite losses and weights: nothing NaN is stepped on or saved."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def nonfinite_entries(state: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors of ``state`` that hold NaN or infinity."""
    return [
        name
        for name, value in state.items()
        if isinstance(value, Tensor)
        and value.is_floating_point()
        and not bool(torch.isfinite(value).all())
    ]


def check_finite_weights(state: Mapping[str, Any], path: object) -> None:
    """Refuse to write a checkpoint of a model whose weights hold NaN or infinity.

    Raises:
        ValueError: Naming the file (left as it was) and the first bad tensors.
    """
    bad = nonfinite_entries(state)
    if bad:
        shown = ", ".join(bad[:4]) + (", ..." if len(bad) > 4 else "")
        raise ValueError(
            f"refusing to write {str(path)!r}: {len(bad)} model tensors hold NaN or inf "
            f"({shown}); the file on disk is left as it was"
        )
