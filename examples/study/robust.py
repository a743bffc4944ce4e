"""The strongest evaluation the study has: the one place that says what "robust accuracy" is.

Every robust accuracy in ``results.json`` and the report (outside the I-FGSM grid, which is
the study's own experiment) comes from :func:`robust_attack`, run through
:func:`advkit.evaluation.robust_accuracy` on the same fixed subset of validation images.
``--robust-eval autoattack`` (the default) is :class:`advkit.attacks.AutoAttack`, whose
gradient-masking checks land in each result's checks; ``--aa-version standard`` is Croce and
Hein's standard version, ``reduced`` the same kinds of attack with fewer iterations (what a CPU
affords in the demo). ``--robust-eval worst-case`` is the per-sample worst case over I-FGSM,
PGD and MI-FGSM (:class:`advkit.attacks.WorstCase`). Another evaluation is a new entry here
and in ``config.ROBUST_EVALUATIONS``; nothing else changes.
"""

from __future__ import annotations

from typing import Any

from advkit.attacks import APGD, APGDT, IFGSM, MIFGSM, PGD, Attack, AutoAttack, Square, WorstCase

from .config import StudyConfig

__all__ = ["robust_attack", "robust_description"]


def robust_attack(config: StudyConfig, eps: float) -> Attack:
    """The attack behind every robust accuracy at ``eps`` (in 1/255)."""
    radius = eps / 255
    if config.robust_eval == "autoattack":
        if config.aa_version == "standard":
            return AutoAttack(eps=radius, version="standard", seed=config.seed)
        members = [
            APGD(eps=radius, steps=config.aa_steps),
            APGDT(eps=radius, steps=config.aa_steps, n_target_classes=config.aa_targets),
            Square(eps=radius, n_queries=config.aa_queries),
        ]
        return AutoAttack(
            eps=radius, version="custom", attacks=members, seed=config.seed,
            black_box=config.aa_black_box,
        )  # fmt: skip
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
    if settings["robust_eval"] == "autoattack":
        if settings["aa_version"] == "standard":
            return (
                "AutoAttack, standard version (APGD-CE, APGD-T, FAB-T, Square; Croce and Hein 2020)"
            )
        return (
            "AutoAttack, reduced for a CPU (Croce and Hein 2020's kinds of attack with fewer "
            f"iterations: APGD-CE and APGD-T with {settings['aa_steps']} steps each, APGD-T on "
            f"{settings['aa_targets']} target classes, then Square with {settings['aa_queries']} "
            f"queries{_square_rule(settings)}; the standard version runs 100 steps, 9 target "
            "classes, FAB-T and 5000 queries on every survivor)"
        )
    if settings["robust_eval"] == "worst-case":
        return (
            f"the per-sample worst case over I-FGSM-{max(settings['grid_steps'])}, "
            f"PGD-{settings['pgd_steps']} (random start) and MI-FGSM-{settings['mifgsm_steps']}"
        )
    return str(settings["robust_eval"])


def _square_rule(settings: dict[str, Any]) -> str:
    # Results written before the option existed ran Square on every survivor.
    if settings.get("aa_black_box", "always") == "always":
        return " on every sample the APGD members left"
    return (
        " only where a gradient-masking check failed or APGD-CE's loss looked flat (AutoAttack's "
        "black_box='when_masked', the rule of its fast version: where gradients guide APGD, "
        "Square seldom fools a sample it left, and it is the costliest member per sample)"
    )
