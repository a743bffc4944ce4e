"""Robustness evaluation: accuracy, robust accuracy, eps x steps grids, transfer matrices.

Every accuracy comes with a Wilson confidence interval, every evaluation runs its sanity checks
(reported in the result, and warned about when they fail), and the results render as Markdown,
serialize to JSON and plot (with the optional matplotlib). Under ``torchrun`` each process
evaluates a shard of the loader and every process returns the exact global result
(:mod:`advkit.evaluation.distributed`).
"""

from advkit.evaluation._runtime import WorkCount
from advkit.evaluation.distributed import TIMEOUT_ENV, Shard, shard_loader, weights_checksum
from advkit.evaluation.grid import GridResult, attacked_cells, evaluate_grid
from advkit.evaluation.loop import (
    BatchOutcome,
    EvaluationBatch,
    EvaluationLoop,
    LoopTotals,
    attack_batch,
)
from advkit.evaluation.metrics import AccuracyEstimate, accuracy, wilson_interval
from advkit.evaluation.robust import RobustAccuracy, robust_accuracy
from advkit.evaluation.sanity import SanityWarning, ThreatModelCheck
from advkit.evaluation.transfer import TransferMatrix, transfer_matrix

__all__ = [
    "TIMEOUT_ENV",
    "AccuracyEstimate",
    "BatchOutcome",
    "EvaluationBatch",
    "EvaluationLoop",
    "GridResult",
    "LoopTotals",
    "RobustAccuracy",
    "SanityWarning",
    "Shard",
    "ThreatModelCheck",
    "TransferMatrix",
    "WorkCount",
    "accuracy",
    "attack_batch",
    "attacked_cells",
    "evaluate_grid",
    "robust_accuracy",
    "shard_loader",
    "transfer_matrix",
    "weights_checksum",
    "wilson_interval",
]
