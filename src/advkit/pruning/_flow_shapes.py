"""The channel pass's rules for operations that move channels between dimensions or tensors:
reshape/view/flatten, permute, concatenation, split/chunk and indexing, reductions and
LayerNorm over channels. :class:`~advkit.pruning._flow.ChannelPass` inherits them."""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from advkit.pruning._elements import Blocks, Elements, RawUse
from advkit.pruning._flow_nodes import (
    _arg,
    _Chan,
    _describe,
    _Param,
    _param_dim,
    _param_shape,
    _shape,
)

_FIXED = object()  # a size that stays the same when channels are pruned


def _size_source(node: fx.Node) -> tuple[fx.Node | None, int]:
    """The tensor and dimension a size comes from: ``x.shape[d]``, ``x.size(d)``,
    ``x.size()[d]`` (``(None, 0)`` for anything else)."""
    if node.op == "call_method" and node.target == "size" and len(node.args) == 2:
        tensor, dim = node.args
        if isinstance(tensor, fx.Node) and isinstance(dim, int):
            return tensor, dim
    if node.op == "call_function" and node.target is operator.getitem:
        parent, dim = node.args
        if isinstance(parent, fx.Node) and isinstance(dim, int):
            is_shape = (
                parent.op == "call_function"
                and parent.target is getattr
                and parent.args[1] == "shape"
            ) or (parent.op == "call_method" and parent.target == "size" and len(parent.args) == 1)
            if is_shape and isinstance(parent.args[0], fx.Node):
                return parent.args[0], dim
    return None, 0


def _covers(item: slice, size: int) -> bool:
    """Whether a slice keeps a whole dimension of ``size``, or has bounds computed at run time
    (``x[:, :c]`` with ``c`` read from a shape), which follow the pruning."""
    bounds = (item.start, item.stop, item.step)
    if any(isinstance(b, fx.Node) for b in bounds):
        return True
    return (
        item.start in (None, 0)
        and (item.stop is None or item.stop >= size)
        and (item.step in (None, 1))
    )


class ShapeRules:
    """Channel rules for shape and layout operations; mixed into ``ChannelPass``, which
    provides the state below and ``_chan``, ``_single``, ``_opaque`` and ``_record``."""

    model: nn.Module
    modules: dict[str, nn.Module]
    elements: Elements
    refs: dict[fx.Node, Any]
    uses: list[RawUse]
    blocks: list[Blocks]

    def _reshape(self, node: fx.Node, *, free_only: bool = False) -> _Chan | None:
        single = self._single(node)
        out = _shape(node)
        if single is None or out is None:
            return self._opaque(node, "a reshape of an unexpected input")
        source, chan, shape = single
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
            tied: dict[int, np.ndarray] = {}
            for i in range(start, min(stop, len(sizes))):
                tie = self._size_of(sizes[i], source)
                if tie is _FIXED:
                    literal[i] = True
                elif tie is not None:
                    tied[i] = tie
            free = [i for i in range(start, stop) if not literal[i]]
            if len(free) > 1:
                free = [i for i in free if out[i] > 1]
            if not free:
                return self._opaque(node, "reshape to a fixed channel count")
            if len(free) > 1:
                return self._opaque(
                    node, "reshape splits the channels over several free dimensions"
                )
            axis = free[0] - start
            grid = np.moveaxis(elems, axis, -1).reshape(-1, out[free[0]])
            for row in grid[1:]:
                self.elements.union(grid[0], row)
            other = tied.get(free[0])
            if other is not None and other.shape == grid[0].shape:
                # The size is read from another tensor's channels (pvt_v2's
                # ``sr(x).reshape(B, C, -1)`` with ``C`` from ``x``): keep the counts equal.
                self.elements.union(grid[0], other)
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

    def _size_of(self, size: Any, source: fx.Node) -> Any:
        """Where a reshape's size argument comes from: ``_FIXED`` if it is a dimension of a
        tensor that pruning does not change, the channel elements of another tensor if it is
        that tensor's channel count, else ``None`` (a literal, or not known)."""
        if not isinstance(size, fx.Node):
            return None
        tensor, dim = _size_source(size)
        if tensor is None or tensor is source:
            return None
        chan = self._chan(tensor)
        shape = _shape(tensor)
        if chan is None or shape is None:
            return None
        dim %= len(shape)
        if dim not in chan.dims:
            return _FIXED
        return chan.elems if chan.dims == (dim,) else None

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
        params = [
            (t, ref)
            for t, c in zip(tensors, chans, strict=True)
            if c is None and isinstance(ref := self.refs.get(t), _Param)
        ]
        if any(c is None for c in chans) and len(params) == sum(c is None for c in chans):
            return self._cat_params(node, dim, [c for c in chans if c is not None], params)
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

    def _cat_params(
        self, node: fx.Node, dim: int, chans: list[_Chan], params: list[tuple[Any, _Param]]
    ) -> _Chan | None:
        """Tokens concatenated with parameters along a dimension that holds no channels (ViT's
        class token): each parameter's entries along the channels are sliced with them."""
        if not chans or dim in chans[0].dims or len(chans[0].dims) != 1:
            return self._opaque(node, "concatenates a parameter along the channels")
        first = chans[0]
        for chan in chans[1:]:
            if chan.dims != first.dims or chan.elems.shape != first.elems.shape:
                return self._opaque(node, "concatenates tensors whose channels lie differently")
            self.elements.union(first.elems, chan.elems)
        channel_dim = first.dims[0]
        for _, ref in params:
            shape = _param_shape(self.model, ref)
            lead = len(_shape(node) or ()) - len(shape or ())
            local = channel_dim - lead
            if shape is None or local < 0 or _param_dim(ref, local) < 0:
                return self._opaque(node, "concatenates a parameter whose channels lie elsewhere")
            self._record(ref.name, "through", first, dim=_param_dim(ref, local))
        return first

    def _split(self, node: fx.Node) -> list[Any] | None:
        single = self._single(node)
        metas = node.meta.get("tensor_meta")
        if single is None or not isinstance(metas, list | tuple):
            self._opaque(node, "a split of an unexpected input")
            return None
        _, chan, shape = single
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
            if ref is None or _shape(node) is None:
                return None
            return self._opaque(node, "indexing a tensor the analysis does not follow")
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
                if not _covers(item, shape[in_dim]):
                    return self._opaque(
                        node,
                        "slices the channels at a fixed position, which pruning would not move",
                    )
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
        _, chan, shape = single
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
        _, chan, shape = single
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
