"""Structured pruning that physically removes filters and rewires the channels around them.

:class:`Pruner` plans which filters go (:class:`PruningPlan`) and :func:`apply_plan` slices them
out of convolutions, BatchNorm and LayerNorm layers and every layer reading their channels;
:func:`register_layer` teaches it a new layer type. Attention layers lose whole heads and
become :class:`NarrowMultiheadAttention` / :class:`NarrowShiftedWindowAttention`. The pruned model is
an ordinary ``nn.Module``; :func:`save_pruned` / :func:`load_pruned` store it without pickling.
"""

from advkit.pruning import (
    _heads,  # noqa: F401  (registers the attention layers' handlers)
    _timm,  # noqa: F401  (registers timm's layers' handlers, by name)
)
from advkit.pruning.attention import NarrowMultiheadAttention, NarrowShiftedWindowAttention
from advkit.pruning.functional import check_layer, layer_shape, resize_layer, slice_layer
from advkit.pruning.graph import ChannelGraph, ChannelGroup, ChannelTracer, ChannelUse, analyze
from advkit.pruning.importance import Importance, batchnorm_scale, l1_filter_norm
from advkit.pruning.io import load_pruned, save_pruned
from advkit.pruning.optim import rebuild_optimizer
from advkit.pruning.plan import GroupPlan, PruningPlan
from advkit.pruning.pruner import Pruner, apply_plan
from advkit.pruning.registry import LayerHandler, register_layer, unregister_layer
from advkit.pruning.selection import normalize_scores
from advkit.pruning.stats import count_flops, count_parameters

__all__ = [
    "ChannelGraph",
    "ChannelGroup",
    "ChannelTracer",
    "ChannelUse",
    "GroupPlan",
    "Importance",
    "LayerHandler",
    "NarrowMultiheadAttention",
    "NarrowShiftedWindowAttention",
    "Pruner",
    "PruningPlan",
    "analyze",
    "apply_plan",
    "batchnorm_scale",
    "check_layer",
    "count_flops",
    "count_parameters",
    "l1_filter_norm",
    "layer_shape",
    "load_pruned",
    "normalize_scores",
    "rebuild_optimizer",
    "register_layer",
    "resize_layer",
    "save_pruned",
    "slice_layer",
    "unregister_layer",
]
