"""The strongest evaluation the study has: the one place that says what "robust accuracy" is.

Every robust accuracy in ``results.json`` and the report (outside the I-FGSM grid, which is
the study's own experiment) comes from :func:`robust_attack`, run through
:func:`advkit.evaluation.robust_accuracy` on the same fixed subset of validation images.
``--robust-eval worst-case`` is the per-sample worst case over I-FGSM, PGD and MI-FGSM
(:class:`advkit.attacks.WorstCase`): a sample counts as robust only if all three fail on it.
Switching to another evaluation (AutoAttack) is a new entry here and in
``config.ROBUST_EVALUATIONS``; nothing else changes.
"""

from __future__ import annotations

from typing import Any

from advkit.attacks import IFGSM, MIFGSM, PGD, Attack, WorstCase

from .config import StudyConfig

__all__ = ["robust_attack", "robust_description"]


def robust_attack(config: StudyConfig, eps: float) -> Attack:
    """The attack behind every robust accuracy at ``eps`` (in 1/255)."""
    radius = eps / 255
    if config.robust_eval == "worst-case":
        return WorstCase(
            [
                IFGSM(eps=radius, steps=max(config.grid_steps)),
                PGD(eps=radius, steps=config.pgd_steps, random_start=True),
                MIFGSM(eps=radius, steps=config.mifgsm_steps),
            ]
        )
    raise ValueError(f"unknown robust evaluation {config.robust_eval!r}")


def robust_description(settings: dict[str, Any]) -> str:
    """One phrase for the report: what the robust accuracies were measured with."""
    if settings["robust_eval"] == "worst-case":
        return (
            f"the per-sample worst case over I-FGSM-{max(settings['grid_steps'])}, "
            f"PGD-{settings['pgd_steps']} (random start) and MI-FGSM-{settings['mifgsm_steps']}"
        )
    return str(settings["robust_eval"])
