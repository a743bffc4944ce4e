"""Checks and construction of the Trainer's options: optimizer, scheduler and numbers."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import nn
from torch.optim import Optimizer

__all__ = [
    "OptimizerFactory",
    "SchedulerFactory",
    "build_optimizer",
    "build_scheduler",
    "check_optimizer_params",
    "trainable_parameters",
]

OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]
"""Builds an optimizer over the given parameters, e.g. ``lambda p: torch.optim.SGD(p, lr=0.01)``."""
SchedulerFactory = Callable[[Optimizer], Any]
"""Builds a learning-rate scheduler for the given optimizer."""


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters with ``requires_grad``, in ``model.parameters()`` order."""
    return [p for p in model.parameters() if p.requires_grad]


def build_optimizer(model: nn.Module, optimizer: Optimizer | OptimizerFactory) -> Optimizer:
    """Call a factory with the model's trainable parameters, then check the result.

    Raises:
        TypeError: If ``optimizer`` is neither an Optimizer nor a callable returning one.
        ValueError: If the model has no trainable parameters or the optimizer does not hold
            exactly them (see :func:`check_optimizer_params`).
    """
    if not isinstance(optimizer, Optimizer):
        if not callable(optimizer):
            raise TypeError(
                "optimizer must be a torch.optim.Optimizer or a factory called with the "
                f"parameters, got {type(optimizer).__name__}"
            )
        params = trainable_parameters(model)
        if not params:
            raise ValueError("the model has no trainable parameters (all requires_grad=False)")
        built = optimizer(params)
        if not isinstance(built, Optimizer):
            raise TypeError(
                f"the optimizer factory must return a torch.optim.Optimizer, got "
                f"{type(built).__name__}"
            )
        optimizer = built
    check_optimizer_params(model, optimizer)
    return optimizer


def check_optimizer_params(model: nn.Module, optimizer: Optimizer) -> None:
    """Check that the optimizer holds every trainable parameter of the model, and no stranger.

    Frozen parameters of the model may be in the optimizer (they get no gradient). A tensor that
    is not a parameter of the model at all is usually a stale one: the model was pruned or
    rebuilt after the optimizer was made, and training would silently update nothing.

    Raises:
        ValueError: Naming what is foreign or missing and how to build a fitting optimizer.
    """
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    in_model = {id(p) for p in model.parameters()}
    foreign = held - in_model
    if foreign:
        raise ValueError(
            f"the optimizer holds {len(foreign)} tensors that are not parameters of the model "
            "(was the model pruned or rebuilt after the optimizer was made?). Build a new "
            "optimizer over the model's current parameters, or pass a factory such as "
            "`lambda params: torch.optim.SGD(params, lr=0.01)` as optimizer"
        )
    missing = [
        name for name, p in model.named_parameters() if p.requires_grad and id(p) not in held
    ]
    if missing:
        shown = ", ".join(missing[:4]) + (", ..." if len(missing) > 4 else "")
        raise ValueError(
            f"the optimizer does not hold {len(missing)} trainable parameters of the model "
            f"({shown}). Build it over all trainable parameters, or freeze the others with "
            "requires_grad_(False)"
        )


def build_scheduler(optimizer: Optimizer, scheduler: Any) -> Any:
    """Call a scheduler factory with ``optimizer``, or check that a scheduler drives it.

    Raises:
        TypeError: If ``scheduler`` is neither a scheduler nor a callable.
        ValueError: If the scheduler drives another optimizer.
    """
    if scheduler is None:
        return None
    if not (hasattr(scheduler, "step") and hasattr(scheduler, "state_dict")):
        if not callable(scheduler):
            raise TypeError(
                "scheduler must be a learning-rate scheduler or a factory called with the "
                f"optimizer, got {type(scheduler).__name__}"
            )
        scheduler = scheduler(optimizer)
    if getattr(scheduler, "optimizer", None) is not optimizer:
        raise ValueError(
            "the scheduler drives a different optimizer than the trainer's; pass a factory "
            "such as `lambda opt: torch.optim.lr_scheduler.StepLR(opt, 5)` as scheduler"
        )
    return scheduler
