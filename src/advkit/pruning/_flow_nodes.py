"""The values the channel pass gives fx nodes, and small helpers to read nodes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import fx, nn


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
    """A parameter or buffer read with ``get_attr``, or a view of one (ConvNeXt's
    ``gamma.reshape(1, -1, 1, 1)``, ViT's ``cls_token.expand(B, -1, -1)``).

    Attributes:
        name: The parameter's qualified name.
        shape: The view's shape (``None``: the parameter itself).
        dims: For each dimension of the view, the parameter's dimension it runs along, or
            ``-1`` for a dimension the view added or broadcast.
    """

    name: str
    shape: tuple[int, ...] | None = None
    dims: tuple[int, ...] | None = None


def _param_shape(model: nn.Module, ref: _Param) -> tuple[int, ...] | None:
    """The shape of the tensor ``ref`` stands for."""
    return ref.shape if ref.shape is not None else _tensor_shape(model, ref.name)


def _param_dim(ref: _Param, dim: int) -> int:
    """The parameter's dimension along the view's dimension ``dim`` (``-1``: none)."""
    return dim if ref.dims is None else ref.dims[dim]


def _view_dims(before: tuple[int, ...], after: tuple[int, ...]) -> tuple[int, ...] | None:
    """How the dimensions of a view ``after`` of a tensor of shape ``before`` map back, when
    the view only adds, drops or broadcasts dimensions of size 1: the dimension of ``before``
    each dimension of ``after`` runs along (``-1`` for a new one), else ``None``."""
    if len(after) >= len(before):  # broadcasting aligns on the right (expand)
        lead = len(after) - len(before)
        if all(b in (1, a) for b, a in zip(before, after[lead:], strict=True)):
            return tuple(
                -1 if j < lead or before[j - lead] != after[j] else j - lead
                for j in range(len(after))
            )
    real_b = [d for d in range(len(before)) if before[d] != 1]
    real_a = [d for d in range(len(after)) if after[d] != 1]
    if [before[d] for d in real_b] != [after[d] for d in real_a]:
        return None
    dims = [-1] * len(after)
    for b, a in zip(real_b, real_a, strict=True):
        dims[a] = b
    return tuple(dims)


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


def _tensor_shape(model: nn.Module, name: str) -> tuple[int, ...] | None:
    owner, _, attr = name.rpartition(".")
    try:
        tensor = getattr(model.get_submodule(owner), attr)
    except AttributeError:
        return None
    return tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else None
