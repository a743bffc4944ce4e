"""The one record of a check that guards a robustness number, and the one warning path.

The gradient-masking checks (:func:`~advkit.attacks.check_gradient_masking`, AutoAttack's) and
the evaluation's sanity checks are both :class:`CheckOutcome` records; their ``kind`` names the
warning a failure raises (:class:`~advkit.attacks.GradientMaskingWarning` or
:class:`~advkit.evaluation.SanityWarning`), so one
function, :func:`warn_failed`, warns for both, and a result file keeps each check's kind.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "CheckKind",
    "CheckOutcome",
    "GradientMaskingWarning",
    "SanityWarning",
    "warn_failed",
]

CheckKind = Literal["sanity", "gradient_masking"]
"""What a check guards against: ``"sanity"`` (a wrong evaluation setup, an attack leaving its
threat model) or ``"gradient_masking"`` (a defense that breaks the attacks' gradients)."""


class GradientMaskingWarning(UserWarning):
    """A gradient-masking check failed: the robust accuracy is probably overstated."""


class SanityWarning(UserWarning):
    """An evaluation's sanity check failed: its numbers are probably not to be trusted."""


_KINDS: dict[str, tuple[type[Warning], str]] = {
    "sanity": (SanityWarning, "sanity check"),
    "gradient_masking": (GradientMaskingWarning, "gradient-masking check"),
}


@dataclass(frozen=True)
class CheckOutcome:
    """The outcome of one check: passed, failed or not applicable, why, and of which kind.

    Attributes:
        name: Short identifier, e.g. ``"in_ball"`` or ``"zero_gradients"``.
        passed: ``True`` or ``False``, or ``None`` when the check does not apply.
        detail: What was checked and, on failure, what was found or what it suggests.
        kind: ``"sanity"`` (the default) or ``"gradient_masking"``; it picks the warning a
            failure raises (:attr:`warning`).

    Raises:
        TypeError: If a field has the wrong type (``passed`` must be a bool or ``None``).
        ValueError: If ``kind`` is not one of the two kinds.

    Example:
        >>> from advkit.attacks import CheckOutcome
        >>> check = CheckOutcome("in_ball", False, "3 of 8 examples leave the eps-ball")
        >>> check.warning.__name__, CheckOutcome.from_dict(check.to_dict()) == check
        ('SanityWarning', True)
    """

    name: str
    passed: bool | None
    detail: str
    kind: CheckKind = "sanity"

    def __post_init__(self) -> None:
        for field in ("name", "detail"):
            value = getattr(self, field)
            if not isinstance(value, str):
                raise TypeError(f"a check's {field} must be a str, got {type(value).__name__}")
        if self.passed is not None and not isinstance(self.passed, bool):
            raise TypeError(
                f"a check's passed must be True, False or None, got {self.passed!r} "
                f"({type(self.passed).__name__})"
            )
        if self.kind not in _KINDS:
            raise ValueError(f"a check's kind must be one of {sorted(_KINDS)}, got {self.kind!r}")

    @property
    def warning(self) -> type[Warning]:
        """The warning :func:`warn_failed` raises for a failure of this kind."""
        return _KINDS[self.kind][0]

    @property
    def label(self) -> str:
        """How that warning's message names this kind of check."""
        return _KINDS[self.kind][1]

    def to_dict(self) -> dict[str, Any]:
        """The four fields by name."""
        return {"name": self.name, "passed": self.passed, "detail": self.detail, "kind": self.kind}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckOutcome:
        """Inverse of :meth:`to_dict`; a dict without ``kind`` (older files) is a sanity check.

        Raises:
            TypeError: If ``data`` is not a dict or a field has the wrong type (no coercion:
                ``passed`` must be ``true``, ``false`` or ``null``).
            ValueError: If ``data`` lacks one of the fields or has an unknown kind.
        """
        if not isinstance(data, dict):
            raise TypeError(f"a check must be a dict, got {type(data).__name__}")
        missing = [key for key in ("name", "passed", "detail") if key not in data]
        if missing:
            raise ValueError(
                f"a CheckOutcome needs the fields name, passed and detail; missing {missing}"
            )
        return cls(data["name"], data["passed"], data["detail"], data.get("kind", "sanity"))


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
