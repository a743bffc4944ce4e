"""Model size and cost: parameter count and multiply-accumulates of one forward pass."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

from advkit._guard import model_state
from advkit.pruning._guard import as_input_tuple

__all__ = ["count_flops", "count_parameters"]


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (each shared parameter counted once).

    Example:
        >>> count_parameters(nn.Linear(4, 2))
        10
    """
    return sum(param.numel() for param in model.parameters())


def count_flops(model: nn.Module, example_inputs: Tensor | Sequence[Tensor]) -> int:
    """Multiply-accumulates of the conv and linear layers in one forward pass on the inputs.

    One multiply-add counts as one FLOP, the convention of He et al. and of torchvision's
    published GFLOPS (ResNet-18 at 1x3x224x224: 1.814 G). The count is for the whole batch
    given; other layers (BatchNorm, activations, pooling) and functional convolutions are not
    counted. The model runs in eval mode under ``torch.no_grad()`` and is left as it was.

    Args:
        model: The network.
        example_inputs: One batch (or a sequence of positional inputs).

    Returns:
        The number of multiply-accumulates.

    Raises:
        TypeError: If ``example_inputs`` are not tensors.

    Example:
        >>> import torch
        >>> count_flops(nn.Conv2d(3, 8, 3), torch.rand(1, 3, 5, 5))  # 8*3*3 outputs, 27 MACs each
        1944
    """
    return flops_and_output(model, as_input_tuple(example_inputs))[0]


def flops_and_output(model: nn.Module, inputs: tuple[Tensor, ...]) -> tuple[int, Any]:
    """Like :func:`count_flops`, and also return the model's output."""
    with flop_counter(model) as total, model_state(model, no_grad=True):
        output = model(*inputs)
    return total[0], output


@contextmanager
def flop_counter(model: nn.Module) -> Iterator[list[int]]:
    """Count the conv and linear layers' multiply-accumulates of the forward passes run in the
    body; the count is the yielded list's one item."""
    total = [0]

    def hook(module: nn.Module, args: tuple[object, ...], output: Tensor) -> None:
        if isinstance(module, nn.Linear):
            total[0] += output.numel() * module.in_features
        elif isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
            total[0] += output.numel() * per_output

    layers = (nn.Linear, nn.modules.conv._ConvNd)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, layers)]
    try:
        yield total
    finally:
        for handle in handles:
            handle.remove()
