"""Reduced-precision gradients for the attack loop: autocast for the model, fp32 for the rest.

Only the model's forward runs under :func:`torch.autocast`; the iterate, the projection, the
loss and the direction rule stay in the inputs' dtype. An L-inf attack follows the sign of the
gradient, so a low-precision gradient costs little accuracy as long as it neither underflows
to zero nor overflows; :func:`gradient_scale` and :func:`finite_gradient` see to both.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor

__all__ = ["AUTOCAST_DTYPES", "autocast_context", "check_autocast", "finite_gradient"]

AUTOCAST_DTYPES: tuple[torch.dtype, ...] = (torch.bfloat16, torch.float16)


def check_autocast(dtype: torch.dtype | None) -> torch.dtype | None:
    """Validate the ``autocast`` setting: ``None``, ``torch.bfloat16`` or ``torch.float16``."""
    if dtype is None:
        return None
    if not isinstance(dtype, torch.dtype):
        raise TypeError(
            f"autocast must be None, torch.bfloat16 or torch.float16, got {type(dtype).__name__}"
        )
    if dtype not in AUTOCAST_DTYPES:
        raise ValueError(f"autocast must be torch.bfloat16 or torch.float16 (or None), got {dtype}")
    return dtype


def autocast_context(dtype: torch.dtype | None, device: torch.device) -> AbstractContextManager:
    """:func:`torch.autocast` to ``dtype`` on ``device``'s type, or a no-op for ``None``.

    Raises:
        ValueError: If autocast is not available on the device type (e.g. ``"meta"``).
    """
    if dtype is None:
        return nullcontext()
    if not torch.amp.is_autocast_available(device.type):
        raise ValueError(
            f"autocast={dtype} needs a device type with autocast support (cpu, cuda, ...), "
            f"got inputs on {device.type!r}; use autocast=None there"
        )
    return torch.autocast(device_type=device.type, dtype=dtype)


def gradient_scale(dtype: torch.dtype | None, batch_size: int) -> int:
    """The factor the objective is multiplied by before the backward pass (and divided out).

    float16 flushes magnitudes below about 6e-8 to zero, and a mean loss over ``N`` samples
    shrinks every sample's gradient by ``1/N``: scaling by the power of two ``>= N`` gives each
    sample the gradient of its own, unaveraged loss, and dividing by a power of two afterwards
    is exact. bfloat16 has float32's range and needs no scaling.
    """
    if dtype is not torch.float16:
        return 1
    return 1 << (batch_size - 1).bit_length()


def finite_gradient(grad: Tensor) -> Tensor:
    """Guard against reduced-precision overflow: NaN becomes 0 (no step), +-inf keeps its sign."""
    return torch.nan_to_num(grad, nan=0.0)
