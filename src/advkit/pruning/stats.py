"""Model size and cost: parameter count and multiply-accumulates of one forward pass."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn
from torchvision.models.swin_transformer import ShiftedWindowAttention

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
    published GFLOPS (ResNet-18 at 1x3x224x224: 1.814 G). Attention layers
    (``nn.MultiheadAttention`` and torchvision's Swin ``ShiftedWindowAttention``, pruned or not)
    apply their projection weights functionally, so they are counted as layers: the q/k/v and
    output projections plus the two attention products (``Q K^T`` and the weighted sum of
    ``V``). The count is for the whole batch given; other layers (BatchNorm, LayerNorm,
    activations, pooling, softmax) and functional convolutions are not counted. The model runs in
    eval mode under ``torch.no_grad()`` and is left as it was.

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

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if isinstance(module, nn.MultiheadAttention):
            total[0] += _multihead_attention_macs(module, args, kwargs)
        elif isinstance(module, ShiftedWindowAttention):
            total[0] += _window_attention_macs(module, args[0] if args else kwargs["x"])
        elif isinstance(module, nn.Linear):
            total[0] += output.numel() * module.in_features
        elif isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
            total[0] += output.numel() * per_output

    layers = (nn.Linear, nn.modules.conv._ConvNd, nn.MultiheadAttention, ShiftedWindowAttention)
    handles = [
        m.register_forward_hook(hook, with_kwargs=True)
        for m in model.modules()
        if isinstance(m, layers)
    ]
    try:
        yield total
    finally:
        for handle in handles:
            handle.remove()


def _multihead_attention_macs(
    module: nn.MultiheadAttention, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> int:
    """MACs of one ``nn.MultiheadAttention`` call: projections and the two attention products.

    Its ``out_proj`` is a ``Linear`` whose own hook never fires (the weights are applied
    functionally), so nothing is counted twice.
    """
    names = ("query", "key", "value")
    query, key, value = (args[i] if i < len(args) else kwargs[n] for i, n in enumerate(names))
    batch_dim = 0 if module.batch_first and query.dim() == 3 else 1
    batch = query.shape[batch_dim] if query.dim() == 3 else 1
    length, source = (
        query.shape[-2 if batch_dim == 0 else 0],
        key.shape[-2 if batch_dim == 0 else 0],
    )
    if module.in_proj_weight is not None:
        width = module.in_proj_weight.shape[0] // 3  # num_heads * head_dim (narrower if pruned)
    else:
        width = module.q_proj_weight.shape[0]
    projections = length * query.shape[-1] + source * (key.shape[-1] + value.shape[-1])
    products = 2 * length * source
    return batch * width * (projections + products + length * module.out_proj.out_features)


def _window_attention_macs(module: ShiftedWindowAttention, x: Tensor) -> int:
    """MACs of one Swin window-attention call on ``x`` ``[B, H, W, C]`` (padded to whole
    windows, as the layer does): qkv and output projections, the two products per window."""
    batch, height, width, channels = x.shape
    wh, ww = module.window_size
    tokens = batch * (-(-height // wh) * wh) * (-(-width // ww) * ww)
    inner = module.qkv.out_features // 3  # num_heads * head_dim (narrower if pruned)
    per_token = channels * 3 * inner + 2 * wh * ww * inner + inner * module.proj.out_features
    return tokens * per_token
