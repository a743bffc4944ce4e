"""Channel gates: multiply a group's channels by a per-channel factor where they are read.

A group's channels reach the rest of the network only through the layers that read them (its
``"in"`` uses). Multiplying each such layer's input channel ``c`` by ``gate[c]`` is therefore
exactly pruning when the gate is 0 and the identity when it is 1: BatchNorm and depthwise layers
act on each channel on its own, and a residual sum joins the channels into one group whose
readers are all gated with the same tensor. Both the adversarial Taylor importance (the gradient
of the loss with respect to gates of value 1) and the learned scores (gates that are a top-k
mask) are built on this.

An attention layer's heads are a group with no reader (the embedding width stays): head ``h`` is
gated where it is made, by scaling its value rows (the handler's ``head_values``) with a
``torch.nn.utils.parametrize`` parametrization; attention is linear in the values, so the head's
output is scaled by the gate, and a gate of 0 is exactly the layer without the head.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.utils.hooks import RemovableHandle

from advkit.pruning.channels import ChannelUse
from advkit.pruning.registry import find_handler


def _gated_input(gate: Tensor, expansion: int, dim: int, inputs: Tensor) -> Tensor:
    """``inputs`` with channel ``c`` of dimension ``dim`` (features ``c * expansion ...`` when
    flattened) scaled by ``gate[c]``."""
    factor = gate.repeat_interleave(expansion) if expansion > 1 else gate
    shape = [1] * inputs.ndim
    shape[dim] = factor.shape[0]
    return inputs * factor.to(dtype=inputs.dtype).view(shape)


def install_gates(
    model: nn.Module, uses: Sequence[Sequence[ChannelUse]], gates: Sequence[object]
) -> list[RemovableHandle | ParametrizedRows]:
    """Scale the input channels of every reader of each group, and the heads of head groups.

    Args:
        model: The model whose layers are named in ``uses``.
        uses: For each group, its layer uses (the ``"in"`` ones are hooked; an ``"out"`` use of
            an attention layer gates its heads).
        gates: For each group, a ``[channels]`` tensor, or a callable returning one (called at
            every forward pass, for a gate that depends on trainable scores).

    Returns:
        Handles; call their ``remove()`` to take the gates out.

    Raises:
        ValueError: If one layer reads the channels of two groups.
    """
    handles: list[RemovableHandle | ParametrizedRows] = []
    seen: set[str] = set()
    try:
        for group_uses, gate in zip(uses, gates, strict=True):
            for use in group_uses:
                module = model.get_submodule(use.module)
                handler = find_handler(module)
                if use.role == "out" and handler is not None and handler.heads:
                    head_dim = handler.head_dim(module)
                    for owner, name, first in handler.head_values(module):
                        handles.append(
                            ParametrizedRows(owner, name, _RowGate(gate, first, head_dim))
                        )
                if use.role != "in":
                    continue
                if use.module in seen:
                    raise ValueError(f"layer {use.module!r} reads the channels of two groups")
                seen.add(use.module)
                dim = handler.channel_dim if handler is not None else 1  # -1: channels-last
                handles.append(module.register_forward_pre_hook(_hook(gate, use.expansion, dim)))
    except Exception:
        for handle in handles:
            handle.remove()
        raise
    return handles


def _gate_value(gate: object) -> Tensor:
    return gate() if callable(gate) else gate  # type: ignore[return-value]


class _RowGate(nn.Module):
    """Parametrization: rows ``first + h * dim ...`` (``dim`` of them) scaled by ``gate[h]``."""

    def __init__(self, gate: object, first: int, dim: int) -> None:
        super().__init__()
        self.gate, self.first, self.dim = gate, first, dim

    def forward(self, weight: Tensor) -> Tensor:
        factor = _gate_value(self.gate).to(weight.dtype).repeat_interleave(self.dim)
        after = weight.shape[0] - self.first - factor.shape[0]
        rows = torch.cat([weight.new_ones(self.first), factor, weight.new_ones(after)])
        return weight * rows.view([-1] + [1] * (weight.ndim - 1))


class ParametrizedRows:
    """``owner.name`` computed through ``gate`` until :meth:`remove` puts the parameter back."""

    def __init__(self, owner: nn.Module, name: str, gate: nn.Module) -> None:
        self.owner, self.name = owner, name
        parametrize.register_parametrization(owner, name, gate)

    def remove(self) -> None:
        """Restore the original parameter (the same object) and the owner's class."""
        if parametrize.is_parametrized(self.owner, self.name):
            parametrize.remove_parametrizations(self.owner, self.name, leave_parametrized=False)


def _hook(gate: object, expansion: int, dim: int) -> Callable[[nn.Module, tuple[object, ...]], Any]:
    def hook(module: nn.Module, args: tuple[object, ...]) -> tuple[object, ...] | None:
        if not args or not isinstance(args[0], Tensor):
            return None
        return (_gated_input(_gate_value(gate), expansion, dim, args[0]), *args[1:])

    return hook


@contextmanager
def gated(
    model: nn.Module, uses: Sequence[Sequence[ChannelUse]], gates: Sequence[Tensor]
) -> Iterator[None]:
    """Run the body with :func:`install_gates`'s hooks in place; they are removed after."""
    handles = install_gates(model, uses, gates)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
