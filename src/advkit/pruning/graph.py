"""Which channels are coupled: a torch.fx pass that groups the channels pruned together.

The model is traced with :mod:`torch.fx` and run once on example inputs to learn every tensor's
shape. Each tensor with a channel dimension (dim 1) carries a *channel space*; a layer that
creates channels (a convolution or linear layer) opens a new space, layers that act on each
channel separately (BatchNorm, activations, pooling, depthwise convolutions) pass their input's
space through, and an element-wise sum (or product) of two tensors joins their spaces into one.
Flattening ``[N, C, H, W]`` to ``[N, C*H*W]`` keeps the space and records that every channel now
feeds ``H*W`` consecutive features of the next linear layer.

Anything the pass does not understand *freezes* the spaces it touches: their channels are never
pruned, and the reason is kept so it can be reported. The model's inputs and outputs are frozen
too, since their sizes are part of the model's interface.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from advkit._guard import model_state
from advkit.models import Normalize
from advkit.pruning._guard import as_input_tuple

__all__ = ["ChannelGraph", "ChannelGroup", "ChannelTracer", "ChannelUse", "Role", "analyze"]

Role = Literal["out", "through", "in"]
"""How a layer touches a group's channels: ``"out"`` creates them (filters, dim 0 of the weight),
``"through"`` acts on each separately (BatchNorm, depthwise conv), ``"in"`` reads them (dim 1)."""


@dataclass(frozen=True)
class ChannelUse:
    """One layer's use of a group's channels.

    Attributes:
        module: Qualified name of the layer (as in ``model.named_modules()``).
        role: ``"out"``, ``"through"`` or ``"in"`` (see :data:`Role`).
        expansion: Consecutive input features per channel; above 1 only for a linear layer that
            reads a flattened feature map (``H * W``).
    """

    module: str
    role: Role
    expansion: int = 1


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must be pruned together: every layer that creates, passes or reads them.

    Attributes:
        channels: Number of channels in the group.
        uses: Every layer use, in the order the forward pass reaches them.
        frozen: Why the group cannot be pruned; empty when it can.
    """

    channels: int
    uses: tuple[ChannelUse, ...]
    frozen: tuple[str, ...] = ()

    @property
    def producers(self) -> tuple[str, ...]:
        """The layers whose filters (output channels) make up the group."""
        return tuple(use.module for use in self.uses if use.role == "out")

    @property
    def prunable(self) -> bool:
        """Whether the group has filters and nothing freezes it."""
        return not self.frozen and bool(self.producers)


@dataclass(frozen=True)
class ChannelGraph:
    """The result of :func:`analyze`: every group of coupled channels that some layer creates.

    Attributes:
        groups: The groups, in the order their first layer runs.
        opaque: One line per operation the pass did not understand (and so froze).
    """

    groups: tuple[ChannelGroup, ...]
    opaque: tuple[str, ...]

    def group_of(self, module: str) -> ChannelGroup | None:
        """The group whose channels ``module`` creates (or passes, for a depthwise conv)."""
        for group in self.groups:
            if any(u.module == module and u.role != "in" for u in group.uses):
                return group
        return None


class ChannelTracer(fx.Tracer):
    """An fx tracer that keeps advkit's :class:`~advkit.models.Normalize` as one opaque call.

    ``Normalize`` validates its input shape in Python, which symbolic tracing cannot follow.

    Args:
        leaf_types: Further module types to keep as single calls instead of tracing into them.
    """

    def __init__(self, leaf_types: Sequence[type[nn.Module]] = ()) -> None:
        super().__init__()
        self.leaf_types: tuple[type[nn.Module], ...] = (Normalize, *leaf_types)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, self.leaf_types) or super().is_leaf_module(m, module_qualified_name)


