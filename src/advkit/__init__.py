"""advkit: adversarial robustness for PyTorch.

Composable attacks in pixel space, structured pruning that physically removes filters, and one
trainer for standard and adversarial fine-tuning.
"""

from advkit import attacks, models
from advkit.attacks import (
    BIM,
    FGSM,
    IFGSM,
    MIFGSM,
    PGD,
    Attack,
    AttackResult,
    GradientAttack,
    LinfBall,
)
from advkit.models import ImageClassifier, Normalize, resnet18

__version__ = "0.1.0"

__all__ = [
    "BIM",
    "FGSM",
    "IFGSM",
    "MIFGSM",
    "PGD",
    "Attack",
    "AttackResult",
    "GradientAttack",
    "ImageClassifier",
    "LinfBall",
    "Normalize",
    "__version__",
    "attacks",
    "models",
    "resnet18",
]
