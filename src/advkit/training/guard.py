"""A guard against catastrophic overfitting of fast (FGSM) adversarial training."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from advkit._checks import brief, check_int, check_real, check_run_dtypes
from advkit._guard import model_state
from advkit.attacks import Attack
from advkit.attacks.base import check_attack
from advkit.evaluation import attack_batch
from advkit.training.callbacks import Callback

if TYPE_CHECKING:
    from advkit.training.trainer import Trainer

__all__ = ["OverfittingGuard"]

GuardAction = Literal["warn", "stop", "rollback"]


class OverfittingGuard(Callback):
    """Watch robust accuracy on a held-out batch and act when it collapses.

    FGSM training can overfit catastrophically: within a few steps, accuracy against FGSM
    soars while accuracy against PGD drops to near zero. Wong et al. check PGD accuracy on one
    batch during training and, when it falls by more than 0.2 from the previous check, stop
    and keep the weights of the last good check. This callback does the same: every epoch
    (or every ``every_n_steps`` optimizer steps) it measures ``attack``'s robust accuracy on
    the held-out batch in eval mode; on a drop of more than ``drop`` from the previous check it
    warns and, with ``action="stop"``, ends ``fit`` after the epoch, or with
    ``action="rollback"``, also restores the model and optimizer to the last good check at the
    epoch's end (before ``last.pt`` is written). The collapsed epoch stays in the history.

    The last good state is kept in memory (a copy of the model's and optimizer's state at
    each passing check) and in checkpoints, so a resumed run guards the same way.

    Args:
        inputs: The held-out batch's inputs (not trained on).
        labels: Their labels.
        attack: The check's attack, e.g. ``PGD(eps=8 / 255, steps=5)`` as in the paper.
        every_n_steps: Check every this many optimizer steps (at the end of the batch in
            which the step falls: with free AT's ``m`` replays a batch takes ``m`` steps);
            ``None`` (default) checks at the end of every epoch.
        drop: The fall of robust accuracy from one check to the next that counts as a
            collapse, in ``(0, 1]``; 0.2 as in the authors' code.
        action: ``"warn"``, ``"stop"`` or ``"rollback"``.

    Attributes:
        history: ``(global_step, robust_accuracy)`` of every check.
        collapsed_at: The global step of the collapse, or ``None``.
        rolled_back: Whether the weights were restored to the last good check.

    References:
        Wong, Rice and Kolter, "Fast is better than free: Revisiting adversarial training",
        ICLR 2020 (code: locuslab/fast_adversarial, ``train_fgsm.py``, ``--early-stop``).
    """

    def __init__(
        self,
        inputs: Tensor,
        labels: Tensor,
        attack: Attack,
        *,
        every_n_steps: int | None = None,
        drop: float = 0.2,
        action: GuardAction = "rollback",
    ) -> None:
        if not isinstance(inputs, Tensor) or not isinstance(labels, Tensor):
            raise TypeError("inputs and labels must be tensors")
        if inputs.shape[0] != labels.shape[0] or inputs.shape[0] == 0:
            raise ValueError(
                f"inputs and labels must hold the same number (>= 1) of samples, got "
                f"{inputs.shape[0]} and {labels.shape[0]}"
            )
        if not inputs.is_floating_point():
            raise TypeError(f"inputs must be a floating-point tensor, got {inputs.dtype}")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"labels must be integer class indices, got {labels.dtype}")
        check_attack(attack)
        if every_n_steps is not None:
            check_int(every_n_steps, "every_n_steps", minimum=1)
        check_real(drop, "drop", low=0, high=1, open_low=True)
        if action not in ("warn", "stop", "rollback"):
            raise ValueError(f"action must be 'warn', 'stop' or 'rollback', got {action!r}")
        self.inputs = inputs.detach()
        self.labels = labels.detach()
        self.attack = attack.replace(model_mode="eval") if attack.model_mode != "eval" else attack
        self.every_n_steps = every_n_steps
        self.drop = float(drop)
        self.action: GuardAction = action
        self.history: list[tuple[int, float]] = []
        self.collapsed_at: int | None = None
        self.rolled_back = False
        self._good: dict[str, Any] | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        """Check, before the first epoch, that the held-out batch fits the model's dtype."""
        check_run_dtypes(trainer.model, self.inputs, {})

    def robust_accuracy(self, trainer: Trainer) -> float:
        """Accuracy of the trainer's model under ``attack`` on the held-out batch, in eval mode.

        Counted by :func:`advkit.evaluation.attack_batch`, as every robust accuracy of advkit:
        only correctly classified samples are attacked, and a sample is robust if it is
        classified correctly and never fooled.
        """
        model = trainer.model
        inputs = self.inputs.to(trainer.device)
        labels = self.labels.to(trainer.device)
        with model_state(model):
            outcome = attack_batch(model, inputs, labels, self.attack)
        return int(outcome.robust.sum()) / outcome.robust.numel()

    def on_batch_end(self, trainer: Trainer, batch_index: int, loss: Tensor) -> None:
        """Check at the end of a batch in which an ``every_n_steps``-th optimizer step fell
        (a batch takes ``objective.replays`` steps: ``m`` for free AT, 1 otherwise)."""
        n = self.every_n_steps
        if n is None:
            return
        step = trainer.global_step
        if step // n > (step - trainer.objective.replays) // n:
            self._check(trainer)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: Mapping[str, float]) -> None:
        """Check (per-epoch mode) and roll back after a collapse."""
        if self.every_n_steps is None:
            self._check(trainer)
        if (
            self.collapsed_at is not None
            and self.action == "rollback"
            and not self.rolled_back
            and self._good is not None
        ):
            trainer.model.load_state_dict(self._good["model"])
            trainer.optimizer.load_state_dict(copy.deepcopy(self._good["optimizer"]))
            self.rolled_back = True

    def _check(self, trainer: Trainer) -> None:
        if self.collapsed_at is not None:
            return
        accuracy = self.robust_accuracy(trainer)
        previous = self.history[-1][1] if self.history else None
        self.history.append((trainer.global_step, accuracy))
        if previous is not None and accuracy < previous - self.drop:
            self.collapsed_at = trainer.global_step
            warnings.warn(
                f"catastrophic overfitting: robust accuracy on the held-out batch fell from "
                f"{previous:.3f} to {accuracy:.3f} at step {trainer.global_step}"
                + {"warn": "", "stop": "; stopping", "rollback": "; rolling back and stopping"}[
                    self.action
                ],
                stacklevel=2,
            )
            if self.action != "warn":
                trainer.should_stop = True
            return
        self._good = {
            "model": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
            "optimizer": copy.deepcopy(trainer.optimizer.state_dict()),
        }

    def state_dict(self) -> dict[str, Any]:
        """The checks so far, the collapse step and the last good state."""
        return {
            "history": [list(entry) for entry in self.history],
            "collapsed_at": self.collapsed_at,
            "rolled_back": self.rolled_back,
            "good": self._good,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the state saved by :meth:`state_dict`.

        The state is checked whole before anything changes: ``history`` a list of
        ``[step, accuracy]`` pairs (integer steps >= 0, increasing; accuracies in ``[0, 1]``),
        ``collapsed_at`` ``None`` or the step of one of those checks, ``rolled_back`` a bool
        (``True`` only after a collapse), ``good`` ``None`` or ``{"model": {name: tensor},
        "optimizer": {...}}``.

        Raises:
            ValueError: Naming the entry that is missing or invalid (the guard is unchanged).
        """
        if not isinstance(state, Mapping):
            raise ValueError(f"OverfittingGuard state must be a mapping, got {brief(state)}")
        missing = [k for k in ("history", "collapsed_at", "rolled_back", "good") if k not in state]
        if missing:
            raise ValueError(f"OverfittingGuard state lacks {missing}")
        history = _history(state["history"])
        collapsed_at = state["collapsed_at"]
        if collapsed_at is not None and (
            isinstance(collapsed_at, bool)
            or not isinstance(collapsed_at, int)
            or collapsed_at not in {step for step, _ in history}
        ):
            raise ValueError(
                "OverfittingGuard state collapsed_at must be None or the step of one of its "
                f"checks {[step for step, _ in history][-5:]}, got {brief(collapsed_at)}"
            )
        rolled_back = state["rolled_back"]
        if not isinstance(rolled_back, bool) or (rolled_back and collapsed_at is None):
            raise ValueError(
                "OverfittingGuard state rolled_back must be a bool, True only after a collapse, "
                f"got {brief(rolled_back)} with collapsed_at={collapsed_at!r}"
            )
        good = state["good"]
        if good is not None and not (
            isinstance(good, Mapping)
            and isinstance(good.get("model"), Mapping)
            and all(isinstance(t, Tensor) for t in good["model"].values())
            and isinstance(good.get("optimizer"), Mapping)
        ):
            raise ValueError(
                "OverfittingGuard state good must be None or {'model': {name: tensor}, "
                f"'optimizer': {{...}}}}, got {brief(good)}"
            )
        self.history = history
        self.collapsed_at = collapsed_at
        self.rolled_back = rolled_back
        self._good = copy.deepcopy(good)


def _history(value: Any) -> list[tuple[int, float]]:
    """A guard history read back: ``[step, accuracy]`` pairs, steps increasing."""
    if not isinstance(value, list | tuple):
        raise ValueError(f"OverfittingGuard state history must be a list, got {brief(value)}")
    history: list[tuple[int, float]] = []
    for i, entry in enumerate(value):
        ok = isinstance(entry, list | tuple) and len(entry) == 2
        step, acc = entry if ok else (None, None)
        if not (
            ok
            and isinstance(step, int)
            and not isinstance(step, bool)
            and step >= 0
            and (not history or step > history[-1][0])
            and isinstance(acc, int | float)
            and not isinstance(acc, bool)
            and 0.0 <= acc <= 1.0
        ):
            raise ValueError(
                f"OverfittingGuard state history[{i}] must be [step, accuracy] with an integer "
                f"step >= 0 above the previous one and an accuracy in [0, 1], got {brief(entry)}"
            )
        history.append((step, float(acc)))
    return history