# Layers and functions that act on every channel on its own and keep dim 1 as the channel dim.
_CHANNELWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample,
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d,
    nn.ConstantPad3d, nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReplicationPad1d,
    nn.ReplicationPad2d, nn.ReplicationPad3d,
)  # fmt: skip
_CHANNELWISE_FUNCTIONS: frozenset[Any] = frozenset({
    torch.relu, torch.relu_, F.relu, F.relu_, F.relu6, F.leaky_relu, F.elu, F.selu, F.gelu,
    F.silu, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh, torch.sigmoid, torch.tanh,
    F.sigmoid, F.tanh, F.softplus, torch.abs, operator.neg, F.dropout, F.dropout1d, F.dropout2d,
    F.dropout3d, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d,
    F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d, torch.clamp,
    F.interpolate, F.pad,
})  # fmt: skip
_CHANNELWISE_METHODS = frozenset({
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "abs", "neg", "clamp", "clamp_",
    "contiguous", "clone", "detach", "float", "double", "half", "to",
})  # fmt: skip
# Element-wise binary arithmetic: joins the spaces of two same-shape tensors.
_ELEMENTWISE_FUNCTIONS: frozenset[Any] = frozenset({
    operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul,
    operator.truediv, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div,
})  # fmt: skip
_ELEMENTWISE_METHODS = frozenset({"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"})
# Reading a tensor's metadata does not depend on which channels it holds.
_METADATA_METHODS = frozenset({"size", "dim", "numel", "ndimension", "type", "is_contiguous"})
_METADATA_ATTRS = frozenset({"shape", "dtype", "device", "ndim", "is_cuda"})
_REDUCTIONS = frozenset({"mean", "sum", "amax", "amin"})
_RESHAPES = frozenset({"view", "reshape"})


@dataclass(frozen=True)
class _Ref:
    """The channel space a tensor carries in dim 1, and features per channel there."""

    space: int
    expansion: int = 1


