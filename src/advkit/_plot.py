"""Plot helpers shared by the results that draw themselves (matplotlib is optional)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D


class _Estimated(Protocol):
    value: float
    interval: tuple[float, float]


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


def accuracy_band(
    ax: Axes, xs: Sequence[float], estimates: Sequence[_Estimated], **style: Any
) -> Line2D:
    """Draw accuracies (in %) against ``xs`` with their intervals as a band of the line's colour.

    Returns:
        The line, whose colour a companion curve can take.
    """
    line = ax.plot(xs, [100 * e.value for e in estimates], marker="o", **style)[0]
    ax.fill_between(
        xs,
        [100 * e.interval[0] for e in estimates],
        [100 * e.interval[1] for e in estimates],
        color=line.get_color(),
        alpha=0.15,
    )
    return line
