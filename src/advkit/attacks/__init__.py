"""Adversarial attacks under L-inf and L2 threat models, in pixel space.

Every attack is called as ``attack(model, inputs, labels)`` and returns adversarial inputs, or
as ``attack.run(...)`` for an :class:`AttackResult`.
"""

from advkit._checks import allow_nonfinite_logits
from advkit.attacks.a3_rules import DirectionStats, adi_weights, keep_highest, margin_loss
from advkit.attacks.apgd import APGD
from advkit.attacks.apgdt import APGDT
from advkit.attacks.autoattack import AutoAttack, AutoAttackResult
from advkit.attacks.base import Attack, AttackResult, LossFn, ModelMode, ModelWork
from advkit.attacks.compose import Transfer, WorstCase, iterate_count
from advkit.attacks.fab import FAB
from advkit.attacks.fgsm import FGSM
from advkit.attacks.gradient import GradientAttack, Step, Walk
from advkit.attacks.ifgsm import BIM, IFGSM
from advkit.attacks.losses import dlr_loss, targeted_dlr_loss
from advkit.attacks.masking import MaskingEvidence, check_gradient_masking
from advkit.attacks.mifgsm import MIFGSM
from advkit.attacks.outcome import (
    CheckKind,
    CheckOutcome,
    GradientMaskingWarning,
    warn_failed,
)
from advkit.attacks.pgd import PGD
from advkit.attacks.square import Square, SquareResult
from advkit.attacks.targeting import Targeting, malt_scores, target_classes
from advkit.attacks.threat import L2Ball, LinfBall, Norm, ThreatModel, threat_model

__all__ = [
    "APGD",
    "APGDT",
    "BIM",
    "FAB",
    "FGSM",
    "IFGSM",
    "MIFGSM",
    "PGD",
    "Attack",
    "AttackResult",
    "AutoAttack",
    "AutoAttackResult",
    "CheckKind",
    "CheckOutcome",
    "DirectionStats",
    "GradientAttack",
    "GradientMaskingWarning",
    "L2Ball",
    "LinfBall",
    "LossFn",
    "MaskingEvidence",
    "ModelMode",
    "ModelWork",
    "Norm",
    "Square",
    "SquareResult",
    "Step",
    "Targeting",
    "ThreatModel",
    "Transfer",
    "Walk",
    "WorstCase",
    "adi_weights",
    "allow_nonfinite_logits",
    "check_gradient_masking",
    "dlr_loss",
    "iterate_count",
    "keep_highest",
    "malt_scores",
    "margin_loss",
    "target_classes",
    "targeted_dlr_loss",
    "threat_model",
    "warn_failed",
]
