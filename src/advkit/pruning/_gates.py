"""Channel gates: multiply a group's channels by a per-channel factor where they are read.

A group's channels reach the rest of the network only through the layers that read them (its
``"in"`` uses). Multiplying each such layer's input channel ``c`` by ``gate[c]`` is therefore
exactly pruning when the gate is 0 and the identity when it is 1: BatchNorm and depthwise layers
act on each channel on its own, and a residual sum joins the channels into one group whose
readers are all gated with the same tensor. Both the adversarial Taylor importance (the gradient
of the loss with respect to gates of value 1) and the learned scores (gates that are a top-k
mask) are built on this.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from advkit.pruning.graph import ChannelUse


def _gated_input(gate: Tensor, expansion: int, inputs: Tensor) -> Tensor:
    """``inputs`` with channel ``c`` (features ``c * expansion ...`` when flattened) scaled."""
    factor = gate.repeat_interleave(expansion) if expansion > 1 else gate
    shape = [1, factor.shape[0]] + [1] * (inputs.ndim - 2)
    return inputs * factor.to(dtype=inputs.dtype).view(shape)


def install_gates(
    model: nn.Module, uses: Sequence[Sequence[ChannelUse]], gates: Sequence[object]
) -> list[RemovableHandle]:
    """Register forward pre-hooks scaling the input channels of every reader of each group.

    Args:
        model: The model whose layers are named in ``uses``.
        uses: For each group, its layer uses (only the ``"in"`` ones are hooked).
        gates: For each group, a ``[channels]`` tensor, or a callable returning one (called at
            every forward pass, for a gate that depends on trainable scores).

    Returns:
        The hook handles; remove them to take the gates out.

    Raises:
        ValueError: If one layer reads the channels of two groups.
    """
    handles: list[RemovableHandle] = []
    seen: set[str] = set()
    try:
        for group_uses, gate in zip(uses, gates, strict=True):
            for use in group_uses:
                if use.role != "in":
                    continue
                if use.module in seen:
                    raise ValueError(f"layer {use.module!r} reads the channels of two groups")
                seen.add(use.module)
                handles.append(
                    model.get_submodule(use.module).register_forward_pre_hook(
                        _hook(gate, use.expansion)
                    )
                )
    except Exception:
        for handle in handles:
            handle.remove()
        raise
    return handles


def _hook(gate: object, expansion: int) -> Callable[[nn.Module, tuple[object, ...]], Any]:
    def hook(module: nn.Module, args: tuple[object, ...]) -> tuple[object, ...] | None:
        if not args or not isinstance(args[0], Tensor):
            return None
        value = gate() if callable(gate) else gate
        return (_gated_input(value, expansion, args[0]), *args[1:])

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
