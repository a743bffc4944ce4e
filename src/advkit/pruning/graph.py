"""Which channels are coupled: a torch.fx pass that groups the channels pruned together.

The model is traced with :mod:`torch.fx` and run once on example inputs to learn every tensor's
shape. Every channel a layer creates (a convolution's filter, a linear layer's output feature)
is one *element*, and each tensor carries the array of elements along its channel dimension:
dim 1 for ``[N, C, H, W]`` maps, the last dim after a permute to channels-last or for a linear
layer's ``[N, L, D]`` tokens. Layers that act on each channel separately (BatchNorm, LayerNorm
over the channels, activations, pooling, depthwise convolutions) pass the array through;
concatenation along the channels concatenates the arrays, ``split``/``chunk``/slicing cut them,
``view``/``transpose`` shuffles permute them. An element-wise sum or product of two tensors
(a residual sum, a squeeze-excitation gate) joins their elements pairwise. A grouped convolution
joins its input and output channels and asks that every group keep the same width.

Joined elements form a *unit*, removed as a whole; units created by the same layers form a
*group* (:class:`ChannelGroup`). Anything the pass does not understand *freezes* the groups it
touches, with a reason naming the module and the operation. The model's inputs and outputs are
frozen too, since their sizes are part of the model's interface.

References:
    Fang, Ma, Song, Mi and Wang, "DepGraph: Towards Any Structural Pruning", CVPR 2023.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, fx, nn

from advkit._checks import check_model
from advkit._guard import model_state
from advkit.models import Normalize
from advkit.pruning._flow import ChannelPass
from advkit.pruning._guard import as_input_tuple
from advkit.pruning._ops import METADATA_ATTRS, METADATA_METHODS
from advkit.pruning._shapes import ShapeRecorder
from advkit.pruning.channels import ChannelGraph, ChannelGroup, ChannelUse, Role
from advkit.pruning.registry import find_handler
from advkit.pruning.stats import flop_counter, flops_and_output

__all__ = ["ChannelGraph", "ChannelGroup", "ChannelTracer", "ChannelUse", "Role", "analyze"]

# nn.Module's own call and attribute read, which fx replaces while it traces (see
# ChannelTracer._evaluate)
_MODULE_CALL, _MODULE_GETATTR = nn.Module.__call__, nn.Module.__getattr__


class ChannelTracer(fx.Tracer):
    """An fx tracer that keeps some modules as single calls instead of tracing into them.

    Kept whole: advkit's :class:`~advkit.models.Normalize` (it validates its input shape in
    Python, which symbolic tracing cannot follow), every layer type with a registered
    :class:`~advkit.pruning.LayerHandler`, and ``nn.LayerNorm`` unless a subclass overrides
    its ``forward`` (as ConvNeXt's ``LayerNorm2d`` does; that one is traced into).

    Given ``example_inputs``, Python control flow on a traced value (``if new_h != H``, as in
    timm's MobileViT and TinyViT blocks) takes the branch those inputs take: the graph up to
    the condition is run on them, and the trace is specialized to their shapes, as the rest
    of the analysis is. Without them such code cannot be traced.

    Args:
        leaf_types: Further module types to keep as single calls instead of tracing into them.
        leaf_names: Qualified names of submodules to keep as single calls.
        example_inputs: The inputs the analysis runs the model on, for control flow.
    """

    def __init__(
        self,
        leaf_types: Sequence[type[nn.Module]] = (),
        leaf_names: Iterable[str] = (),
        example_inputs: tuple[Tensor, ...] | None = None,
    ) -> None:
        super().__init__()
        # A buffer read in traced code (``x + self.shift.view(1, -1, 1, 1)``) becomes a
        # ``get_attr`` node, as a parameter does, so its channels are followed and sliced;
        # otherwise its view would be a constant of the graph that the analysis cannot see.
        self.proxy_buffer_attributes = True
        self.leaf_types: tuple[type[nn.Module], ...] = (Normalize, *leaf_types)
        self.leaf_names: set[str] = set(leaf_names)
        self.example_inputs = example_inputs
        self.failed_in: str | None = None  # the innermost module whose tracing raised
        self._stack: list[str] = []
        self._evaluating = False
        self._runner: fx.Interpreter | None = None

    def to_bool(self, obj: fx.Proxy) -> bool:
        # Refused (the module becomes one opaque call): without example inputs; on a
        # condition that reads tensor values; and re-entered, when running the graph met a
        # traced value that a module cached while being traced (TinyViT's attention biases).
        if self.example_inputs is None or self._evaluating or not _from_shapes(obj.node):
            return super().to_bool(obj)
        self._evaluating = True
        try:
            return bool(self._evaluate(obj.node))
        finally:
            self._evaluating = False

    def _evaluate(self, node: fx.Node) -> Any:
        """The value of ``node`` on the example inputs: the graph traced so far, run once
        (each node's value is kept for the next condition)."""
        # While it traces, fx routes every module call and attribute read through itself;
        # run the graph with the plain ones, then hand them back.
        traced_call, traced_getattr = nn.Module.__call__, nn.Module.__getattr__
        nn.Module.__call__, nn.Module.__getattr__ = _MODULE_CALL, _MODULE_GETATTR  # type: ignore[method-assign]
        try:
            with (
                model_state(self.root, no_grad=True),
                torch.random.fork_rng(devices=_cuda_devices(self.example_inputs or ())),
            ):
                if self._runner is None:
                    self._runner = fx.Interpreter(
                        self.root, garbage_collect_values=False, graph=self.graph
                    )
                    self._runner.args_iter = iter(self.example_inputs or ())
                values = self._runner.env
                for current in self.graph.nodes:
                    if current not in values:
                        values[current] = self._runner.run_node(current)
                    if current is node:
                        break
                return values[node]
        finally:
            nn.Module.__call__, nn.Module.__getattr__ = traced_call, traced_getattr  # type: ignore[method-assign]

    def call_module(
        self, m: nn.Module, forward: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        name = self.path_of_module(m) if not self.is_leaf_module(m, "") else None
        if name is not None:
            self._stack.append(name)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None and self._stack:
                self.failed_in = self._stack[-1]
            raise
        finally:
            if name is not None:
                self._stack.pop()

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, self.leaf_types) or module_qualified_name in self.leaf_names:
            return True
        if isinstance(m, nn.LayerNorm):
            return type(m).forward is nn.LayerNorm.forward
        handler = find_handler(m)
        if handler is not None and handler.leaf:
            return True
        return super().is_leaf_module(m, module_qualified_name)


def trace(
    model: nn.Module,
    leaf_types: Iterable[type[nn.Module]] = (),
    example_inputs: tuple[Tensor, ...] | None = None,
) -> fx.Graph:
    """Trace ``model`` with :class:`ChannelTracer` (the graph's modules are ``model``'s).

    With ``example_inputs``, control flow on shapes follows them (see :class:`ChannelTracer`).
    A submodule torch.fx still cannot trace is kept as one opaque call, its channels frozen,
    and the rest of the model traced around it.

    Raises:
        TypeError: If torch.fx cannot trace the model (for example, Python control flow that
            depends on tensor values); the message names the fx error.
    """
    leaf_names: list[str] = []
    while True:
        tracer = ChannelTracer(tuple(leaf_types), leaf_names, example_inputs)
        try:
            with _no_traced_values_left(model):
                return tracer.trace(model)
        except Exception as err:  # fx raises many kinds of errors for untraceable code
            culprit = tracer.failed_in
            if not culprit or culprit in leaf_names or len(leaf_names) >= _MAX_LEAVES:
                raise TypeError(
                    f"torch.fx could not trace {type(model).__name__} "
                    f"({type(err).__name__}: {err}); pass the untraceable submodule types as "
                    "leaf_types to keep them opaque"
                ) from err
            # Keep the innermost submodule that failed as one opaque call (its channels
            # frozen) and trace the rest: a model is never refused whole for one block.
            leaf_names.append(culprit)


_MAX_LEAVES = 256  # submodules made opaque, one retrace each, before trace gives up


def _from_shapes(node: fx.Node) -> bool:
    """Whether ``node`` is computed from tensors' shapes alone (``x.shape``, ``x.size()``,
    then Python arithmetic and comparisons): a branch on it is the same for every input of
    the example's shape. One that reads tensor values (``if x.sum() > 0``) is not."""
    if node.op == "call_method" and node.target in METADATA_METHODS:
        return True
    if node.op == "call_function" and node.target is getattr:
        return node.args[1] in METADATA_ATTRS
    python = node.op == "call_function" and getattr(node.target, "__module__", None) in (
        "_operator",
        "math",
        "builtins",
    )
    return python and all(_from_shapes(arg) for arg in node.all_input_nodes)


@contextlib.contextmanager
def _no_traced_values_left(model: nn.Module) -> Iterator[None]:
    """Undo what tracing cached in the modules: an attribute set to a traced value, or one put
    into a dict attribute (TinyViT and LeViT cache their attention biases by device in eval
    mode), which would otherwise stay in the caller's model and in every copy of it."""
    before = [(module, dict(vars(module))) for module in model.modules()]
    try:
        yield
    finally:
        for module, attributes in before:
            for name, value in list(vars(module).items()):
                if isinstance(value, fx.Proxy):
                    if name in attributes:
                        setattr(module, name, attributes[name])
                    else:
                        delattr(module, name)
                elif isinstance(value, dict):
                    for key in [k for k, v in value.items() if isinstance(v, fx.Proxy)]:
                        del value[key]


def analyze(
    model: nn.Module,
    example_inputs: Tensor | Sequence[Tensor],
    *,
    leaf_types: Iterable[type[nn.Module]] = (),
) -> ChannelGraph:
    """Find which channels of ``model`` are coupled, by tracing it and running it once.

    The model runs in eval mode under ``torch.no_grad()``, and every submodule's ``training``
    flag is restored afterwards, so BatchNorm statistics are not changed. The graph is traced
    in the model's own mode; a model in eval mode some of whose layers never run (GoogLeNet's
    auxiliary heads run in train mode only) is traced in train mode, so that the pruned model
    also trains. The caller's random number stream is left as it was.

    Args:
        model: The network to analyze.
        example_inputs: One input batch (or a sequence of positional inputs); small is fine.
        leaf_types: Module types to keep opaque instead of tracing into them. Their channels
            are frozen.

    Returns:
        The groups of coupled channels and a line per operation that froze channels.

    Raises:
        TypeError: If ``model`` is not an ``nn.Module``, ``example_inputs`` are not tensors,
            or the model cannot be traced.
        ValueError: If the model fails on ``example_inputs``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
        ...                     nn.Flatten(), nn.Linear(4 * 2 * 2, 2))
        >>> group = analyze(net, torch.rand(1, 3, 4, 4)).group_of("0")
        >>> [(use.module, use.role, use.expansion) for use in group.uses]
        [('0', 'out', 1), ('1', 'through', 1), ('4', 'in', 4)]
    """
    return analyze_and_count(model, example_inputs, leaf_types=leaf_types)[0]


def analyze_and_count(
    model: nn.Module,
    example_inputs: Tensor | Sequence[Tensor],
    *,
    leaf_types: Iterable[type[nn.Module]] = (),
) -> tuple[ChannelGraph, int, Any]:
    """:func:`analyze`, with the FLOPs (see :func:`~advkit.pruning.count_flops`) and the
    output of a forward pass: the traced pass, which for a model in train mode may differ
    from the eval pass (GoogLeNet's auxiliary heads), or, for a model in eval mode traced in
    train mode, a second pass, the model's own eval pass."""
    check_model(model)
    inputs = as_input_tuple(example_inputs)
    traced = trace(model, leaf_types, inputs)
    train_graph = False
    if not model.training and unreached_layers(traced, model):
        # Layers that run in train mode only (GoogLeNet's auxiliary heads) read channels the
        # eval graph does not show; fine-tuning the pruned model runs them, so analyze the
        # train-mode graph (the eval pass below gives the FLOPs and the output).
        with model_state(model, mode="train"):
            traced = trace(model, leaf_types, inputs)
        train_graph = True
    # Modules run in eval mode; a train-mode graph may still call functional dropout: keep the
    # caller's random stream as it was.
    with (
        flop_counter(model) as flops,
        model_state(model, no_grad=True),
        torch.random.fork_rng(devices=_cuda_devices(inputs)),
    ):
        try:
            output = ShapeRecorder(model, graph=traced).run(*inputs)
        except Exception as err:
            raise ValueError(
                f"the model failed on example inputs of shape "
                f"{[list(x.shape) for x in inputs]}: {type(err).__name__}: {err}"
            ) from err
    flop_count = flops[0]
    if train_graph:
        flop_count, output = flops_and_output(model, inputs)
    graph = _freeze_tied(ChannelPass(traced, dict(model.named_modules()), model).run(), model)
    return graph, flop_count, output


def tied_tensors(model: nn.Module) -> list[list[str]]:
    """Names of the parameters and buffers held by more than one module (tied weights), one
    list per shared tensor; a module registered under two names is not a tie."""
    owners: dict[int, dict[int, list[str]]] = {}
    for named in (model.named_parameters, model.named_buffers):
        for name, tensor in named(remove_duplicate=False):
            owner = model.get_submodule(name.rpartition(".")[0])
            owners.setdefault(id(tensor), {}).setdefault(id(owner), []).append(name)
    return [
        [name for names in by_owner.values() for name in names]
        for by_owner in owners.values()
        if len(by_owner) > 1
    ]


def _freeze_tied(graph: ChannelGraph, model: nn.Module) -> ChannelGraph:
    """Freeze every group touching a layer whose weights are tied to another layer's: slicing
    one of them would untie them (the other would keep the old tensor)."""
    reasons: dict[str, str] = {}
    for names in tied_tensors(model):
        why = f"{names[0]!r} is tied to {', '.join(map(repr, names[1:]))} (a shared tensor)"
        for name in names:
            owner = name.rpartition(".")[0]
            reasons.setdefault(name, why)
            reasons.setdefault(owner, why)
    if not reasons:
        return graph
    groups = []
    for group in graph.groups:
        found = [reasons[use.module] for use in group.uses if use.module in reasons]
        if found:
            group = dataclasses.replace(group, frozen=(*group.frozen, *dict.fromkeys(found)))
        groups.append(group)
    return ChannelGraph(tuple(groups), graph.opaque)


def unreached_layers(graph: fx.Graph, model: nn.Module) -> list[str]:
    """Layers with a handler that the graph never uses: not called (directly or inside a
    called leaf), and none of their parameters read (a layer the tracer went into)."""
    called = {str(node.target) for node in graph.nodes if node.op == "call_module"}
    called |= {str(node.target).rpartition(".")[0] for node in graph.nodes if node.op == "get_attr"}

    def reached(name: str) -> bool:
        parts = name.split(".")
        return any(".".join(parts[:i]) in called for i in range(1, len(parts) + 1))

    return [
        name
        for name, module in model.named_modules()
        if name and find_handler(module) is not None and not reached(name)
    ]


def _cuda_devices(inputs: tuple[Tensor, ...]) -> list[int]:
    return sorted({x.device.index or 0 for x in inputs if x.device.type == "cuda"})
