"""The plumbing every evaluation shares: batches from a loader, the model's device and mode."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from advkit._progress import Progress
from advkit.attacks._validation import check_logits, check_run_dtypes

Batch = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class WorkCount:
    """The passes through the model an evaluation made.

    Attributes:
        grad_calls: Batched forward+backward passes made by the attacks.
        grad_samples: Sum of the batch sizes of those passes.
        forward_calls: Gradient-free batched forward passes made by the evaluation itself
            (clean predictions, and in a grid the last iterates of the cells that ride on
            another cell's trajectory); the attacks' own closing forward passes are not
            included.
        forward_samples: Sum of the batch sizes of those forward passes.
    """

    grad_calls: int = 0
    grad_samples: int = 0
    forward_calls: int = 0
    forward_samples: int = 0

    def __add__(self, other: WorkCount) -> WorkCount:
        return WorkCount(**{k: v + getattr(other, k) for k, v in asdict(self).items()})

    def to_dict(self) -> dict[str, int]:
        """The four counts by name."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkCount:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: int(data[k]) for k in asdict(cls())})


def model_device(model: nn.Module) -> torch.device | None:
    """The device of the model's first parameter or buffer, or ``None`` if it has neither."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return None


def check_model(model: object, name: str = "model") -> nn.Module:
    """Raise ``TypeError`` unless ``model`` is an ``nn.Module``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be an nn.Module, got {type(model).__name__}")
    return model


@contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Run ``models`` in eval mode and give every submodule its own flag back afterwards."""
    flags = [(module, module.training) for model in models for module in model.modules()]
    for model in models:
        model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def batches(
    loader: Iterable[Any],
    device: torch.device | None,
    *,
    progress: bool,
    description: str,
) -> Iterator[Batch]:
    """Yield the loader's ``(inputs, labels)`` batches on ``device``, checked, with a progress bar.

    Raises:
        TypeError: If the loader is not iterable or yields something else than tensor pairs.
        ValueError: If a batch is empty or its labels are not one per input, or the loader
            yields no batch at all.
    """
    if isinstance(loader, Tensor) or not isinstance(loader, Iterable):
        raise TypeError(
            f"loader must be an iterable of (inputs, labels) batches, got {type(loader).__name__}"
        )
    seen = 0
    # One iter() of the loader, with or without the bar.
    for item in Progress(loader, description=description, enabled=progress):
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise TypeError(
                "loader must yield (inputs, labels) pairs, got "
                f"{type(item).__name__}"
                + (f" of length {len(item)}" if isinstance(item, tuple | list) else "")
            )
        inputs, labels = item
        if not isinstance(inputs, Tensor) or not isinstance(labels, Tensor):
            raise TypeError(
                "loader must yield tensor pairs, got "
                f"({type(inputs).__name__}, {type(labels).__name__})"
            )
        if inputs.ndim < 1 or inputs.shape[0] == 0:
            raise ValueError(f"batch {seen} is empty: inputs of shape {list(inputs.shape)}")
        if labels.shape != (inputs.shape[0],):
            raise ValueError(
                f"batch {seen}: labels must have shape [{inputs.shape[0]}] (one per input), "
                f"got {list(labels.shape)}"
            )
        if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
            raise TypeError(f"batch {seen}: labels must be integers, got dtype {labels.dtype}")
        seen += 1
        # Labels of any integer dtype (int8, int32, uint8, ...) become int64, as losses need.
        yield inputs.to(device), labels.to(device=device, dtype=torch.long)
    if seen == 0:
        raise ValueError("loader yielded no batches: nothing to evaluate")


def predict_correct(model: nn.Module, inputs: Tensor, labels: Tensor) -> Tensor:
    """Per-sample bool: the model's top class is the label (one gradient-free forward pass)."""
    check_run_dtypes(model, inputs, {})
    with torch.no_grad():
        logits = model(inputs)
    check_logits(logits, inputs.shape[0], labels)
    return logits.argmax(dim=1) == labels
