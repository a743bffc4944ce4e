"""Rendering shared by the result objects: Markdown tables, JSON, and lazily imported plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from advkit.evaluation.sanity import SanityCheck

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

T = TypeVar("T", bound="JsonResult")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table; the first column is left-aligned, the rest right."""
    align = [":--"] + ["--:"] * (len(header) - 1)
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def checks_markdown(checks: Sequence[SanityCheck]) -> str:
    """The sanity checks as a Markdown bullet list."""
    marks = {True: "pass", False: "**FAIL**", None: "n/a"}
    return "\n".join(f"- {check.name}: {marks[check.passed]} ({check.detail})" for check in checks)


def check_kind(data: dict[str, Any], kind: str) -> None:
    """Raise ``ValueError`` unless ``data`` is a serialized ``kind``."""
    if not isinstance(data, dict):
        raise TypeError(f"expected a dict from to_dict(), got {type(data).__name__}")
    if data.get("kind") != kind:
        raise ValueError(f"expected a serialized {kind}, got kind={data.get('kind')!r}")


class JsonResult:
    """Mixin: JSON text from ``to_dict``/``from_dict``, and Markdown display in notebooks."""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        raise NotImplementedError

    def to_markdown(self) -> str:
        raise NotImplementedError

    def to_json(self, indent: int | None = 2) -> str:
        """The result as JSON text; :meth:`from_json` reads it back."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls: type[T], text: str) -> T:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def _repr_markdown_(self) -> str:
        return self.to_markdown()


def new_axes(ax: Axes | None, size: tuple[float, float] = (6.0, 4.0)) -> tuple[Figure, Axes]:
    """``ax`` and its figure, or a new figure without touching pyplot's global state.

    Raises:
        ImportError: If matplotlib is not installed (it is an optional dependency).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "plotting needs matplotlib, an optional dependency: pip install 'advkit[plot]'"
        ) from err
    if ax is not None:
        return ax.get_figure(), ax  # type: ignore[return-value]
    figure = Figure(figsize=size, layout="constrained")
    return figure, figure.add_subplot()
