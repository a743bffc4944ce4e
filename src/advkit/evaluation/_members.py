"""What an evaluation collects from an ensemble's results: per-member accuracy, masking checks."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from advkit.attacks import AttackResult
from advkit.attacks.autoattack import AutoAttackResult
from advkit.attacks.masking import GradientMaskingWarning, MaskingEvidence, warn_masking
from advkit.evaluation.metrics import AccuracyEstimate
from advkit.evaluation.sanity import SanityCheck


@contextmanager
def batch_warnings_held() -> Iterator[None]:
    """Hold back the per-batch gradient-masking warnings: the tally warns once, for all."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientMaskingWarning)
        yield


class MemberTally:
    """Adds up, batch by batch, the robust counts after each member and the masking evidence.

    Results that are not an :class:`~advkit.attacks.AutoAttackResult` add nothing.
    """

    def __init__(self) -> None:
        self.names: tuple[str, ...] = ()
        self.robust_after: list[int] = []
        self.evidence: MaskingEvidence | None = None

    def update(self, result: AttackResult) -> None:
        """Add one batch's result."""
        if not isinstance(result, AutoAttackResult):
            return
        if not self.names:
            self.names, self.robust_after = result.member_names, [0] * len(result.member_names)
        self.robust_after = [
            a + b for a, b in zip(self.robust_after, result.robust_after, strict=True)
        ]
        self.evidence = result.masking if self.evidence is None else self.evidence + result.masking

    def members(self, total: int, confidence: float) -> tuple[tuple[str, AccuracyEstimate], ...]:
        """Robust accuracy after each member, over ``total`` samples."""
        return tuple(
            (name, AccuracyEstimate(count, total, confidence))
            for name, count in zip(self.names, self.robust_after, strict=True)
        )

    def checks(self, warn: bool = True) -> tuple[SanityCheck, ...]:
        """The gradient-masking checks over every batch, each failure warned about once."""
        if self.evidence is None:
            return ()
        found = self.evidence.checks()
        if warn:
            warn_masking(found, stacklevel=4)
        return tuple(SanityCheck(check.name, check.passed, check.detail) for check in found)
