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

from advkit._checks import brief
from advkit.pruning import _plan_fields as fields
from advkit.pruning.channels import ChannelUse

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
                missing, of the wrong type or out of range (named in the message): ``ratio``
                must be in ``[0, 1)``, ``targets`` a list of strings, counts integers >= 0
                (``params_after`` at most ``params_before``), sizes and indices at most
                ``2**24``, ``keep`` distinct indices below ``channels``, and every group
                must have an ``"out"`` use. Whether the plan fits a model is checked by
                :func:`~advkit.pruning.apply_plan`.
        """
        if not isinstance(data, Mapping) or data.get("format") != _FORMAT:
            raise ValueError(f"expected a mapping with format {_FORMAT!r}, got {brief(data, 80)}")
        if data.get("version") not in _READABLE:
            raise ValueError(
                f"expected plan version {' or '.join(map(str, _READABLE))}, "
                f"got {data.get('version')!r}"
            )
        groups = tuple(
            _group_from_dict(group, f"groups[{g}].")
            for g, group in enumerate(fields.sequence(fields.field(data, "groups"), "groups"))
        )
        skipped = _skipped_from_dict(fields.field(data, "skipped"))
        targets = fields.sequence(fields.field(data, "targets"), "targets")
        shapes = fields.sequence(fields.field(data, "input_shapes"), "input_shapes")
        counts = _counts_from_dict(data)
        return cls(
            ratio=fields.ratio(fields.field(data, "ratio")),
            targets=tuple(fields.text(t, f"targets[{i}]") for i, t in enumerate(targets)),
            input_shapes=tuple(
                tuple(
                    fields.integer(d, f"input_shapes[{i}][]", 1)
                    for d in fields.sequence(s, f"input_shapes[{i}]")
                )
                for i, s in enumerate(shapes)
            ),
            groups=groups,
            skipped=skipped,
            **counts,
        )

    @classmethod
    def from_json(cls, text: str) -> PruningPlan:
        """Rebuild a plan from :meth:`to_json`'s output.

        Raises:
            ValueError: If ``text`` is not valid JSON or not a plan.
        """
        if not isinstance(text, str | bytes):
            raise TypeError(f"a pruning plan must be a JSON string, got {type(text).__name__}")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"a pruning plan must be valid JSON: {err}") from err
        except ValueError as err:  # an integer of more digits than Python converts
            raise ValueError(
                f"a pruning plan's JSON holds a number too large to read: {err}"
            ) from None
        except RecursionError:
            raise ValueError("a pruning plan's JSON is nested too deeply") from None
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


def _group_from_dict(group: Any, where: str) -> GroupPlan:
    """The group ``group`` of a plan's dict, its fields named after ``where`` (``groups[0].``)."""
    channels = fields.integer(fields.field(group, "channels", where), where + "channels", 1)
    uses = tuple(
        _use_from_dict(use, f"{where}uses[{u}].")
        for u, use in enumerate(fields.sequence(fields.field(group, "uses", where), where + "uses"))
    )
    kept = fields.keep(fields.field(group, "keep", where), channels, where + "keep")
    if not any(use.role == "out" for use in uses):
        raise ValueError(
            f"pruning plan field {where}uses must hold an 'out' use (the layer whose "
            f"filters go), got {len(uses)} uses without one"
        )
    return GroupPlan(channels=channels, keep=kept, uses=uses)


def _use_from_dict(use: Any, at: str) -> ChannelUse:
    """The channel use ``use`` of a plan's dict, its fields named after ``at``."""
    role = fields.text(fields.field(use, "role", at), at + "role")
    if role not in ("out", "through", "in"):
        raise ValueError(
            f"pruning plan field {at}role must be 'out', 'through' or 'in', got {role!r}"
        )
    index, length = use.get("index"), use.get("length")
    return ChannelUse(
        fields.text(fields.field(use, "module", at), at + "module"),
        role,  # type: ignore[arg-type]
        fields.integer(fields.field(use, "expansion", at), at + "expansion", 1),
        # Version 2's index maps; a version 1 use has none (the identity).
        offset=fields.integer(use.get("offset", 0), at + "offset"),
        index=None
        if index is None
        else tuple(fields.integer(i, at + "index[]") for i in fields.sequence(index, at + "index")),
        length=None if length is None else fields.integer(length, at + "length", 1),
        dim=fields.integer(use.get("dim", 0), at + "dim"),
    )


def _skipped_from_dict(value: Any) -> tuple[tuple[str, str], ...]:
    """A plan dict's ``skipped``: ``[name, reason]`` pairs."""
    skipped = []
    for i, pair in enumerate(fields.sequence(value, "skipped")):
        items = fields.sequence(pair, f"skipped[{i}]")
        if len(items) != 2:
            raise ValueError(f"pruning plan field skipped[{i}] must be a [name, reason] pair")
        name, reason = (fields.text(v, f"skipped[{i}]") for v in items)
        skipped.append((name, reason))
    return tuple(skipped)


def _counts_from_dict(data: Mapping[str, Any]) -> dict[str, int]:
    """A plan dict's parameter and FLOP counts, by field name."""
    counts = {
        key: fields.integer(fields.field(data, key), key, maximum=fields.MAX_COUNT)
        for key in ("params_before", "params_after", "flops_before", "flops_after")
    }
    if counts["params_after"] > counts["params_before"]:
        raise ValueError(
            f"pruning plan field params_after ({counts['params_after']}) must not exceed "
            f"params_before ({counts['params_before']}): pruning only removes parameters"
        )
    return counts


def _change(label: str, before: int, after: int) -> str:
    percent = 100.0 * (after - before) / before if before else 0.0
    return f"{label}: {before:,} -> {after:,} ({percent:+.1f}%)"
