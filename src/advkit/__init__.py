"""advkit: adversarial robustness for PyTorch.

Composable attacks in pixel space, structured pruning that physically removes filters, one
trainer for standard and adversarial fine-tuning, and robustness evaluation over eps x steps
grids.
"""

from advkit import attacks, certification, data, evaluation, models, pruning, recipes, training
from advkit.attacks import (
    APGD,
    APGDT,
    BIM,
    FAB,
    FGSM,
    IFGSM,
    MIFGSM,
    PGD,
    Attack,
    AttackResult,
    AutoAttack,
    GradientAttack,
    L2Ball,
    LinfBall,
    Square,
    Transfer,
    WorstCase,
    dlr_loss,
    targeted_dlr_loss,
)
from advkit.data import Animals10, SyntheticAnimals10
from advkit.evaluation import (
    GridResult,
    TransferMatrix,
    accuracy,
    evaluate_grid,
    robust_accuracy,
    transfer_matrix,
)
from advkit.models import ImageClassifier, Normalize, resnet18
from advkit.pruning import (
    Pruner,
    PruningPlan,
    apply_plan,
    count_flops,
    count_parameters,
    load_pruned,
    rebuild_optimizer,
    save_pruned,
)
from advkit.training import BestCheckpoint, Callback, EarlyStopping, History, Trainer, load_weights

__version__ = "0.1.0"

__all__ = [
    "APGD",
    "APGDT",
    "BIM",
    "FAB",
    "FGSM",
    "IFGSM",
    "MIFGSM",
    "PGD",
    "Animals10",
    "Attack",
    "AttackResult",
    "AutoAttack",
    "BestCheckpoint",
    "Callback",
    "EarlyStopping",
    "GradientAttack",
    "GridResult",
    "History",
    "ImageClassifier",
    "L2Ball",
    "LinfBall",
    "Normalize",
    "Pruner",
    "PruningPlan",
    "Square",
    "SyntheticAnimals10",
    "Trainer",
    "Transfer",
    "TransferMatrix",
    "WorstCase",
    "__version__",
    "accuracy",
    "apply_plan",
    "attacks",
    "certification",
    "count_flops",
    "count_parameters",
    "data",
    "dlr_loss",
    "evaluate_grid",
    "evaluation",
    "load_pruned",
    "load_weights",
    "models",
    "pruning",
    "rebuild_optimizer",
    "recipes",
    "resnet18",
    "robust_accuracy",
    "save_pruned",
    "targeted_dlr_loss",
    "training",
    "transfer_matrix",
]
