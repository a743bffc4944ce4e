"""Shapes of every node of a traced graph, from one run of the model on example inputs.

Like :class:`torch.fx.passes.shape_prop.ShapeProp`, but it runs the graph on the model itself
instead of on a ``GraphModule`` (whose Python code generation costs more than the pass on
large models) and records only what the channel pass reads: ``node.meta["tensor_meta"]`` with
a ``shape`` (a tuple or list of them for a node returning several tensors), absent for a node
returning no tensor.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import fx


class TensorShape(NamedTuple):
    """The part of a tensor's metadata the channel pass uses."""

    shape: torch.Size


class ShapeRecorder(fx.Interpreter):
    """Run ``graph`` on ``model``, recording each node's output shapes in its ``meta``."""

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        found = False

        def shape_of(value: Any) -> Any:
            nonlocal found
            if isinstance(value, torch.Tensor):
                found = True
                return TensorShape(value.shape)
            return value

        meta = fx.node.map_aggregate(result, shape_of)
        if found:
            n.meta["tensor_meta"] = meta
        return result
