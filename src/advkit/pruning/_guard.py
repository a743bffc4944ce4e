"""Probe a model without leaving a trace on it, and normalize its example inputs."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd inside; every submodule's ``training`` flag restored after.

    Eval mode keeps BatchNorm from updating its running statistics while the model is probed.
    """
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, flag in flags:
            module.training = flag


def as_input_tuple(example_inputs: Tensor | Sequence[Tensor]) -> tuple[Tensor, ...]:
    """One tensor or a sequence of them, as the tuple of positional inputs of a forward call."""
    inputs = (example_inputs,) if isinstance(example_inputs, Tensor) else None
    if inputs is None and isinstance(example_inputs, Sequence):
        inputs = tuple(example_inputs)
    if not inputs or not all(isinstance(x, Tensor) for x in inputs):
        raise TypeError(
            "example_inputs must be a tensor or a non-empty sequence of tensors, got "
            f"{type(example_inputs).__name__}"
        )
    return inputs
