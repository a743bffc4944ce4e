"""Filter pruning that physically removes filters: :class:`Pruner` and :func:`apply_plan`.

Planning and applying are separate steps. :meth:`Pruner.plan` decides which filters go and what
that saves, without touching the model; :func:`apply_plan` slices the layers. The result is an
ordinary, smaller ``nn.Module``: it trains, traces, scripts and saves like any other.

Because pruning creates new parameter tensors, an optimizer made for the unpruned model does not
see the pruned model's parameters: make a new one, or use
:func:`advkit.pruning.rebuild_optimizer`.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase
from typing import Any, Literal

import torch
from torch import Tensor, nn

from advkit._checks import check_model, check_real
from advkit.pruning._guard import as_input_tuple
from advkit.pruning._heads import HEAD_TYPES
from advkit.pruning.apply import carry_out, check_plan_fits, plan_slices, predicted_parameters
from advkit.pruning.graph import ChannelGraph, ChannelGroup, analyze_and_count
from advkit.pruning.importance import Importance, l1_filter_norm
from advkit.pruning.plan import GroupPlan, PruningPlan
from advkit.pruning.registry import find_handler
from advkit.pruning.selection import (
    Normalization,
    global_removals,
    keep_lowest_removed,
    normalize_scores,
)
from advkit.pruning.stats import count_parameters, flops_and_output

__all__ = ["Pruner", "apply_plan"]

logger = logging.getLogger(__name__)

_PRUNABLE = (nn.Linear, nn.modules.conv._ConvNd, *HEAD_TYPES)


def _is_layer_of(module: nn.Module, kinds: tuple[type[nn.Module], ...]) -> bool:
    """Whether ``module`` is a layer of ``kinds``; an attention layer of an optional library
    (timm's PVT v2, whose handler prunes it by heads) counts as one when ``kinds`` holds an
    attention type."""
    if isinstance(module, kinds):
        return True
    handler = find_handler(module)
    heads = handler is not None and handler.heads
    return heads and any(issubclass(kind, HEAD_TYPES) for kind in kinds)


class Pruner:
    """Remove the least important filters of selected layers, and everything tied to them.

    A layer's filters are its output channels. Removing filter ``i`` of a convolution also
    removes channel ``i`` of the BatchNorm after it and input channel ``i`` of every layer that
    reads it. Channels joined by a residual sum form one group: selecting any layer of the
    group prunes the whole group, with one choice of channels for all its layers.

    From a group of ``C`` channels, ``round(ratio * C)`` are removed (Python's ``round``, as in
    ``torch.nn.utils.prune``), but never all of them. The channels kept are those with the
    largest importance, ties going to the lower index. With ``scope="global"``, ``ratio`` is
    the fraction of all selected groups' channels removed together: each group's scores are
    normalized (``normalization``), the lowest go first, and no group keeps fewer than
    ``floor`` of its channels.

    Args:
        ratio: Fraction of filters to remove from each selected group, in ``[0, 1)``.
        targets: Module-name pattern(s) selecting the layers to prune, matched against the
            qualified names of ``model.named_modules()`` with :func:`fnmatch.fnmatchcase`
            (``*`` matches any characters, dots included). Example for the study:
            ``"backbone.layer4.*.conv1"``; ``"*"`` selects every layer. Matched modules that
            are not conv, linear or attention layers (containers, BatchNorm) are ignored.
            An attention layer (``nn.MultiheadAttention``, torchvision's Swin
            ``ShiftedWindowAttention``, timm's PVT v2 ``Attention``, found by its class name
            so that advkit never imports timm) loses ``round(ratio * num_heads)`` whole heads, one
            kept at least; its embedding width is not pruned (the plan's ``skipped`` says
            so for its projections).
        importance: Scores each channel of a group; see :mod:`advkit.pruning.importance`.
            Defaults to the L1 norm of the filters (Li et al. 2017).
        strict: If ``True``, a matched layer that cannot be pruned is an error. If ``False``,
            it is left alone and listed in the plan's ``skipped`` (with ``targets="*"``, the
            output layer, whose channels are the model's classes, is such a layer).
        ignore: Module-name pattern(s) of layers never to prune, even if ``targets`` matches
            them (as Torch-Pruning's ``ignored_layers``), e.g. ``"backbone.fc"``.
        layer_types: Prune only layers of these types among those ``targets`` matches, e.g.
            ``nn.Conv2d`` for "every convolution": ``targets="*", layer_types=nn.Conv2d``
            (the default: conv, linear and attention layers).
        leaf_types: Module types for the tracer to keep opaque (their channels are frozen),
            for submodules that torch.fx cannot trace.
        scope: ``"group"`` (the default) removes ``ratio`` of every group; ``"global"``
            removes ``ratio`` of all selected channels, where they score lowest.
        normalization: For global pruning, how each group's scores are made comparable:
            ``"mean"`` (divided by the group's mean) or ``"lamp"`` (Lee et al. 2021).
        floor: For global pruning, the fraction of each group's channels always kept (and
            one channel at least), in ``[0, 1]``.

    Raises:
        ValueError: If ``ratio`` is outside ``[0, 1)``, ``floor`` outside ``[0, 1]``,
            ``targets`` is empty, or ``scope``/``normalization`` is not a known name.
        TypeError: If an argument has the wrong type.

    References:
        Li, Kadav, Durdanovic, Samet and Graf, "Pruning Filters for Efficient ConvNets",
        ICLR 2017. Lee, Park, Mo, Ahn and Shin, "Layer-adaptive Sparsity for the
        Magnitude-based Pruning", ICLR 2021.

    Example:
        >>> from advkit.models import resnet18
        >>> model = resnet18(num_classes=10)
        >>> pruner = Pruner(ratio=0.2, targets="backbone.layer4.*.conv1")
        >>> plan = pruner.plan(model, torch.rand(1, 3, 32, 32))
        >>> plan.kept_filters()
        {'backbone.layer4.0.conv1': 410, 'backbone.layer4.1.conv1': 410}
        >>> pruned = pruner.apply(model, plan)  # a pruned copy; model is unchanged
        >>> plan.params_before, count_parameters(pruned)
        (11181642, 9536178)
    """

    def __init__(
        self,
        *,
        ratio: float,
        targets: str | Sequence[str],
        importance: Importance = l1_filter_norm,
        strict: bool = True,
        leaf_types: Iterable[type[nn.Module]] = (),
        scope: Literal["group", "global"] = "group",
        normalization: Normalization = "mean",
        floor: float = 0.1,
        ignore: str | Sequence[str] = (),
        layer_types: type[nn.Module] | Sequence[type[nn.Module]] = _PRUNABLE,
    ) -> None:
        check_real(ratio, "ratio", low=0, high=1, open_high=True)
        patterns = (targets,) if isinstance(targets, str) else targets
        if not isinstance(patterns, Sequence) or not all(isinstance(t, str) for t in patterns):
            raise TypeError(f"targets must be a string or a sequence of strings, got {targets!r}")
        if not patterns or not all(patterns):
            raise ValueError(f"targets must be non-empty patterns, got {targets!r}")
        if not callable(importance):
            raise TypeError(f"importance must be callable, got {type(importance).__name__}")
        if scope not in ("group", "global"):
            raise ValueError(f"scope must be 'group' or 'global', got {scope!r}")
        if normalization not in ("mean", "lamp"):
            raise ValueError(f"normalization must be 'mean' or 'lamp', got {normalization!r}")
        check_real(floor, "floor", low=0, high=1)
        self.scope = scope
        self.normalization: Normalization = normalization
        self.floor = float(floor)
        ignored = (ignore,) if isinstance(ignore, str) else ignore
        if not isinstance(ignored, Sequence) or not all(isinstance(p, str) for p in ignored):
            raise TypeError(f"ignore must be a string or a sequence of strings, got {ignore!r}")
        kinds = (layer_types,) if isinstance(layer_types, type) else tuple(layer_types)
        if not kinds or not all(isinstance(k, type) and issubclass(k, _PRUNABLE) for k in kinds):
            raise TypeError(
                "layer_types must be conv, linear or attention layer types (e.g. nn.Conv2d), got "
                f"{layer_types!r}"
            )
        self.ratio = float(ratio)
        self.targets: tuple[str, ...] = tuple(patterns)
        self.ignore: tuple[str, ...] = tuple(ignored)
        self.layer_types: tuple[type[nn.Module], ...] = kinds
        self.importance = importance
        self.strict = bool(strict)
        self.leaf_types: tuple[type[nn.Module], ...] = tuple(leaf_types)

    def __repr__(self) -> str:
        name = getattr(self.importance, "__name__", repr(self.importance))
        return (
            f"Pruner(ratio={self.ratio}, targets={self.targets}, importance={name}, "
            f"strict={self.strict})"
        )

    def plan(self, model: nn.Module, example_inputs: Tensor | Sequence[Tensor]) -> PruningPlan:
        """Decide which filters to remove, without changing ``model``.

        The model is traced and the traced forward pass run once on ``example_inputs`` (in
        eval mode, without gradients, its flags restored), for the shapes and the FLOPs; then
        a pruned copy is built and run to measure parameters and FLOPs and to check the output
        shape is unchanged.

        Args:
            model: The network to prune.
            example_inputs: One input batch (or a sequence of positional inputs). FLOPs are
                counted for this batch; a small one such as ``1x3x32x32`` is enough to plan.

        Returns:
            The plan.

        Raises:
            TypeError: If ``model`` is not an ``nn.Module``, the inputs are not tensors, the
                model cannot be traced, or the importance returns something else than a tensor.
            ValueError: If a target pattern matches no module or no conv/linear layer, a
                selected layer cannot be pruned (strict mode) or none can, the importance
                gives the wrong shape or non-finite scores, or the pruned model breaks.
        """
        return self.prune(model, example_inputs)[1]

    def prune(
        self, model: nn.Module, example_inputs: Tensor | Sequence[Tensor]
    ) -> tuple[nn.Module, PruningPlan]:
        """:meth:`plan` and :meth:`apply` in one step: the pruned copy and its plan.

        :meth:`plan` builds a pruned copy to check it and measure it, and :meth:`apply`
        builds another; this returns the one :meth:`plan` built, so it costs a plan only.
        ``model`` is left unchanged.

        Example:
            >>> from advkit.models import resnet18
            >>> model = resnet18(num_classes=10)
            >>> pruner = Pruner(ratio=0.2, targets="backbone.layer4.*.conv1")
            >>> pruned, plan = pruner.prune(model, torch.rand(1, 3, 32, 32))
            >>> count_parameters(pruned) == plan.params_after
            True

        Raises:
            TypeError: As :meth:`plan`.
            ValueError: As :meth:`plan`.
        """
        check_model(model)
        inputs = as_input_tuple(example_inputs)
        layers = self._match(model)
        # One forward pass: shapes for the analysis, FLOPs and the output to compare with.
        graph, flops_before, output = analyze_and_count(model, inputs, leaf_types=self.leaf_types)
        selected, skipped = self._select(graph, layers)
        scores = [self._scores(group, model) for group in selected]
        if self.scope == "global":
            normalized = [normalize_scores(v, self.normalization) for v in scores]
            counts = global_removals(selected, normalized, self.ratio, self.floor)
        else:
            counts = [min(round(self.ratio * g.channels), g.channels - 1) for g in selected]
        groups = tuple(
            GroupPlan(g.channels, keep_lowest_removed(g, v.tolist(), n), g.uses)
            for g, v, n in zip(selected, scores, counts, strict=True)
        )

        draft = PruningPlan(
            ratio=self.ratio,
            targets=self.targets,
            input_shapes=tuple(tuple(x.shape) for x in inputs),
            groups=groups,
            params_before=count_parameters(model),
            params_after=0,
            flops_before=0,
            flops_after=0,
            skipped=tuple(skipped),
        )
        pruned = carry_out(model, draft)
        try:
            flops_after, pruned_output = flops_and_output(pruned, inputs)
        except Exception as err:
            raise ValueError(
                f"the pruned model fails on the example inputs ({type(err).__name__}: {err}); "
                "some operation hard-codes a channel count the analysis could not see"
            ) from err
        if _shapes(output) != _shapes(pruned_output):
            # The traced pass may differ from the eval one (GoogLeNet traced in train mode
            # returns its auxiliary heads too): compare with the model's own eval pass.
            flops_before, output = flops_and_output(model, inputs)
        if _shapes(output) != _shapes(pruned_output):
            raise ValueError(
                f"pruning changes the output shape from {_shapes(output)} to "
                f"{_shapes(pruned_output)}"
            )
        return pruned, dataclasses.replace(
            draft,
            params_after=count_parameters(pruned),
            flops_before=flops_before,
            flops_after=flops_after,
        )

    def apply(self, model: nn.Module, plan: PruningPlan, *, inplace: bool = False) -> nn.Module:
        """Carry out ``plan`` on ``model``; see :func:`apply_plan`."""
        return apply_plan(model, plan, inplace=inplace, leaf_types=self.leaf_types)

    # -- planning steps -------------------------------------------------------------------

    def _match(self, model: nn.Module) -> list[str]:
        """Conv/linear layers selected by the patterns, in module order."""
        modules = list(model.named_modules())
        names = [name for name, _ in modules if name]
        prunable = {name for name, m in modules if _is_layer_of(m, _PRUNABLE)}
        wanted = {name for name, m in modules if _is_layer_of(m, self.layer_types)}
        selected: dict[str, None] = {}
        for pattern in self.targets:
            matches = [name for name in names if fnmatchcase(name, pattern)]
            if not matches:
                close = difflib.get_close_matches(pattern, sorted(prunable), n=3, cutoff=0.5)
                hint = f"; close names: {close}" if close else ""
                raise ValueError(f"target pattern {pattern!r} matches no module{hint}")
            layers = [name for name in matches if name in prunable]
            if not layers:
                raise ValueError(
                    f"target pattern {pattern!r} matches no conv, linear or attention layer, only "
                    f"{matches[:5]}; target the layer that creates the channels"
                )
            selected.update(dict.fromkeys(name for name in layers if name in wanted))
        chosen = [
            name
            for name in selected
            if not any(fnmatchcase(name, pattern) for pattern in self.ignore)
        ]
        if not chosen:
            kinds = ", ".join(kind.__name__ for kind in self.layer_types)
            raise ValueError(
                f"targets {list(self.targets)} select no layer of the types ({kinds}) outside "
                f"ignore={list(self.ignore)}"
            )
        return chosen

    def _select(
        self, graph: ChannelGraph, layers: list[str]
    ) -> tuple[list[ChannelGroup], list[tuple[str, str]]]:
        """The groups to prune, and the layers that cannot be pruned with the reason."""
        selected: dict[int, ChannelGroup] = {}
        problems: list[tuple[str, str]] = []
        for layer in layers:
            group = graph.group_of(layer)
            if group is None:
                reason = next(
                    (line for line in graph.opaque if _names_parent(line, layer)),
                    "the layer does not run in the forward pass on the example inputs",
                )
                problems.append((layer, reason))
            elif group.frozen:
                problems.append((layer, "its channels are frozen: " + "; ".join(group.frozen)))
            else:
                selected.setdefault(id(group), group)
        listing = "\n".join(f"  {layer}: {why}" for layer, why in problems)
        if problems and self.strict:
            raise ValueError(
                f"cannot prune these target layers:\n{listing}\nPass strict=False to prune the "
                "others and list these in the plan's skipped, or leave them out with "
                f"ignore={[layer for layer, _ in problems]!r}"
            )
        if not selected:
            raise ValueError(f"none of the target layers can be pruned:\n{listing}")
        for layer, why in problems:
            logger.info("skipping %s: %s", layer, why)
        order = {id(group): i for i, group in enumerate(graph.groups)}
        return sorted(selected.values(), key=lambda g: order[id(g)]), problems

    def _scores(self, group: ChannelGroup, model: nn.Module) -> Tensor:
        scores = self.importance(group, model)
        name = getattr(self.importance, "__name__", repr(self.importance))
        if not isinstance(scores, Tensor):
            raise TypeError(f"importance {name} must return a tensor, got {type(scores).__name__}")
        if scores.shape != (group.channels,):
            raise ValueError(
                f"importance {name} must return one score per channel, shape "
                f"[{group.channels}], got {list(scores.shape)} for {group.producers}"
            )
        values = scores.detach().cpu().double()
        if not bool(torch.isfinite(values).all()):
            raise ValueError(f"importance {name} returned non-finite scores for {group.producers}")
        return values


def apply_plan(
    model: nn.Module,
    plan: PruningPlan,
    *,
    inplace: bool = False,
    leaf_types: Iterable[type[nn.Module]] = (),
) -> nn.Module:
    """Slice every layer in ``plan``: filters, BatchNorm parameters and statistics, consumers.

    The plan is checked against ``model`` before anything is changed, so an error leaves the
    model as it was: the model is analyzed on zero inputs of the plan's ``input_shapes`` and
    every group of the plan must be one of its prunable groups, with the same channel count
    and exactly the same layer uses (a plan for another model, or a crafted plan missing a
    BatchNorm or a reader, is refused); the plan's ``params_before`` must be the model's
    parameter count, and the result's must be the plan's ``params_after`` (with ``inplace``,
    predicted before slicing from copies of the sliced layers, one at a time; where sliced
    layers nest, it is counted after slicing).

    Args:
        model: The model the plan was made for (or an identical copy, e.g. a fresh build with
            the same state).
        plan: From :meth:`Pruner.plan` (or :meth:`PruningPlan.from_json`).
        inplace: If ``False`` (the default), prune a deep copy and leave ``model`` untouched.
            If ``True``, slice ``model``'s own layers and return it; its parameters are
            replaced by new tensors, so optimizers holding the old ones must be rebuilt.
        leaf_types: The module types the plan's :class:`Pruner` kept opaque, if any.

    Returns:
        The pruned model: a copy, or ``model`` itself when ``inplace``.

    Raises:
        TypeError: If ``model`` or ``plan`` has the wrong type.
        ValueError: If the plan does not fit the model (a missing layer, a layer of another
            kind or size, invalid channel indices, a group or parameter count that differs
            from the model's own analysis).
    """
    check_model(model)
    if not isinstance(plan, PruningPlan):
        raise TypeError(f"plan must be a PruningPlan, got {type(plan).__name__}")
    slices = plan_slices(model, plan)  # the cheap checks first: layers, sizes, indices
    check_plan_fits(model, plan, tuple(leaf_types))
    # In place, the count after is predicted first, so that a wrong one changes nothing.
    predicted = predicted_parameters(model, slices) if inplace else None
    if predicted is not None and predicted != plan.params_after:
        raise _params_after_error(plan, predicted, pruned=False)
    pruned = carry_out(model, plan, inplace=inplace)
    if (count := count_parameters(pruned)) != plan.params_after:
        raise _params_after_error(plan, count, pruned=inplace)
    return pruned


def _params_after_error(plan: PruningPlan, count: int, *, pruned: bool) -> ValueError:
    return ValueError(
        f"the plan says {plan.params_after} parameters remain, the pruned model has {count}: "
        "the plan's statistics were edited"
        + ("; the model was pruned as the plan's groups say" if pruned else "")
    )


def _names_parent(line: str, layer: str) -> bool:
    """Whether an opaque-operation line is about ``layer`` or a module containing it."""
    if not line.startswith("module '"):
        return False
    name = line[len("module '") :].split("'", 1)[0]
    return layer == name or layer.startswith(name + ".")


def _shapes(output: Any) -> Any:
    if isinstance(output, Tensor):
        return tuple(output.shape)
    if isinstance(output, list | tuple):
        return tuple(_shapes(item) for item in output)
    if isinstance(output, dict):
        return {key: _shapes(value) for key, value in output.items()}
    return type(output).__name__
