"""Normalize the example inputs a model is probed with."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor


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
