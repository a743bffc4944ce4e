"""Small helpers the report shares: accuracies as text, tables, and comparisons of estimates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from advkit.evaluation import AccuracyEstimate, GridResult

__all__ = [
    "attack_text",
    "compare",
    "estimate",
    "grid_cell",
    "grid_table",
    "pct",
    "percent",
    "points",
    "table",
]


def estimate(data: dict[str, Any]) -> AccuracyEstimate:
    """An accuracy from its ``to_dict`` form."""
    return AccuracyEstimate.from_dict(data)


def pct(value: AccuracyEstimate | dict[str, Any], ci: bool = True) -> str:
    """``"91.4 [88.2, 93.8]"`` (percent, Wilson interval), or ``"91.4"`` without ``ci``."""
    accuracy = value if isinstance(value, AccuracyEstimate) else estimate(value)
    return accuracy.format(ci)


def percent(value: AccuracyEstimate | dict[str, Any]) -> str:
    """``"91.4%"``."""
    return f"{pct(value, ci=False)}%"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; the first column left-aligned, the others right-aligned."""
    lines = [list(header), [":--"] + ["--:"] * (len(header) - 1), *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def grid_cell(grid: dict[str, Any], eps: float, steps: int | None = None) -> AccuracyEstimate:
    """The robust accuracy of a serialized grid at ``eps`` (in 1/255) and ``steps``.

    ``steps`` defaults to the grid's largest iteration count.
    """
    result = GridResult.from_dict(grid)
    if steps is None:
        steps = max(s for s in result.steps if s is not None)
    return result.accuracy(eps / 255, steps)


def grid_table(grid: dict[str, Any]) -> str:
    """Iterations as rows, eps (in 1/255) as columns, accuracies with Wilson intervals."""
    result = GridResult.from_dict(grid)
    header = ["iterations \\ eps", *(f"{round(e * 255, 4):g}/255" for e in result.eps)]
    rows = [
        [str(steps), *(cell.format() for cell in row)]
        for steps, row in zip(result.steps, result.robust, strict=True)
    ]
    return table(header, rows)


def compare(first: AccuracyEstimate, second: AccuracyEstimate) -> str:
    """How ``first`` relates to ``second``: "higher than", "lower than" or "on a par with".

    Two estimates differ only when their 95% Wilson intervals do not overlap (a conservative
    test): with a few hundred images, differences of a few points are noise.
    """
    (low_a, high_a), (low_b, high_b) = first.interval, second.interval
    if low_a > high_b:
        return "higher than"
    if high_a < low_b:
        return "lower than"
    return "on a par with"


def points(first: AccuracyEstimate, second: AccuracyEstimate) -> str:
    """The difference ``first - second`` in percentage points, signed: ``"+3.5 points"``."""
    return f"{100 * (first.value - second.value):+.1f} points"


_ATTACK_TITLES = {"IFGSM": "I-FGSM", "PGD": "PGD", "MIFGSM": "MI-FGSM", "FGSM": "FGSM"}


def attack_text(name: str, eps: float, steps: int) -> str:
    """``"I-FGSM, eps 8/255, 10 iterations"`` for an attack class name and eps in 1/255."""
    return f"{_ATTACK_TITLES.get(name, name)}, eps {eps:g}/255, {steps} iterations"
