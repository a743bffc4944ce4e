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


def _tensor_shape(model: nn.Module, name: str) -> tuple[int, ...] | None:
    owner, _, attr = name.rpartition(".")
    try:
        tensor = getattr(model.get_submodule(owner), attr)
    except AttributeError:
        return None
    return tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else None
