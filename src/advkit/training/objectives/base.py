"""The objective interface: what the Trainer minimizes, one batch at a time.

An :class:`Objective` is called by :class:`~advkit.training.Trainer` once per batch (or once per
replay, for an objective with ``replays > 1``) with a :class:`TrainingModel`, the batch and the
current eps scale of the warm-up, and returns an :class:`ObjectiveOutput`: the scalar loss the
Trainer back-propagates and the per-batch metrics it logs. The inner maximization (the attack)
is part of the objective, so objectives that couple clean and adversarial logits (TRADES, MART)
or that change the step itself (free AT, AWP) are expressed in one place.
"""

from __future__ import annotations

import abc
import functools
import inspect
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from advkit._checks import check_logits, warn

__all__ = [
    "AdversarialObjective",
    "Objective",
    "ObjectiveOutput",
    "TrainingModel",
    "accuracy",
]

Forward = Callable[[Tensor], Tensor]
"""``forward(inputs) -> logits [N, C]``: one training forward pass."""


@dataclass(frozen=True)
class ObjectiveOutput:
    """What an objective returns for one batch.

    Attributes:
        loss: The scalar (float32) loss the Trainer back-propagates.
        metrics: Per-batch means to log, by name (``"accuracy"`` for clean accuracy,
            ``"adv_accuracy"`` for accuracy on the adversarial inputs, ...); the Trainer logs
            each as ``train_<name>``, averaged over the epoch's samples. A name listed in
            :attr:`Objective.metric_names` may be missing from a batch (e.g. measured on the
            first replay only); its mean is then over the batches that reported it.
    """

    loss: Tensor
    metrics: Mapping[str, Tensor] = field(default_factory=dict)