class _Spaces:
    """Union-find over channel spaces, with the layer uses and freeze reasons of each."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.channels: list[int] = []
        self.uses: list[list[ChannelUse]] = []
        self.frozen: list[list[str]] = []

    def new(self, channels: int, *, use: ChannelUse | None = None, frozen: str = "") -> int:
        self.parent.append(len(self.parent))
        self.channels.append(channels)
        self.uses.append([use] if use else [])
        self.frozen.append([frozen] if frozen else [])
        return len(self.parent) - 1

    def find(self, space: int) -> int:
        while self.parent[space] != space:
            self.parent[space] = self.parent[self.parent[space]]
            space = self.parent[space]
        return space

    def union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        if a > b:  # the older space stays the root, so groups list uses in forward order
            a, b = b, a
        self.parent[b] = a
        self.uses[a] += self.uses[b]
        self.frozen[a] += self.frozen[b]
        if self.channels[a] != self.channels[b]:
            self.frozen[a].append(
                f"one layer joins {self.channels[a]} and {self.channels[b]} channels"
            )
        return a

    def add_use(self, space: int, use: ChannelUse) -> None:
        self.uses[self.find(space)].append(use)

    def freeze(self, space: int, reason: str) -> None:
        self.frozen[self.find(space)].append(reason)


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)  # tuples of tensors have no single shape
    return tuple(shape) if isinstance(shape, torch.Size) else None


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"module {node.target!r} ({type(modules[str(node.target)]).__name__})"
    if node.op == "call_method":
        return f"method .{node.target}() at node {node.name!r}"
    if node.op == "call_function":
        name = getattr(node.target, "__name__", repr(node.target))
        return f"function {name}() at node {node.name!r}"
    return f"{node.op} {node.target!r}"


class _ChannelPass:
    """Walks the traced graph once, giving every tensor node a channel space."""

    def __init__(self, graph: fx.Graph, modules: dict[str, nn.Module]) -> None:
        self.graph = graph
        self.modules = modules
        self.spaces = _Spaces()
        self.refs: dict[fx.Node, _Ref | None] = {}
        self.opaque: list[str] = []

    def run(self) -> ChannelGraph:
        for node in self.graph.nodes:
            self.refs[node] = self._visit(node)
        self._join_reused_layers()
        return ChannelGraph(groups=self._groups(), opaque=tuple(self.opaque))

    # -- helpers --------------------------------------------------------------------------

    def _inputs(self, node: fx.Node) -> list[fx.Node]:
        """Input nodes that carry channels."""
        return [n for n in node.all_input_nodes if self.refs.get(n) is not None]

    def _fresh(self, node: fx.Node, **kwargs: Any) -> _Ref | None:
        shape = _shape(node)
        if shape is None or len(shape) < 2:
            return None
        return _Ref(self.spaces.new(shape[1], **kwargs))

    def _opaque(self, node: fx.Node, reason: str) -> _Ref | None:
        """Freeze everything ``node`` touches: the fallback for what the pass cannot follow."""
        why = f"{_describe(node, self.modules)}: {reason}"
        inputs = self._inputs(node)
        output = self._fresh(node, frozen=why)
        if inputs or output is not None:
            self.opaque.append(why)
        for source in inputs:
            self.spaces.freeze(self._ref(source).space, why)
        return output

    def _ref(self, node: fx.Node) -> _Ref:
        ref = self.refs[node]
        if ref is None:  # pragma: no cover - callers pass nodes from _inputs only
            raise RuntimeError(f"node {node.name!r} carries no channels")
        return ref

    def _passthrough(self, node: fx.Node) -> _Ref | None:
        """Output keeps the one channel-carrying input's space if dims 0 and 1 are unchanged."""
        inputs = self._inputs(node)
        tensor_args = [n for n in node.all_input_nodes if _shape(n) is not None]
        out, inp = _shape(node), _shape(inputs[0]) if len(inputs) == 1 else None
        if len(tensor_args) != 1 or out is None or inp is None or out[:2] != inp[:2]:
            return self._opaque(node, "a channel-wise op with unexpected inputs or output shape")
        return self.refs[inputs[0]]

    # -- dispatch -------------------------------------------------------------------------

    def _visit(self, node: fx.Node) -> _Ref | None:
        if node.op == "placeholder":
            return self._fresh(node, frozen="the model's input channels")
        if node.op == "get_attr":
            return self._fresh(node, frozen=f"tensor attribute {node.target!r} used directly")
        if node.op == "output":
            for source in self._inputs(node):
                self.spaces.freeze(self._ref(source).space, "they are the model's output")
            return None
        if node.op == "call_module":
            return self._module(node, self.modules[str(node.target)])
        if node.op == "call_method" and node.target in _METADATA_METHODS:
            return None
        if node.op == "call_function" and node.target is getattr:
            if node.args[1] in _METADATA_ATTRS:
                return None
            return self._opaque(node, "reads a tensor attribute")
        return self._function(node)

    def _module(self, node: fx.Node, module: nn.Module) -> _Ref | None:
        name = str(node.target)
        if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
            return self._conv(node, name, module)
        if isinstance(module, nn.Linear):
            return self._linear(node, name, module)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            inputs = self._inputs(node)
            if len(inputs) != 1 or self._ref(inputs[0]).expansion != 1:
                return self._opaque(node, "BatchNorm over flattened channels")
            ref = self._ref(inputs[0])
            self.spaces.add_use(ref.space, ChannelUse(name, "through"))
            return ref
        if isinstance(module, nn.PReLU) and module.num_parameters == 1:
            return self._passthrough(node)
        if isinstance(module, _CHANNELWISE_MODULES):
            return self._passthrough(node)
        if isinstance(module, nn.Flatten):
            return self._flatten(node)
        return self._opaque(node, "the channel analysis does not know this layer")

    def _conv(self, node: fx.Node, name: str, conv: nn.modules.conv._ConvNd) -> _Ref | None:
        inputs = self._inputs(node)
        batched = len(conv.kernel_size) + 2  # [N, C, *spatial]; unbatched input has no dim N
        if len(inputs) != 1 or len(_shape(inputs[0]) or ()) != batched:
            return self._opaque(node, f"a convolution whose input is not {batched}-D")
        source = self._ref(inputs[0])
        if source.expansion != 1:
            return self._opaque(node, "a convolution over flattened channels")
        if conv.groups == 1:
            self.spaces.add_use(source.space, ChannelUse(name, "in"))
            return self._fresh(node, use=ChannelUse(name, "out"))
        if conv.groups == conv.in_channels == conv.out_channels:  # depthwise: 1 filter/channel
            self.spaces.add_use(source.space, ChannelUse(name, "through"))
            return source
        return self._opaque(node, f"grouped convolution (groups={conv.groups})")

    def _linear(self, node: fx.Node, name: str, linear: nn.Linear) -> _Ref | None:
        inputs = self._inputs(node)
        in_shape, out_shape = (_shape(inputs[0]) if inputs else None), _shape(node)
        if len(inputs) != 1 or in_shape is None or len(in_shape) != 2 or out_shape is None:
            return self._opaque(node, "a linear layer on a tensor that is not [N, features]")
        source = self._ref(inputs[0])
        self.spaces.add_use(source.space, ChannelUse(name, "in", source.expansion))
        return self._fresh(node, use=ChannelUse(name, "out"))

    def _function(self, node: fx.Node) -> _Ref | None:
        target = node.target
        is_method = node.op == "call_method"
        if (is_method and target in _CHANNELWISE_METHODS) or (
            not is_method and target in _CHANNELWISE_FUNCTIONS
        ):
            return self._passthrough(node)
        if (is_method and target in _ELEMENTWISE_METHODS) or (
            not is_method and target in _ELEMENTWISE_FUNCTIONS
        ):
            return self._elementwise(node)
        if target is torch.flatten or (is_method and target == "flatten"):
            return self._flatten(node)
        if is_method and target in _RESHAPES:
            return self._reshape(node)
        if (is_method and target in _REDUCTIONS) or (
            not is_method and target in (torch.mean, torch.sum, torch.amax, torch.amin)
        ):
            return self._reduction(node)
        return self._opaque(node, "the channel analysis does not know this operation")

    def _elementwise(self, node: fx.Node) -> _Ref | None:
        """Same-shape operands are joined; operands constant along channels do not matter."""
        out = _shape(node)
        if out is None or len(out) < 2:
            return self._opaque(node, "element-wise op without a channel dimension")
        carrying, uniform = [], []
        for source in node.all_input_nodes:
            shape = _shape(source)
            if shape is None:
                continue
            channel_dim = 1 - (len(out) - len(shape))  # broadcasting aligns dims on the right
            if channel_dim < 0 or (shape[channel_dim] == 1 and out[1] != 1):
                uniform.append(source)
            else:
                carrying.append(source)
        if not carrying or any(_shape(n) != out or self.refs[n] is None for n in carrying):
            return self._opaque(node, "element-wise op on tensors of different shapes")
        refs = [self._ref(n) for n in carrying]
        if len({ref.expansion for ref in refs}) != 1:
            return self._opaque(node, "element-wise op on differently flattened tensors")
        for source in uniform:
            if self.refs.get(source) is not None:
                why = f"{_describe(node, self.modules)}: broadcast across the channels"
                self.spaces.freeze(self._ref(source).space, why)
        root = refs[0].space
        for ref in refs[1:]:
            root = self.spaces.union(root, ref.space)
        return _Ref(root, refs[0].expansion)

    def _flatten(self, node: fx.Node) -> _Ref | None:
        """``[N, C, *S] -> [N, C * prod(S)]``: each channel feeds ``prod(S)`` features."""
        inputs = self._inputs(node)
        if len(inputs) != 1:
            return self._opaque(node, "flatten of an unexpected input")
        in_shape, out_shape = _shape(inputs[0]), _shape(node)
        if in_shape is None or out_shape is None or len(in_shape) < 2:
            return self._opaque(node, "flatten of an unexpected input")
        source = self._ref(inputs[0])
        if out_shape == in_shape:
            return source
        if out_shape[:2] == in_shape[:2] and math.prod(out_shape) == math.prod(in_shape):
            return source  # only trailing (spatial) dims merged
        if len(out_shape) == 2 and out_shape[0] == in_shape[0]:
            return _Ref(source.space, source.expansion * math.prod(in_shape[2:]))
        return self._opaque(node, f"flatten from {list(in_shape)} to {list(out_shape)}")

    def _reshape(self, node: fx.Node) -> _Ref | None:
        sizes = node.args[1:]
        if len(sizes) == 1 and isinstance(sizes[0], list | tuple):
            sizes = tuple(sizes[0])
        # A literal channel count would break once channels are removed; -1 or a computed
        # size adapts.
        if len(sizes) < 2 or not (sizes[1] == -1 or isinstance(sizes[1], fx.Node)):
            return self._opaque(node, "reshape to a fixed channel count")
        return self._flatten(node)

    def _reduction(self, node: fx.Node) -> _Ref | None:
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        in_shape = _shape(node.all_input_nodes[0]) if node.all_input_nodes else None
        dims = (dims,) if isinstance(dims, int) else dims
        if in_shape is None or not isinstance(dims, list | tuple) or not dims:
            return self._opaque(node, "a reduction over the channel or batch dimension")
        ndim = len(in_shape)
        if any(not isinstance(d, int) or d % ndim < 2 for d in dims):
            return self._opaque(node, "a reduction over the channel or batch dimension")
        return self._passthrough(node)

    # -- result ---------------------------------------------------------------------------

    def _join_reused_layers(self) -> None:
        """A layer called more than once ties every space it creates or reads in one role."""
        seen: dict[tuple[str, Role], tuple[int, int]] = {}
        for space in range(len(self.spaces.parent)):
            if self.spaces.find(space) != space:
                continue
            for use in list(self.spaces.uses[space]):
                key = (use.module, use.role)
                if key in seen:
                    other, expansion = seen[key]
                    root = self.spaces.union(other, space)
                    if expansion != use.expansion:
                        self.spaces.freeze(root, f"{use.module!r} reads them flattened twice")
                else:
                    seen[key] = (space, use.expansion)

    def _groups(self) -> tuple[ChannelGroup, ...]:
        groups = []
        for space in range(len(self.spaces.parent)):
            if self.spaces.find(space) != space:
                continue
            uses = tuple(dict.fromkeys(self.spaces.uses[space]))
            if not any(use.role == "out" for use in uses):
                continue
            frozen = tuple(dict.fromkeys(self.spaces.frozen[space]))
            groups.append(ChannelGroup(self.spaces.channels[space], uses, frozen))
        return tuple(groups)


