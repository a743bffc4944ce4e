"""Strict readers of a pruning plan's JSON fields: each names the field and what it expected."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def field(data: Mapping[str, Any], key: str, where: str = "") -> Any:
    """``data[key]``, or a ValueError naming the missing field."""
    if not isinstance(data, Mapping):
        raise ValueError(
            f"pruning plan field {where or 'plan'} must be an object, got {_brief(data)}"
        )
    if key not in data:
        raise ValueError(f"pruning plan field {where}{key} is missing")
    return data[key]


def integer(value: Any, name: str, minimum: int = 0) -> int:
    """An int (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"pruning plan field {name} must be an integer >= {minimum}, got {_brief(value)}"
        )
    return value


def text(value: Any, name: str) -> str:
    """A string."""
    if not isinstance(value, str):
        raise ValueError(f"pruning plan field {name} must be a string, got {_brief(value)}")
    return value


def sequence(value: Any, name: str) -> list[Any]:
    """A JSON array (list or tuple); a string is not one."""
    if not isinstance(value, list | tuple):
        raise ValueError(f"pruning plan field {name} must be a list, got {_brief(value)}")
    return list(value)


def ratio(value: Any) -> float:
    """A finite real in ``[0, 1)``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"pruning plan field ratio must be a number, got {_brief(value)}")
    if not (math.isfinite(value) and 0 <= value < 1):
        raise ValueError(f"pruning plan field ratio must be in [0, 1), got {value}")
    return float(value)


def keep(value: Any, channels: int, name: str) -> tuple[int, ...]:
    """Distinct, increasing channel indices in ``[0, channels)``, at least one."""
    indices = [integer(i, f"{name}[]") for i in sequence(value, name)]
    if not indices or any(i >= channels for i in indices) or indices != sorted(set(indices)):
        raise ValueError(
            f"pruning plan field {name} must be distinct increasing indices in [0, {channels}), "
            f"at least one, got {_brief(value)}"
        )
    return tuple(indices)
