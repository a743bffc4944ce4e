"""What a pruning run will do, as plain data: which filters go, and what it saves.

A :class:`PruningPlan` is made by :meth:`advkit.pruning.Pruner.plan` and carried out by
:func:`advkit.pruning.apply_plan`. It holds names and indices only, never modules or tensors,
so it can be written to JSON, read back, and applied to another copy of the same model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from advkit.pruning.graph import ChannelUse

__all__ = ["GroupPlan", "PruningPlan"]

_FORMAT = "advkit.pruning_plan"
_VERSION = 2
_READABLE = (1, 2)  # version 1 plans have identity uses only


@dataclass(frozen=True)
class GroupPlan:
    """The channels kept in one group of coupled channels.

    Attributes:
        channels: Channels in the group before pruning.
        keep: Indices of the channels kept, increasing.
        uses: Every layer sliced, and how (see :class:`~advkit.pruning.graph.ChannelUse`).
    """

    channels: int
    keep: tuple[int, ...]
    uses: tuple[ChannelUse, ...]

    @property
    def layers(self) -> tuple[str, ...]:
        """The layers whose filters are removed."""
        return tuple(use.module for use in self.uses if use.role == "out")

    @property
    def removed(self) -> tuple[int, ...]:
        """Indices of the channels removed, increasing."""
        kept = set(self.keep)
        return tuple(i for i in range(self.channels) if i not in kept)


@dataclass(frozen=True)
class PruningPlan:
    """Which filters a pruning run removes, with parameters and FLOPs before and after.

    FLOPs are multiply-accumulates of conv and linear layers for one forward pass on the
    example inputs the plan was made with (see :func:`advkit.pruning.count_flops`).

    Attributes:
        ratio: Fraction of each group's channels removed (rounded, at least one kept).
        targets: The module-name patterns that selected the layers.
        input_shapes: Shapes of the example inputs.
        groups: One entry per group of coupled channels that is pruned.
        params_before: Parameter count of the model before pruning.
        params_after: Parameter count after pruning.
        flops_before: FLOPs on the example inputs before pruning.
        flops_after: FLOPs on the example inputs after pruning.
        skipped: ``(layer, reason)`` for every matched layer left alone (only when the pruner
            is not strict).
    """

    ratio: float
    targets: tuple[str, ...]
    input_shapes: tuple[tuple[int, ...], ...]
    groups: tuple[GroupPlan, ...]
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    skipped: tuple[tuple[str, str], ...] = field(default=())

    def kept_filters(self) -> dict[str, int]:
        """Filters kept per pruned layer, e.g. ``{"backbone.layer4.0.conv1": 410, ...}``."""
        return {layer: len(group.keep) for group in self.groups for layer in group.layers}

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-compatible built-in types."""
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "ratio": self.ratio,
            "targets": list(self.targets),
            "input_shapes": [list(shape) for shape in self.input_shapes],
            "groups": [
                {
                    "channels": group.channels,
                    "keep": list(group.keep),
                    "uses": [_use_to_dict(u) for u in group.uses],
                }
                for group in self.groups
            ],
            "params_before": self.params_before,
            "params_after": self.params_after,
            "flops_before": self.flops_before,
            "flops_after": self.flops_after,
            "skipped": [list(pair) for pair in self.skipped],
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """The plan as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PruningPlan:
        """Rebuild a plan from :meth:`to_dict`'s output.

        Raises:
            ValueError: If ``data`` is not a plan of this format and version, or a field is
                missing or of the wrong type.
        """
        if not isinstance(data, Mapping) or data.get("format") != _FORMAT:
            raise ValueError(f"expected a mapping with format {_FORMAT!r}, got {_brief(data)}")
        if data.get("version") not in _READABLE:
            raise ValueError(
                f"expected plan version {' or '.join(map(str, _READABLE))}, "
                f"got {data.get('version')!r}"
            )
        try:
            groups = tuple(
                GroupPlan(
                    channels=_int(group["channels"]),
                    keep=tuple(_int(i) for i in group["keep"]),
                    uses=tuple(_use_from_dict(u) for u in group["uses"]),
                )
                for group in data["groups"]
            )
            for group in groups:
                for use in group.uses:
                    if use.role not in ("out", "through", "in"):
                        raise ValueError(f"unknown role {use.role!r} of {use.module!r}")
            return cls(
                ratio=float(data["ratio"]),
                targets=tuple(str(t) for t in data["targets"]),
                input_shapes=tuple(tuple(_int(d) for d in s) for s in data["input_shapes"]),
                groups=groups,
                params_before=_int(data["params_before"]),
                params_after=_int(data["params_after"]),
                flops_before=_int(data["flops_before"]),
                flops_after=_int(data["flops_after"]),
                skipped=tuple((str(name), str(why)) for name, why in data["skipped"]),
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed pruning plan: {type(err).__name__}: {err}") from err

    @classmethod
    def from_json(cls, text: str) -> PruningPlan:
        """Rebuild a plan from :meth:`to_json`'s output.

        Raises:
            ValueError: If ``text`` is not valid JSON or not a plan.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"a pruning plan must be valid JSON: {err}") from err
        return cls.from_dict(data)

    def summary(self) -> str:
        """A readable table: filters per layer, then parameters and FLOPs before and after."""
        width = max([len("layer"), *(len(name) for name in self.kept_filters())])
        lines = [
            f"Pruning plan: ratio {self.ratio:g}, targets {', '.join(self.targets)}",
            f"group  {'layer':<{width}}  filters  kept  removed",
        ]
        for index, group in enumerate(self.groups, start=1):
            for layer in group.layers:
                lines.append(
                    f"{index:>5}  {layer:<{width}}  {group.channels:>7}  {len(group.keep):>4}"
                    f"  {len(group.removed):>7}"
                )
        shapes = " ".join(str(list(shape)) for shape in self.input_shapes)
        lines.append(_change("parameters", self.params_before, self.params_after))
        lines.append(_change(f"FLOPs at {shapes}", self.flops_before, self.flops_after))
        lines.extend(f"skipped {name}: {why}" for name, why in self.skipped)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _use_to_dict(use: ChannelUse) -> dict[str, Any]:
    data: dict[str, Any] = {"module": use.module, "role": use.role, "expansion": use.expansion}
    if use.offset:
        data["offset"] = use.offset
    if use.index is not None:
        data["index"] = list(use.index)
    if use.length is not None:
        data["length"] = use.length
    if use.dim:
        data["dim"] = use.dim
    return data


def _use_from_dict(data: Mapping[str, Any]) -> ChannelUse:
    index = data.get("index")
    length = data.get("length")
    return ChannelUse(
        str(data["module"]),
        data["role"],
        _int(data["expansion"]),
        offset=_int(data.get("offset", 0)),
        index=None if index is None else tuple(_int(i) for i in index),
        length=None if length is None else _int(length),
        dim=_int(data.get("dim", 0)),
    )


def _change(label: str, before: int, after: int) -> str:
    percent = 100.0 * (after - before) / before if before else 0.0
    return f"{label}: {before:,} -> {after:,} ({percent:+.1f}%)"


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
