"""Adversarial attacks under L-inf and L2 threat models, in pixel space.

Every attack is called as ``attack(model, inputs, labels)`` and returns adversarial inputs, or
as ``attack.run(...)`` for an :class:`AttackResult`.
"""

from advkit.attacks._validation import allow_nonfinite_logits
from advkit.attacks.base import Attack, AttackResult, GradientAttack, LossFn, ModelMode
from advkit.attacks.compose import Transfer, WorstCase, iterate_count
from advkit.attacks.fgsm import FGSM
from advkit.attacks.ifgsm import BIM, IFGSM
from advkit.attacks.mifgsm import MIFGSM
from advkit.attacks.pgd import PGD
from advkit.attacks.threat import L2Ball, LinfBall, Norm, ThreatModel, threat_model

__all__ = [
    "BIM",
    "FGSM",
    "IFGSM",
    "MIFGSM",
    "PGD",
    "Attack",
    "AttackResult",
    "GradientAttack",
    "L2Ball",
    "LinfBall",
    "LossFn",
    "ModelMode",
    "Norm",
    "ThreatModel",
    "Transfer",
    "WorstCase",
    "allow_nonfinite_logits",
    "iterate_count",
    "threat_model",
]
