"""Structured pruning that physically removes filters and rewires the channels around them.

:class:`Pruner` plans which filters go (:class:`PruningPlan`) and :func:`apply_plan` slices them
out of convolutions, BatchNorm and LayerNorm layers and every layer reading their channels;
:func:`register_layer` teaches it a new layer type. Attention layers lose whole heads and
become :class:`NarrowMultiheadAttention` / :class:`NarrowShiftedWindowAttention`. The pruned model is
an ordinary ``nn.Module``; :func:`save_pruned` / :func:`load_pruned` store it without pickling.
"""

from advkit.pruning import (
    _flow,  # noqa: F401  (graph.py imports the pass lazily, to avoid a cycle)
    _heads,  # noqa: F401  (registers the attention layers' handlers)
    _timm,  # noqa: F401  (registers timm's layers' handlers, by name)
)
from advkit.pruning.attention import NarrowMultiheadAttention, NarrowShiftedWindowAttention
from advkit.pruning.functional import check_layer, layer_shape, resize_layer, slice_layer
from advkit.pruning.graph import ChannelGraph, ChannelGroup, ChannelTracer, ChannelUse, analyze
from advkit.pruning.importance import Importance, batchnorm_scale, l1_filter_norm
from advkit.pruning.io import load_pruned, save_pruned
from advkit.pruning.optim import rebuild_optimizer
from advkit.pruning.pipeline import ModelSummary, RobustPruneResult, robust_prune, summarize_model
from advkit.pruning.plan import GroupPlan, PruningPlan
from advkit.pruning.pruner import Pruner, apply_plan
from advkit.pruning.registry import LayerHandler, register_layer, unregister_layer
from advkit.pruning.robust_importance import (
    AdversarialTaylor,
    ChannelScores,
    PlannedImportance,
    RobustScoreLearner,
    ScoredNetwork,
    scaled_l1_init,
)
from advkit.pruning.schedule import (
    FineTune,
    PruneStep,
    PruningSchedule,
    iterative_prune,
    plan_widths,
)
from advkit.pruning.selection import normalize_scores
from advkit.pruning.stats import count_flops, count_parameters

__all__ = [
    "AdversarialTaylor",
    "ChannelGraph",
    "ChannelGroup",
    "ChannelScores",
    "ChannelTracer",
    "ChannelUse",
    "FineTune",
    "GroupPlan",
    "Importance",
    "LayerHandler",
    "ModelSummary",
    "NarrowMultiheadAttention",
    "NarrowShiftedWindowAttention",
    "PlannedImportance",
    "PruneStep",
    "Pruner",
    "PruningPlan",
    "PruningSchedule",
    "RobustPruneResult",
    "RobustScoreLearner",
    "ScoredNetwork",
    "analyze",
    "apply_plan",
    "batchnorm_scale",
    "check_layer",
    "count_flops",
    "count_parameters",
    "iterative_prune",
    "l1_filter_norm",
    "layer_shape",
    "load_pruned",
    "normalize_scores",
    "plan_widths",
    "rebuild_optimizer",
    "register_layer",
    "resize_layer",
    "robust_prune",
    "save_pruned",
    "scaled_l1_init",
    "slice_layer",
    "summarize_model",
    "unregister_layer",
]