def trace(model: nn.Module, leaf_types: Iterable[type[nn.Module]] = ()) -> fx.GraphModule:
    """Trace ``model`` with :class:`ChannelTracer`.

    Raises:
        TypeError: If torch.fx cannot trace the model (for example, Python control flow that
            depends on tensor values); the message names the fx error.
    """
    tracer = ChannelTracer(tuple(leaf_types))
    try:
        graph = tracer.trace(model)
    except Exception as err:  # fx raises many kinds of errors for untraceable code
        raise TypeError(
            f"torch.fx could not trace {type(model).__name__} ({type(err).__name__}: {err}); "
            "pass the untraceable submodule types as leaf_types to keep them opaque"
        ) from err
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def analyze(
    model: nn.Module,
    example_inputs: Tensor | Sequence[Tensor],
    *,
    leaf_types: Iterable[type[nn.Module]] = (),
) -> ChannelGraph:
    """Find which channels of ``model`` are coupled, by tracing it and running it once.

    The model runs in eval mode under ``torch.no_grad()``, and every submodule's ``training``
    flag is restored afterwards, so BatchNorm statistics are not changed.

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
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    inputs = as_input_tuple(example_inputs)
    graph_module = trace(model, leaf_types)
    with model_state(model, no_grad=True):
        try:
            ShapeProp(graph_module).propagate(*inputs)
        except Exception as err:
            raise ValueError(
                f"the model failed on example inputs of shape "
                f"{[list(x.shape) for x in inputs]}: {type(err).__name__}: {err}"
            ) from err
    modules = dict(graph_module.named_modules())
    return _ChannelPass(graph_module.graph, modules).run()
