"""The result of the channel analysis: groups of coupled channels and each layer's use of them.

:func:`~advkit.pruning.analyze` (in :mod:`advkit.pruning.graph`) builds them; the plan, the
importances and the slicing read them. A module of its own so that the pass that builds the
groups (``_flow``) and :mod:`advkit.pruning.graph`, which runs the pass, both import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

__all__ = ["ChannelGraph", "ChannelGroup", "ChannelUse", "Role"]

Role = Literal["out", "through", "in"]
"""How a layer touches a group's channels: ``"out"`` creates them (filters, dim 0 of the weight),
``"through"`` acts on each separately (BatchNorm, depthwise conv), ``"in"`` reads them (dim 1)."""


@dataclass(frozen=True)
class ChannelUse:
    """One layer's use of a group's channels.

    The layer's channel positions ``offset + k * expansion + j`` (``0 <= j < expansion``)
    hold the group's channel ``index[k]``, for ``k`` below ``len(index)``; without an ``index``
    they hold channel ``k`` for ``k`` below ``length`` (or all the group's channels). A layer
    whose channels come from several groups (a convolution after a concatenation) has one use
    in each, at different offsets.

    Attributes:
        module: Qualified name of the layer (as in ``model.named_modules()``), or of a
            parameter used directly (ConvNeXt's ``layer_scale``), sliced along ``dim``.
        role: ``"out"``, ``"through"`` or ``"in"`` (see :data:`Role`).
        expansion: Consecutive input features per channel; above 1 only for a linear layer that
            reads a flattened feature map (``H * W``).
        offset: First channel position of the layer covered by this use.
        index: The group's channel at each covered position, when not the identity.
        length: Number of positions covered by an identity map, when not the whole group.
        dim: The dimension sliced, for a parameter used directly.
    """

    module: str
    role: Role
    expansion: int = 1
    offset: int = 0
    index: tuple[int, ...] | None = None
    length: int | None = None
    dim: int = 0

    def units(self, channels: int) -> tuple[int, ...] | range:
        """The group's channel at each covered position (before the expansion)."""
        if self.index is not None:
            return self.index
        return range(channels if self.length is None else self.length)


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must be pruned together: every layer that creates, passes or reads them.

    A *channel* of a group is one unit of coupled channels: usually one filter of each
    producer and the matching channel of everything reading it; after a channel shuffle it may
    cover several positions of one layer.

    Attributes:
        channels: Number of channels (units) in the group.
        uses: Every layer use, in the order the forward pass reaches them.
        frozen: Why the group cannot be pruned; empty when it can.
        cells: For groups running through a grouped convolution, a cell id per channel: the
            pruner removes as many channels from every cell, so that each of the convolution's
            groups keeps the same width. Empty otherwise.
    """

    channels: int
    uses: tuple[ChannelUse, ...]
    frozen: tuple[str, ...] = ()
    cells: tuple[int, ...] = ()

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
    """The result of :func:`~advkit.pruning.analyze`: every group of coupled channels that some layer creates.

    Attributes:
        groups: The groups, in the order their first layer runs.
        opaque: One line per operation the pass did not understand (and so froze).
    """

    groups: tuple[ChannelGroup, ...]
    opaque: tuple[str, ...]

    def group_of(self, module: str) -> ChannelGroup | None:
        """The group whose channels ``module`` creates (or passes, for a depthwise conv)."""
        return self._owners.get(module)

    @cached_property
    def _owners(self) -> dict[str, ChannelGroup]:
        owners: dict[str, ChannelGroup] = {}
        for group in self.groups:
            for use in group.uses:
                if use.role != "in":
                    owners.setdefault(use.module, group)
        return owners
