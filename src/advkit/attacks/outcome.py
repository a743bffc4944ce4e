"""The outcome of a check that guards a robustness number, and the warnings for failed ones.

The gradient-masking checks (:class:`~advkit.attacks.MaskingCheck`) and the evaluation's
sanity checks (:class:`~advkit.evaluation.SanityCheck`) are its two kinds; each names the
warning its failures raise, so one function warns for both.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

__all__ = ["CheckOutcome", "warn_failed"]


@dataclass(frozen=True)
class CheckOutcome:
    """The outcome of one check: passed, failed or not applicable, and why.

    Attributes:
        name: Short identifier, e.g. ``"zero_gradients"``.
        passed: ``True`` or ``False``, or ``None`` when the check does not apply.
        detail: What was checked and, on failure, what was found or what it suggests.
    """

    name: str
    passed: bool | None
    detail: str

    warning: ClassVar[type[Warning]] = UserWarning
    """The warning :func:`warn_failed` raises for a failure of this kind."""
    label: ClassVar[str] = "check"
    """How that warning's message names this kind of check."""

    def to_dict(self) -> dict[str, Any]:
        """The three fields by name."""
        return {"name": self.name, "passed": self.passed, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Inverse of :meth:`to_dict` (an outcome of the class it is called on).

        Raises:
            ValueError: If ``data`` lacks one of the three fields.
        """
        missing = [key for key in ("name", "passed", "detail") if key not in data]
        if missing:
            raise ValueError(
                f"a {cls.__name__} needs the fields name, passed and detail; missing {missing}"
            )
        passed = data["passed"]
        return cls(str(data["name"]), None if passed is None else bool(passed), str(data["detail"]))


def warn_failed(checks: Iterable[CheckOutcome], stacklevel: int = 3) -> None:
    """Issue each failed check's :attr:`~CheckOutcome.warning`, saying what it found.

    Args:
        checks: The outcomes; those that passed or do not apply are skipped.
        stacklevel: As for :func:`warnings.warn`: 3 points at the caller of the function that
            calls this one.

    Raises:
        TypeError: If an item is not a :class:`CheckOutcome`.
    """
    for check in checks:
        if not isinstance(check, CheckOutcome):
            raise TypeError(f"checks must be CheckOutcome objects, got {type(check).__name__}")
        if check.passed is False:
            warnings.warn(
                f"{check.label} {check.name!r} failed: {check.detail}",
                check.warning,
                stacklevel=stacklevel,
            )
