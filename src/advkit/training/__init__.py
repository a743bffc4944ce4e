"""Training: one :class:`Trainer` for standard, fine-tuning and adversarial training.

Callbacks hook into the loop (:class:`Callback`, :class:`EarlyStopping`,
:class:`BestCheckpoint`); checkpoints are atomic, load with ``weights_only=True`` and resume
exactly.
"""

from advkit.training.callbacks import BestCheckpoint, Callback, EarlyStopping
from advkit.training.checkpoint import load_checkpoint, load_weights, save_checkpoint
from advkit.training.history import History
from advkit.training.options import OptimizerFactory, SchedulerFactory
from advkit.training.trainer import Trainer

__all__ = [
    "BestCheckpoint",
    "Callback",
    "EarlyStopping",
    "History",
    "OptimizerFactory",
    "SchedulerFactory",
    "Trainer",
    "load_checkpoint",
    "load_weights",
    "save_checkpoint",
]
