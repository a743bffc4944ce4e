"""The fx pass behind :func:`advkit.pruning.analyze`: channel elements through every node.

Each tensor node gets a :class:`_Chan`: which of its dimensions hold channels, and the array of
channel elements along them (see :mod:`advkit.pruning._elements`). Anything the pass does not
follow freezes the elements it touches, with a reason naming the module or operation.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn

from advkit.pruning._elements import Blocks, Elements, RawUse, build_graph
from advkit.pruning._flow_nodes import (
    _arg,
    _Chan,
    _describe,
    _Frozen,
    _Param,
    _param_dim,
    _param_shape,
    _shape,
    _view_dims,
)
from advkit.pruning._flow_shapes import ShapeRules, _size_source
from advkit.pruning._ops import (
    CAT,
    CHANNELWISE_FUNCTIONS,
    CHANNELWISE_METHODS,
    CHANNELWISE_MODULES,
    ELEMENTWISE_FUNCTIONS,
    ELEMENTWISE_METHODS,
    METADATA_ATTRS,
    METADATA_METHODS,
    PARAM_VIEWS,
    PERMUTES,
    REDUCTIONS,
    RESHAPE_FUNCTIONS,
    RESHAPE_METHODS,
    SPLITS,
)
from advkit.pruning.channels import ChannelGraph, Role
from advkit.pruning.registry import LayerHandler, find_handler

_Conv = nn.modules.conv._ConvNd


class ChannelPass(ShapeRules):
    """Walks the traced graph once, giving every tensor node its channel elements."""

    def __init__(self, graph: fx.Graph, modules: dict[str, nn.Module], model: nn.Module) -> None:
        self.graph = graph
        self.model = model
        self.modules = modules
        self.elements = Elements()
        self.refs: dict[fx.Node, Any] = {}
        self.uses: list[RawUse] = []
        self.blocks: list[Blocks] = []
        self.opaque: list[str] = []

    def run(self) -> ChannelGraph:
        for node in self.graph.nodes:
            self.refs[node] = self._visit(node)
        self._join_reused_layers()
        return build_graph(self.elements, self.uses, self.blocks, self.opaque)

    # -- helpers --------------------------------------------------------------------------

    def _chan(self, node: Any) -> _Chan | None:
        ref = self.refs.get(node) if isinstance(node, fx.Node) else None
        return ref if isinstance(ref, _Chan) else None

    def _all_chans(self, value: Any) -> list[_Chan]:
        if isinstance(value, _Chan):
            return [value]
        if isinstance(value, list | tuple):
            return [c for item in value for c in self._all_chans(item)]
        return []

    def _fresh(self, node: fx.Node, dim: int = 1, frozen: str = "") -> _Chan | None:
        shape = _shape(node)
        if shape is None or len(shape) < 2:
            return None
        dim %= len(shape)
        return _Chan((dim,), self.elements.new((shape[dim],), frozen=frozen))

    def _record(self, module: str, role: Role, chan: _Chan, dim: int = 0) -> None:
        self.uses.append(RawUse(module, role, chan.elems.reshape(-1), dim))

    def _opaque(self, node: fx.Node, reason: str) -> _Chan | None:
        """Freeze everything ``node`` touches: the fallback for what the pass cannot follow."""
        why = f"{_describe(node, self.modules)}: {reason}"
        touched = self._freeze_inputs(node, why)
        output = _Frozen(why) if "tensor_meta" in node.meta else None
        if touched or output is not None:
            self.opaque.append(why)
        return output  # type: ignore[return-value]

    def _freeze_inputs(self, node: fx.Node, why: str) -> bool:
        touched = [c for n in node.all_input_nodes for c in self._all_chans(self.refs.get(n))]
        # A tensor shaped by a size read from a tensor's channels (``C = x.shape[-1]``).
        sized = [n for n in node.all_input_nodes if "tensor_meta" in node.meta]
        for n in sized:
            tensor, dim = _size_source(n) if self.refs.get(n) is None else (None, 0)
            chan = self._chan(tensor)
            shape = _shape(tensor)
            if chan is not None and shape is not None and dim % len(shape) in chan.dims:
                touched.append(chan)
        for chan in touched:
            self.elements.freeze(chan.elems, why)
        return bool(touched)

    def _after_frozen(self, node: fx.Node, frozen: _Frozen) -> Any:
        """A layer creating channels makes new ones; anything else passes the freeze on."""
        if node.op == "call_module":
            module = self.modules[str(node.target)]
            handler = find_handler(module)
            creates = (
                getattr(module, "groups", 1) == 1 and not getattr(module, "transposed", False)
                if isinstance(module, _Conv)
                else handler is not None and not handler.channelwise
            )
            if creates and handler is not None:
                return self._created(node, str(node.target), handler.channel_dim)
            known = isinstance(module, (*CHANNELWISE_MODULES, nn.Flatten, nn.PReLU))
            if handler is None and not known:  # list it, so its layers say why they stay
                self.opaque.append(
                    f"{_describe(node, self.modules)}: the channel analysis does not know "
                    "this layer"
                )
        self._freeze_inputs(node, frozen.reason)
        return frozen if "tensor_meta" in node.meta else None

    def _single(self, node: fx.Node) -> tuple[fx.Node, _Chan, tuple[int, ...]] | None:
        """The one tensor input with its channels and shape, if it carries channels and is the
        only tensor input (parameters read with ``get_attr`` aside)."""
        tensors = [
            n
            for n in node.all_input_nodes
            if _shape(n) is not None and not isinstance(self.refs.get(n), _Param)
        ]
        if len(tensors) != 1 or self._chan(tensors[0]) is None:
            return None
        return tensors[0], self._chan(tensors[0]), _shape(tensors[0])  # type: ignore[return-value]

    def _passthrough(self, node: fx.Node) -> _Chan | None:
        """The output keeps its input's channels when the channel dims keep their sizes."""
        single = self._single(node)
        out = _shape(node)
        if single is None or out is None:
            return self._opaque(node, "a channel-wise op with unexpected inputs or output shape")
        _, chan, shape = single
        if len(shape) != len(out) or out[0] != shape[0]:
            return self._opaque(node, "a channel-wise op that changes the tensor's layout")
        if any(out[d] != shape[d] for d in chan.dims):
            return self._opaque(node, "a channel-wise op that changes the channel count")
        return chan

    # -- dispatch -------------------------------------------------------------------------

    def _visit(self, node: fx.Node) -> Any:
        if node.op == "placeholder":
            return self._fresh(node, frozen="the model's input channels")
        if node.op == "get_attr":
            return _Param(str(node.target))
        if node.op == "output":
            for chan in self._all_chans([self.refs.get(n) for n in node.all_input_nodes]):
                self.elements.freeze(chan.elems, "they are the model's output")
            return None
        if node.op == "call_method" and node.target in METADATA_METHODS:
            return None
        if node.op in ("call_method", "call_function") and node.target in PARAM_VIEWS:
            view = self._param_view(node)
            if view is not None:
                return view
        if node.op == "call_module":
            handler = find_handler(self.modules[str(node.target)])
            if handler is not None and handler.heads:
                return self._heads(node, str(node.target), handler)
        frozen = [r for n in node.all_input_nodes if isinstance(r := self.refs.get(n), _Frozen)]
        elementwise = node.target in ELEMENTWISE_FUNCTIONS or node.target in ELEMENTWISE_METHODS
        if frozen and not elementwise:
            return self._after_frozen(node, frozen[0])
        if node.op == "call_module":
            return self._module(node, self.modules[str(node.target)])
        if node.op == "call_function" and node.target is getattr:
            if node.args[1] in METADATA_ATTRS:
                return None
            return self._opaque(node, "reads a tensor attribute")
        if node.op == "call_function" and node.target is operator.getitem:
            return self._getitem(node)
        return self._function(node)

    def _module(self, node: fx.Node, module: nn.Module) -> Any:
        name = str(node.target)
        if isinstance(module, _Conv):
            return self._conv(node, name, module)
        handler = find_handler(module)
        if handler is not None:
            return self._registered(node, name, module, handler)
        if isinstance(module, CHANNELWISE_MODULES) or (
            isinstance(module, nn.PReLU) and module.num_parameters == 1
        ):
            return self._passthrough(node)
        if isinstance(module, nn.Flatten):
            return self._reshape(node, free_only=True)
        return self._opaque(node, "the channel analysis does not know this layer")

    def _conv(self, node: fx.Node, name: str, conv: Any) -> _Chan | None:
        single = self._single(node)
        batched = len(conv.kernel_size) + 2  # [N, C, *spatial]; unbatched input has no dim N
        if conv.transposed:
            return self._opaque(node, "a transposed convolution")
        if single is None or len(single[2]) != batched:
            return self._opaque(node, f"a convolution whose input is not {batched}-D")
        chan = single[1]
        if chan.dims != (1,):
            return self._opaque(node, "a convolution whose input channels are not in dim 1")
        handler = find_handler(conv)
        role = "in" if conv.groups == 1 else "through"
        problem = handler.problem(conv, role) if handler is not None else None
        if problem is not None and (conv.groups == 1 or conv.in_channels == conv.out_channels):
            self._opaque(node, problem)  # its inputs stay; it still creates new channels
            return self._created(node, name, 1) if conv.groups == 1 else _Frozen(problem)
        if conv.groups == 1:
            self._record(name, "in", chan)
            return self._created(node, name, 1)
        if conv.in_channels == conv.out_channels:  # depthwise or grouped: inputs = outputs
            self._record(name, "through", chan)
            if conv.groups < conv.in_channels:
                self.blocks.append(
                    Blocks(f"grouped convolution {name!r}", chan.elems.reshape(-1), conv.groups)
                )
            return chan
        return self._opaque(
            node,
            f"grouped convolution (groups={conv.groups}) from {conv.in_channels} to "
            f"{conv.out_channels} channels",
        )

    def _created(self, node: fx.Node, name: str, dim: int) -> _Chan | None:
        chan = self._fresh(node, dim)
        if chan is not None:
            self._record(name, "out", chan)
        return chan

    def _registered(
        self, node: fx.Node, name: str, module: nn.Module, handler: LayerHandler
    ) -> _Chan | None:
        single = self._single(node)
        if single is None:
            return self._opaque(node, "a layer whose input carries no channels")
        _, chan, shape = single
        dim = handler.channel_dim % len(shape)
        role: Role = "through" if handler.channelwise else "in"
        problem = handler.problem(module, role)
        if problem is not None:
            return self._opaque(node, problem)
        if chan.dims != (dim,) or chan.elems.size != handler.in_channels(module):
            return self._opaque(node, f"its input's channels are not in dimension {dim}")
        self._record(name, role, chan)
        if handler.channelwise:
            return self._passthrough(node)
        return self._created(node, name, handler.channel_dim)

    def _heads(self, node: fx.Node, name: str, handler: LayerHandler) -> _Frozen | None:
        """An attention layer: its heads are a group; its embedding width stays frozen."""
        why = (
            f"{_describe(node, self.modules)}: attention keeps its embedding width "
            "(advkit prunes its whole heads instead)"
        )
        self._freeze_inputs(node, why)
        self.opaque.append(why)
        module = self.modules[name]
        problem = handler.problem(module, "out")
        heads = self.elements.new((handler.out_channels(module),), frozen=problem or "")
        self.uses.append(RawUse(name, "out", heads))
        return _Frozen(why) if "tensor_meta" in node.meta else None

    def _param_view(self, node: fx.Node) -> _Param | None:
        """A view of a parameter that only adds, drops or broadcasts dimensions of size 1 (or
        acts on each entry, like ``sigmoid``): the parameter, with the view's dimensions."""
        refs = [
            self.refs.get(n)
            for n in node.all_input_nodes
            if _shape(n) is not None or isinstance(self.refs.get(n), _Param)
        ]
        if len(refs) != 1 or not isinstance(refs[0], _Param):
            return None
        ref, out = refs[0], _shape(node)
        if node.target in ("view", "reshape", "expand", torch.reshape):
            sizes = [
                a
                for arg in node.args[1:]
                for a in (arg if isinstance(arg, tuple | list) else [arg])
            ]
            if any(isinstance(a, int) and a not in (-1, 1) for a in sizes):
                return None  # a size written in the code would not follow the pruning
        before = _param_shape(self.model, ref)
        if out is None or before is None:
            return None
        mapping = _view_dims(before, out)
        if mapping is None:
            return None
        dims = tuple(-1 if m < 0 else _param_dim(ref, m) for m in mapping)
        return _Param(ref.name, shape=out, dims=dims)

    # -- functions ------------------------------------------------------------------------

    def _function(self, node: fx.Node) -> Any:
        target, method = node.target, node.op == "call_method"
        if (method and target in CHANNELWISE_METHODS) or (
            not method and target in CHANNELWISE_FUNCTIONS
        ):
            return self._passthrough(node)
        if (method and target in ELEMENTWISE_METHODS) or (
            not method and target in ELEMENTWISE_FUNCTIONS
        ):
            return self._elementwise(node)
        if (method and target in RESHAPE_METHODS) or (not method and target in RESHAPE_FUNCTIONS):
            return self._reshape(node, free_only=target in ("flatten", torch.flatten))
        if target in (
            operator.pow,
            torch.pow,
            "pow",
            "square",
            torch.square,
            "sqrt",
            torch.sqrt,
            "rsqrt",
            torch.rsqrt,
            "exp",
            torch.exp,
        ):
            return self._passthrough(node)  # x ** 2 (StarReLU), with a constant exponent
        handlers: dict[Any, Callable[[fx.Node], Any]] = {
            "reshape_as": self._reshape_as,
            "unbind": self._unbind,
            torch.unbind: self._unbind,
            **dict.fromkeys(PERMUTES, self._permute),
            **dict.fromkeys(CAT, self._cat),
            **dict.fromkeys(SPLITS, self._split),
            **dict.fromkeys(REDUCTIONS, self._reduction),
            torch.nn.functional.layer_norm: self._layer_norm,
        }
        handler = handlers.get(target)
        if handler is not None:
            return handler(node)
        return self._opaque(node, "the channel analysis does not know this operation")

    def _reshape_as(self, node: fx.Node) -> _Chan | None:
        """``y.reshape_as(x)`` back to the layout of a tensor with the same channels in the same
        (last) dimension (LeViT's ``bn(x.flatten(0, 1)).reshape_as(x)``)."""
        source, other = node.args[0], node.args[1]
        chan, target = self._chan(source), self._chan(other)
        shape, out = _shape(source), _shape(node)
        if (
            chan is None or target is None or shape is None or out is None
            or chan.dims != (len(shape) - 1,) or target.dims != (len(out) - 1,)
            or chan.elems.shape != target.elems.shape
        ):  # fmt: skip
            return self._opaque(node, "reshape_as to a layout whose channels lie differently")
        self.elements.union(chan.elems, target.elems)
        return _Chan(target.dims, chan.elems)

    def _unbind(self, node: fx.Node) -> list[Any] | None:
        """Unbinding a dimension that holds no channels: every piece keeps the channels."""
        single = self._single(node)
        shape = _shape(single[0]) if single else None
        dim = _arg(node, 1, "dim", 0)
        if single is None or shape is None or not isinstance(dim, int):
            self._opaque(node, "unbind of an unexpected input")
            return None
        chan, dim = single[1], dim % len(shape)
        if dim in chan.dims:
            self._opaque(node, "unbind along the channels")
            return None
        piece = _Chan(tuple(d - (d > dim) for d in chan.dims), chan.elems)
        return [piece] * shape[dim]

    def _elementwise(self, node: fx.Node) -> _Chan | None:
        """Operands holding the same channels are joined; operands constant along them are not."""
        out = _shape(node)
        if out is None or len(out) < 2:
            return self._opaque(node, "element-wise op without a channel dimension")
        carrying: list[tuple[tuple[int, ...], _Chan]] = []
        others: list[tuple[fx.Node, tuple[int, ...]]] = []
        for source in node.all_input_nodes:
            shape, ref = _shape(source), self.refs.get(source)
            if isinstance(ref, _Param):
                shape = _param_shape(self.model, ref)
            if shape is None:
                continue
            lead = len(out) - len(shape)  # broadcasting aligns dims on the right
            if isinstance(ref, _Chan):
                dims = tuple(d + lead for d in ref.dims)
                if all(shape[d] == out[d + lead] for d in ref.dims):
                    carrying.append((dims, ref))
                    continue
                if all(shape[d] == 1 for d in ref.dims):
                    why = f"{_describe(node, self.modules)}: broadcast across the channels"
                    self.elements.freeze(ref.elems, why)
                    continue
                return self._opaque(node, "element-wise op on tensors of different shapes")
            others.append((source, shape))
        if not carrying:
            frozen = [r for n in node.all_input_nodes if isinstance(r := self.refs.get(n), _Frozen)]
            return frozen[0] if frozen else None
        dims, first = carrying[0]
        if any(d != dims or c.elems.shape != first.elems.shape for d, c in carrying):
            return self._opaque(node, "element-wise op on tensors whose channels differ")
        for _, chan in carrying[1:]:
            self.elements.union(first.elems, chan.elems)
        for source, shape in others:
            lead = len(out) - len(shape)
            local = [d - lead for d in dims]
            if all(d < 0 or shape[d] == 1 for d in local):
                continue  # the same for every channel
            ref = self.refs.get(source)
            if isinstance(ref, _Param) and len(dims) == 1 and local[0] >= 0:
                if _param_dim(ref, local[0]) >= 0:
                    self._record(ref.name, "through", first, dim=_param_dim(ref, local[0]))
                continue  # else broadcast from size 1: the same for every channel
            if isinstance(ref, _Frozen):
                self._freeze_inputs(node, ref.reason)
                return ref
            return self._opaque(node, "element-wise op with a tensor the analysis cannot follow")
        return _Chan(dims, first.elems)

    # -- result ---------------------------------------------------------------------------

    def _join_reused_layers(self) -> None:
        """A layer called more than once ties every channel it creates or reads in one role."""
        seen: dict[tuple[str, Role], RawUse] = {}
        for use in self.uses:
            key = (use.module, use.role)
            if key not in seen:
                seen[key] = use
            elif seen[key].elements.shape == use.elements.shape:
                self.elements.union(seen[key].elements, use.elements)
            else:
                why = f"{use.module!r} reads differently shaped channels in two calls"
                self.elements.freeze(seen[key].elements, why)
                self.elements.freeze(use.elements, why)
        self.uses = list(seen.values())  # the first use of each layer and role
