"""How important each channel of a group is: the score that decides which filters stay.

An importance is any callable ``importance(group, model) -> Tensor`` returning one finite score
per channel of ``group`` (shape ``[group.channels]``); the filters with the lowest scores are
removed. It may look up any layer of the group by name with ``model.get_submodule(name)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from advkit.pruning.channels import ChannelGroup, ChannelUse
from advkit.pruning.registry import find_handler

__all__ = ["Importance", "batchnorm_scale", "l1_filter_norm"]

Importance = Callable[[ChannelGroup, nn.Module], Tensor]
"""``importance(group, model)`` returning one score per channel of ``group``."""


def l1_filter_norm(group: ChannelGroup, model: nn.Module) -> Tensor:
    """The L1 norm of each filter, summed over the layers that create the group's channels.

    For a group made by one layer this is ``sum(|W[i]|)`` over filter ``i``'s kernel weights
    (the bias is not counted), the criterion of Li et al. and of
    ``torch.nn.utils.prune.ln_structured(module, "weight", amount, n=1, dim=0)``. Channels joined
    by a residual sum add up the norms of every filter that writes to them. An attention
    head's "filter" is its rows of q, k and v and its columns of the output projection
    (the layer handler's :meth:`~advkit.pruning.LayerHandler.filter_weights`).

    Args:
        group: The channels to score.
        model: The model the group belongs to.

    Returns:
        A ``[group.channels]`` tensor of scores.

    References:
        Li, Kadav, Durdanovic, Samet and Graf, "Pruning Filters for Efficient ConvNets",
        ICLR 2017.

    Example:
        >>> from advkit.pruning.channels import ChannelUse
        >>> conv = nn.Conv2d(1, 2, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = conv.weight.copy_(torch.tensor([3.0, -4.0]).view(2, 1, 1, 1))
        >>> l1_filter_norm(ChannelGroup(2, (ChannelUse("", "out"),)), conv)
        tensor([3., 4.])
    """
    scores = torch.zeros(group.channels, dtype=torch.float64)
    producers = [use for use in group.uses if use.role == "out"]
    for use in producers:
        module = model.get_submodule(use.module)
        handler = find_handler(module)
        weight = (module.weight if handler is None else handler.filter_weights(module)).detach()
        # Same reduction as torch.nn.utils.prune's norm, so rankings agree to the last bit.
        norms = torch.norm(weight, p=1, dim=tuple(range(1, weight.ndim)))
        if len(producers) == 1 and use == ChannelUse(use.module, "out"):
            return norms
        scatter_to_channels(scores, norms, use, group.channels)
    return scores


def scatter_to_channels(scores: Tensor, values: Tensor, use: ChannelUse, channels: int) -> None:
    """Add a layer's per-position ``values`` in ``use`` to the group's per-channel ``scores``."""
    units = torch.as_tensor(list(use.units(channels)), dtype=torch.long)
    positions = use.offset + torch.arange(len(units)) * use.expansion
    scores.index_add_(0, units, values.detach().to("cpu", torch.float64)[positions])


def batchnorm_scale(group: ChannelGroup, model: nn.Module) -> Tensor:
    """``|gamma|`` of every affine BatchNorm over the group's channels, summed.

    Network slimming's criterion: BatchNorm scales each channel by ``gamma`` before the
    activation, so a channel with small ``|gamma|`` contributes little.

    Args:
        group: The channels to score.
        model: The model the group belongs to.

    Returns:
        A ``[group.channels]`` tensor of scores.

    Raises:
        ValueError: If no affine BatchNorm layer normalizes the group's channels.

    References:
        Liu, Li, Shen, Huang, Yan and Zhang, "Learning Efficient Convolutional Networks through
        Network Slimming", ICCV 2017.
    """
    scores = torch.zeros(group.channels, dtype=torch.float64)
    found = False
    for use in group.uses:
        if use.role != "through":
            continue
        try:
            module = model.get_submodule(use.module)
        except AttributeError:  # a parameter sliced with the channels, not a layer
            continue
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            scatter_to_channels(scores, module.weight.abs(), use, group.channels)
            found = True
    if not found:
        raise ValueError(
            f"batchnorm_scale needs an affine BatchNorm on the channels of {group.producers}, "
            "found none"
        )
    return scores