class TrainingModel:
    """The model being trained, as an objective sees it during one training step.

    Calling it runs a *training* forward pass: through the DistributedDataParallel wrapper under
    ``torchrun`` and under :func:`torch.autocast` when the Trainer uses AMP, returning logits
    ``[N, C]`` (in float32 under AMP, so losses are computed in full precision). Inner
    maximizations use :attr:`module`, the plain model, which triggers no gradient
    synchronization; attacks run there in full precision.

    An objective draws its randomness (random starts of the inner attack, noise) from
    :attr:`generator`, the Trainer's ``generator``: ``None`` means torch's global RNG.

    Args:
        module: The plain model (never the DDP wrapper).
        net: What training passes run through: the DDP wrapper, or ``module``.
        autocast: Returns the context a training forward pass runs in.
        amp: Whether ``autocast`` reduces precision (logits are then cast to float32).
        generator: The source of the objective's randomness, or ``None`` for the global RNG.

    Attributes:
        module: The plain model.
        generator: The source of the objective's randomness, or ``None`` for the global RNG.
    """

    def __init__(
        self,
        module: nn.Module,
        net: nn.Module | None = None,
        autocast: Callable[[], AbstractContextManager[Any]] | None = None,
        amp: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        self.module = module
        self.net = net if net is not None else module
        self._autocast = autocast or nullcontext
        self.amp = amp
        self.generator = generator

    def __call__(self, inputs: Tensor) -> Tensor:
        """Training forward pass of ``inputs``; checks that the logits are ``[N, C]``."""
        with self._autocast():
            logits = self.net(inputs)
        check_logits(logits, inputs.shape[0], None)
        return logits.float() if self.amp else logits

    def autocast(self) -> AbstractContextManager[Any]:
        """The context training passes run in (AMP's autocast, or nothing)."""
        return self._autocast()


class Objective(abc.ABC):
    """Base class of training objectives: ``objective(model, inputs, labels, eps_scale)``.

    Subclasses implement :meth:`__call__` and :attr:`metric_names`. An objective with state
    that must survive a resume (free AT's carried perturbation) implements :meth:`state_dict`
    and :meth:`load_state_dict`; the Trainer stores it in its checkpoints. An objective that
    draws random numbers draws them from ``model.generator`` (the Trainer's ``generator``,
    ``None`` for the global RNG), so that a Trainer with a seeded generator is reproducible
    without touching the global RNG.

    Attributes:
        replays: How many times the Trainer runs each batch through the objective, with one
            backward pass and optimizer step each (``m`` of free AT; 1 for the others).
    """

    replays: int = 1

    @property
    @abc.abstractmethod
    def metric_names(self) -> tuple[str, ...]:
        """Names of the per-batch metrics :meth:`__call__` may report, in logging order."""

    @property
    def eps(self) -> float | None:
        """The full (warmed-up) radius of the training perturbation, logged as
        ``train_eps`` times the eps scale; ``None`` if there is none or it is per-sample."""
        return None

    @abc.abstractmethod
    def __call__(
        self, model: TrainingModel, inputs: Tensor, labels: Tensor, eps_scale: float
    ) -> ObjectiveOutput:
        """The loss and metrics of one batch.

        Args:
            model: The model being trained (see :class:`TrainingModel`), in train mode.
            inputs: The batch's inputs, on the training device.
            labels: Their labels ``[N]``.
            eps_scale: The eps warm-up's factor in ``[0, 1]``: scale every radius (and
                explicit step size) by it.
        """

    def after_backward(self, model: TrainingModel) -> None:  # noqa: B027 - optional hook
        """Called after the backward pass of the loss, before the optimizer step (and also
        when the step failed, so weights perturbed for the pass can be restored)."""

    def state_dict(self) -> dict[str, Any]:
        """State saved in checkpoints (tensors, numbers, strings and containers of them)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore the state returned by :meth:`state_dict`."""

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({shown})"


class AdversarialObjective(Objective):
    """An objective made of an inner maximization and an outer loss (what AWP builds on).

    :meth:`__call__` is ``outer(model, inputs, perturb_batch(model, ...), labels)``:
    :meth:`perturb` on the plain model with the Trainer's generator.
    """

    @abc.abstractmethod
    def perturb(
        self,
        model: nn.Module,
        inputs: Tensor,
        labels: Tensor,
        eps_scale: float,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor | None:
        """The inner maximization on the plain model: adversarial inputs (detached), or
        ``None`` if the objective makes no adversarial pass.

        Args:
            model: The plain model.
            inputs: The batch's inputs.
            labels: Their labels ``[N]``.
            eps_scale: The eps warm-up's factor in ``[0, 1]``.
            generator: The source of random starts (pass it on to the attack:
                ``attack(model, inputs, labels, generator=generator)``); ``None`` for the
                global RNG. A subclass whose ``perturb`` takes no ``generator`` still works:
                :meth:`perturb_batch` then calls it without one, with a warning when the
                Trainer has a generator (the inner attack draws from the global RNG).
        """

    def perturb_batch(
        self, model: TrainingModel, inputs: Tensor, labels: Tensor, eps_scale: float
    ) -> Tensor | None:
        """:meth:`perturb` on ``model.module`` with ``model.generator`` (what the Trainer and
        :class:`~advkit.training.AWP` call); a ``perturb`` without a ``generator`` argument is
        called without it."""
        if _takes_generator(type(self).perturb):
            return self.perturb(model.module, inputs, labels, eps_scale, generator=model.generator)
        if model.generator is not None:
            warn(
                f"{type(self).__name__}.perturb takes no generator argument: its inner "
                "maximization draws from the global RNG, not from the Trainer's generator"
            )
        return self.perturb(model.module, inputs, labels, eps_scale)

    @abc.abstractmethod
    def outer(
        self, forward: Forward, inputs: Tensor, adv_inputs: Tensor | None, labels: Tensor
    ) -> ObjectiveOutput:
        """The outer loss from training forward passes ``forward(inputs) -> logits``."""

    def __call__(
        self, model: TrainingModel, inputs: Tensor, labels: Tensor, eps_scale: float
    ) -> ObjectiveOutput:
        """``outer(model, inputs, perturb_batch(model, inputs, labels, eps_scale), labels)``."""
        adv_inputs = self.perturb_batch(model, inputs, labels, eps_scale)
        return self.outer(model, inputs, adv_inputs, labels)


@functools.cache
def _takes_generator(perturb: Callable[..., Any]) -> bool:
    """Whether a ``perturb`` method accepts ``generator=`` (those written before it did not)."""
    parameters = inspect.signature(perturb).parameters.values()
    return any(
        p.kind is inspect.Parameter.VAR_KEYWORD
        or (p.name == "generator" and p.kind is not inspect.Parameter.POSITIONAL_ONLY)
        for p in parameters
    )


# -- helpers shared by the objectives ------------------------------------------------------------


def scalar_loss(
    loss_fn: Callable[[Tensor, Tensor], Tensor], logits: Tensor, labels: Tensor
) -> Tensor:
    """``loss_fn(logits, labels)`` in float32, checked to be a scalar tensor.

    The one check of a user's ``loss_fn``, for the Trainer's forward pass and :class:`MixedCE`.

    Raises:
        ValueError: If ``loss_fn`` returns anything but a 0-dim tensor.
    """
    loss = loss_fn(logits, labels)
    if not isinstance(loss, Tensor) or loss.ndim != 0:
        shape = list(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(f"loss_fn must return a scalar tensor, got {shape}")
    return loss.float()


def accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Fraction of correct predictions, a float32 scalar (no host sync)."""
    hits = (logits.detach().argmax(dim=1) == labels).sum(dtype=torch.float32)
    return hits / labels.shape[0]
