"""Strict readers of a pruning plan's JSON fields: each names the field and what it expected."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from advkit._checks import brief

MAX_WIDTH = 2**24
"""The largest channel count, feature count, index or expansion a plan or a pruned file may
name: far above any real layer's width, and refused before anything is allocated."""

MAX_COUNT = 2**62
"""The largest parameter or FLOP count a plan may record."""

MAX_INPUT_ELEMENTS = 2**28
"""The most input elements a plan's ``input_shapes`` may describe (checking a plan against a
model runs the model on inputs of these shapes)."""


def field(data: Mapping[str, Any], key: str, where: str = "") -> Any:
    """``data[key]``, or a ValueError naming the missing field."""
    if not isinstance(data, Mapping):
        raise ValueError(
            f"pruning plan field {where or 'plan'} must be an object, got {brief(data)}"
        )
    if key not in data:
        raise ValueError(f"pruning plan field {where}{key} is missing")
    return data[key]


def integer(value: Any, name: str, minimum: int = 0, maximum: int = MAX_WIDTH) -> int:
    """An int (not a bool) in ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"pruning plan field {name} must be an integer >= {minimum}, got {brief(value)}"
        )
    if value > maximum:
        shown = value if value < 10**18 else f"an integer of {value.bit_length()} bits"
        raise ValueError(f"pruning plan field {name} must be at most {maximum}, got {shown}")
    return value


def text(value: Any, name: str) -> str:
    """A string."""
    if not isinstance(value, str):
        raise ValueError(f"pruning plan field {name} must be a string, got {brief(value)}")
    return value


def sequence(value: Any, name: str) -> list[Any]:
    """A JSON array (list or tuple); a string is not one."""
    if not isinstance(value, list | tuple):
        raise ValueError(f"pruning plan field {name} must be a list, got {brief(value)}")
    return list(value)


def ratio(value: Any) -> float:
    """A finite real in ``[0, 1)``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"pruning plan field ratio must be a number, got {brief(value)}")
    if not (math.isfinite(value) and 0 <= value < 1):
        raise ValueError(f"pruning plan field ratio must be in [0, 1), got {value}")
    return float(value)


def keep(value: Any, channels: int, name: str) -> tuple[int, ...]:
    """Distinct, increasing channel indices in ``[0, channels)``, at least one."""
    indices = [integer(i, f"{name}[]") for i in sequence(value, name)]
    if not indices or any(i >= channels for i in indices) or indices != sorted(set(indices)):
        raise ValueError(
            f"pruning plan field {name} must be distinct increasing indices in [0, {channels}), "
            f"at least one, got {brief(value)}"
        )
    return tuple(indices)
