"""The fx pass behind :func:`advkit.pruning.analyze`: channel elements through every node.

Each tensor node gets a :class:`_Chan`: which of its dimensions hold channels, and the array of
channel elements along them (see :mod:`advkit.pruning._elements`). Anything the pass does not
follow freezes the elements it touches, with a reason naming the module or operation.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from advkit.pruning._elements import Blocks, Elements, RawUse, build_graph
from advkit.pruning._ops import (
    CAT,
    CHANNELWISE_FUNCTIONS,
    CHANNELWISE_METHODS,
    CHANNELWISE_MODULES,
    ELEMENTWISE_FUNCTIONS,
    ELEMENTWISE_METHODS,
    METADATA_ATTRS,
    METADATA_METHODS,
    PERMUTES,
    REDUCTIONS,
    RESHAPE_FUNCTIONS,
    RESHAPE_METHODS,
    SPLITS,
)
from advkit.pruning.graph import ChannelGraph, Role
from advkit.pruning.registry import LayerHandler, find_handler

_Conv = nn.modules.conv._ConvNd


@dataclass(frozen=True)
class _Chan:
    """Dimensions ``dims`` (increasing) of a tensor hold the channel elements ``elems``."""

    dims: tuple[int, ...]
    elems: np.ndarray


@dataclass(frozen=True)
class _Frozen:
    """A tensor (or tuple) made by something the pass did not follow: its channels are frozen,
    in whichever dimension they are."""

    reason: str


@dataclass(frozen=True)
class _Param:
    """A parameter or buffer read with ``get_attr``."""

    name: str


def _shape(node: Any) -> tuple[int, ...] | None:
    if not isinstance(node, fx.Node):
        return None
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)  # tuples of tensors have no single shape
    return tuple(shape) if isinstance(shape, torch.Size) else None


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"module {node.target!r} ({type(modules[str(node.target)]).__name__})"
    stack = node.meta.get("nn_module_stack") or {}
    inside = ""
    if stack:
        path, kind = list(stack.values())[-1]
        inside = f" in module {path!r} ({getattr(kind, '__name__', kind)})"
    if node.op == "call_method":
        return f"method .{node.target}() at node {node.name!r}{inside}"
    if node.op == "call_function":
        name = getattr(node.target, "__name__", repr(node.target))
        return f"function {name}() at node {node.name!r}{inside}"
    return f"{node.op} {node.target!r}"


def _arg(node: fx.Node, position: int, name: str, default: Any = None) -> Any:
    if len(node.args) > position:
        return node.args[position]
    return node.kwargs.get(name, default)


class ChannelPass:
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

    def _single(self, node: fx.Node) -> tuple[fx.Node, _Chan] | None:
        """The one tensor input, if it carries channels and is the only tensor input
        (parameters read with ``get_attr`` aside)."""
        tensors = [
            n
            for n in node.all_input_nodes
            if _shape(n) is not None and not isinstance(self.refs.get(n), _Param)
        ]
        if len(tensors) != 1 or self._chan(tensors[0]) is None:
            return None
        return tensors[0], self._chan(tensors[0])  # type: ignore[return-value]

    def _passthrough(self, node: fx.Node) -> _Chan | None:
        """The output keeps its input's channels when the channel dims keep their sizes."""
        single = self._single(node)
        out = _shape(node)
        if single is None or out is None:
            return self._opaque(node, "a channel-wise op with unexpected inputs or output shape")
        source, chan = single
        shape = _shape(source)
        if shape is None or len(shape) != len(out) or out[0] != shape[0]:
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
        if node.op == "call_method" and node.target in METADATA_METHODS:
            return None
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
        if isinstance(module, nn.PReLU) and module.num_parameters == 1:
            return self._passthrough(node)
        if isinstance(module, CHANNELWISE_MODULES):
            return self._passthrough(node)
        if isinstance(module, nn.Flatten):
            return self._reshape(node, free_only=True)
        return self._opaque(node, "the channel analysis does not know this layer")

    def _conv(self, node: fx.Node, name: str, conv: Any) -> _Chan | None:
        single = self._single(node)
        shape = _shape(single[0]) if single else None
        batched = len(conv.kernel_size) + 2  # [N, C, *spatial]; unbatched input has no dim N
        if conv.transposed:
            return self._opaque(node, "a transposed convolution")
        if single is None or shape is None or len(shape) != batched:
            return self._opaque(node, f"a convolution whose input is not {batched}-D")
        if single[1].dims != (1,):
            return self._opaque(node, "a convolution whose input channels are not in dim 1")
        chan = single[1]
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
        shape = _shape(single[0]) if single else None
        if single is None or shape is None:
            return self._opaque(node, "a layer whose input carries no channels")
        chan = single[1]
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
        handlers: dict[Any, Callable[[fx.Node], Any]] = {
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
                shape = _tensor_shape(self.model, ref.name)
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
                self._record(ref.name, "through", first, dim=local[0])
                continue
            if isinstance(ref, _Frozen):
                self._freeze_inputs(node, ref.reason)
                return ref
            return self._opaque(node, "element-wise op with a tensor the analysis cannot follow")
        return _Chan(dims, first.elems)

    def _reshape(self, node: fx.Node, *, free_only: bool = False) -> _Chan | None:
        single = self._single(node)
        out = _shape(node)
        if single is None or out is None:
            return self._opaque(node, "a reshape of an unexpected input")
        source, chan = single
        shape = _shape(source)
        assert shape is not None
        a, b = chan.dims[0], chan.dims[-1] + 1
        if chan.dims != tuple(range(a, b)):
            return self._opaque(node, "a reshape of channels spread over non-adjacent dims")
        sizes = list(node.args[1:]) if node.op == "call_method" else list(node.args[1:2])
        if len(sizes) == 1 and isinstance(sizes[0], list | tuple):
            sizes = list(sizes[0])
        literal = [not free_only and isinstance(s, int) and s != -1 for s in sizes]
        literal += [False] * (len(out) - len(literal))
        prefix = math.prod(shape[:a])
        starts = [i for i in range(len(out)) if math.prod(out[:i]) == prefix]
        if not starts:
            return self._opaque(node, f"reshape from {list(shape)} to {list(out)}")
        start = min(starts, key=lambda i: abs(i - a))
        block = math.prod(shape[a:b])
        stop = next(
            (j for j in range(start + 1, len(out) + 1) if math.prod(out[start:j]) == block), None
        )
        if stop is not None:
            elems = chan.elems.reshape(out[start:stop])
            free = [i for i in range(start, stop) if not literal[i]]
            if len(free) > 1:
                free = [i for i in free if out[i] > 1]
            if len(free) != 1:
                reason = (
                    "reshape to a fixed channel count"
                    if not free
                    else "reshape splits the channels over several free dimensions"
                )
                return self._opaque(node, reason)
            axis = free[0] - start
            grid = np.moveaxis(elems, axis, -1).reshape(-1, out[free[0]])
            for row in grid[1:]:
                self.elements.union(grid[0], row)
            return _Chan(tuple(range(start, stop)), elems)
        # The channels merge with following dims into one: each feeds several positions.
        for k in range(b + 1, len(shape) + 1):
            if math.prod(shape[a:k]) == out[start]:
                if literal[start]:
                    return self._opaque(node, "reshape to a fixed channel count")
                extra = shape[b:k]
                tiled = np.broadcast_to(
                    chan.elems.reshape(chan.elems.shape + (1,) * len(extra)),
                    chan.elems.shape + tuple(extra),
                )
                return _Chan((start,), tiled.reshape(-1))
        return self._opaque(node, f"reshape from {list(shape)} to {list(out)}")

    def _permute(self, node: fx.Node) -> _Chan | None:
        single = self._single(node)
        out = _shape(node)
        if single is None or out is None:
            return self._opaque(node, "a permute of an unexpected input")
        chan, n = single[1], len(out)
        if node.target in ("transpose", torch.transpose, "swapaxes"):
            d0, d1 = (int(d) % n for d in node.args[1:3])
            perm = list(range(n))
            perm[d0], perm[d1] = perm[d1], perm[d0]
        else:
            dims = node.args[1:] if node.op == "call_method" else node.args[1:2]
            if len(dims) == 1 and isinstance(dims[0], list | tuple):
                dims = tuple(dims[0])
            perm = [int(d) % n for d in dims]
        new_dims = [j for j in range(n) if perm[j] in chan.dims]
        order = [chan.dims.index(perm[j]) for j in new_dims]
        return _Chan(tuple(new_dims), chan.elems.transpose(order))

    def _cat(self, node: fx.Node) -> _Chan | None:
        tensors = _arg(node, 0, "tensors")
        out = _shape(node)
        if not isinstance(tensors, list | tuple) or out is None:
            return self._opaque(node, "concatenation of an unexpected input")
        dim = int(_arg(node, 1, "dim", 0)) % len(out)
        chans = [self._chan(t) for t in tensors]
        if any(c is None for c in chans):
            return self._opaque(node, "concatenates a tensor whose channels are not followed")
        chans_ = [c for c in chans if c is not None]
        if all(c.dims == (dim,) for c in chans_):
            return _Chan((dim,), np.concatenate([c.elems for c in chans_]))
        first = chans_[0]
        if dim in first.dims or any(
            c.dims != first.dims or c.elems.shape != first.elems.shape for c in chans_
        ):
            return self._opaque(node, "concatenates tensors whose channels lie differently")
        for chan in chans_[1:]:
            self.elements.union(first.elems, chan.elems)
        return first

    def _split(self, node: fx.Node) -> list[Any] | None:
        single = self._single(node)
        metas = node.meta.get("tensor_meta")
        if single is None or not isinstance(metas, list | tuple):
            self._opaque(node, "a split of an unexpected input")
            return None
        source, chan = single
        shape = _shape(source)
        assert shape is not None
        dim = int(_arg(node, 2, "dim", 0)) % len(shape)
        if dim in chan.dims and node.target not in ("chunk", torch.chunk):
            sizes = _arg(node, 1, "split_size_or_sections")
            if not isinstance(sizes, fx.Node):
                self._opaque(node, "a split into fixed channel counts")
                return None
        if chan.dims == (dim,):  # the pieces keep equal sizes after pruning
            self.blocks.append(Blocks(_describe(node, self.modules), chan.elems, len(metas)))
        pieces: list[Any] = []
        start = 0
        for meta in metas:
            size = tuple(meta.shape)[dim]
            if chan.dims == (dim,):
                pieces.append(_Chan((dim,), chan.elems[start : start + size]))
            elif dim in chan.dims:
                self._opaque(node, "a split of channels spread over several dims")
                return None
            else:
                pieces.append(chan)
            start += size
        return pieces

    def _getitem(self, node: fx.Node) -> Any:
        source, index = node.args[0], node.args[1]
        ref = self.refs.get(source) if isinstance(source, fx.Node) else None
        if isinstance(ref, list):
            return ref[index] if isinstance(index, int) else None
        if not isinstance(ref, _Chan):
            return (
                None
                if ref is None or _shape(node) is None
                else self._opaque(node, "indexing a tensor the analysis does not follow")
            )
        chan, shape = ref, _shape(source)
        assert shape is not None
        items = list(index) if isinstance(index, tuple) else [index]
        if sum(item is Ellipsis for item in items) > 1:
            return self._opaque(node, "indexing with several ellipses")
        consumed = sum(1 for i in items if i is not None and i is not Ellipsis)
        expanded: list[Any] = []
        for item in items:
            expanded += [slice(None)] * (len(shape) - consumed) if item is Ellipsis else [item]
        expanded += [slice(None)] * (len(shape) - sum(i is not None for i in expanded))
        in_dim, out_dim, new_dims, elems = 0, 0, [], chan.elems
        for item in expanded:
            if item is None:
                out_dim += 1
                continue
            if isinstance(item, int) and in_dim not in chan.dims:
                in_dim += 1
                continue
            if not isinstance(item, slice):
                return self._opaque(node, "indexing that selects single channels")
            if in_dim in chan.dims:
                axis = chan.dims.index(in_dim)
                elems = np.moveaxis(np.moveaxis(elems, axis, 0)[item], 0, axis)
                new_dims.append(out_dim)
            in_dim += 1
            out_dim += 1
        return _Chan(tuple(new_dims), elems)

    def _reduction(self, node: fx.Node) -> _Chan | None:
        single = self._single(node)
        dims = _arg(node, 1, "dim")
        keepdim = bool(_arg(node, 2, "keepdim", False))
        if single is None:
            return self._opaque(node, "a reduction of an unexpected input")
        source, chan = single
        shape = _shape(source)
        assert shape is not None
        dims = (dims,) if isinstance(dims, int) else dims
        if not isinstance(dims, list | tuple) or not dims:
            return self._opaque(node, "a reduction over all dimensions")
        reduced = {int(d) % len(shape) for d in dims}
        if reduced & set(chan.dims) or 0 in reduced:
            return self._opaque(node, "a reduction over the channel or batch dimension")
        if keepdim:
            return chan
        return _Chan(tuple(d - sum(r < d for r in reduced) for d in chan.dims), chan.elems)

    def _layer_norm(self, node: fx.Node) -> _Chan | None:
        single = self._single(node)
        normalized = _arg(node, 1, "normalized_shape")
        if single is None:
            return self._opaque(node, "layer norm of an unexpected input")
        source, chan = single
        shape = _shape(source)
        assert shape is not None
        if chan.dims != (len(shape) - 1,) or list(normalized or ()) != [chan.elems.size]:
            return self._opaque(node, "layer norm over more than the channel dimension")
        owners = set()
        for position, name in ((2, "weight"), (3, "bias")):
            ref = self.refs.get(_arg(node, position, name))
            if isinstance(ref, _Param):
                owner, _, _ = ref.name.rpartition(".")
                if isinstance(self.modules.get(owner), nn.LayerNorm):
                    owners.add(owner)
                else:
                    self._record(ref.name, "through", chan)
        for owner in owners:
            self._record(owner, "through", chan)
        return chan

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
        deduped: dict[tuple[str, Role], RawUse] = {}
        for use in self.uses:
            deduped.setdefault((use.module, use.role), use)
        self.uses = list(deduped.values())


def _tensor_shape(model: nn.Module, name: str) -> tuple[int, ...] | None:
    owner, _, attr = name.rpartition(".")
    try:
        tensor = getattr(model.get_submodule(owner), attr)
    except AttributeError:
        return None
    return tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else None
