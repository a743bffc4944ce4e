"""Carry an optimizer over to a pruned model, whose parameters are new tensors."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn
from torch.optim import Optimizer

from advkit._checks import check_model

__all__ = ["rebuild_optimizer"]


def rebuild_optimizer(
    optimizer: Optimizer, model: nn.Module, *, original: nn.Module | None = None
) -> Optimizer:
    """A new optimizer of the same class and hyper-parameters over ``model``'s parameters.

    Pruning replaces parameters with smaller tensors, so an optimizer made before pruning
    would go on updating the old, unused ones. This builds a fresh optimizer with every
    parameter group's settings (learning rate, momentum, weight decay, ...) copied. Its state
    (momentum buffers, Adam moments, step counts) starts empty, as after a restart; a
    learning-rate scheduler must be attached to the new optimizer.

    Args:
        optimizer: The optimizer used for the unpruned model.
        model: The pruned model.
        original: The unpruned model ``optimizer`` was made for. Needed only when
            ``optimizer`` has several parameter groups: each pruned parameter joins the group
            its namesake belonged to. Parameters in no group are left out, as before.

    Returns:
        The new optimizer.

    Raises:
        TypeError: If ``optimizer`` or a model has the wrong type.
        ValueError: If ``optimizer`` has several groups and ``original`` is missing, or the
            two models' parameter names differ.

    Example:
        >>> import torch
        >>> old = torch.optim.SGD(nn.Linear(4, 2).parameters(), lr=0.1, momentum=0.9)
        >>> new = rebuild_optimizer(old, nn.Linear(3, 2))
        >>> type(new).__name__, new.param_groups[0]["lr"], new.param_groups[0]["momentum"]
        ('SGD', 0.1, 0.9)
    """
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer)}")
    check_model(model)
    settings = [
        {key: value for key, value in group.items() if key != "params"}
        for group in optimizer.param_groups
    ]
    if len(settings) == 1:
        groups = [{**settings[0], "params": list(model.parameters())}]
    else:
        groups = _regroup(optimizer, model, original, settings)
    return type(optimizer)(groups, **_constructor_defaults(optimizer))


def _constructor_defaults(optimizer: Optimizer) -> dict[str, Any]:
    """The optimizer's defaults that its constructor accepts (some are derived, not arguments)."""
    parameters = inspect.signature(type(optimizer).__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(optimizer.defaults)
    return {key: value for key, value in optimizer.defaults.items() if key in parameters}


def _regroup(
    optimizer: Optimizer,
    model: nn.Module,
    original: nn.Module | None,
    settings: list[dict[str, object]],
) -> list[dict[str, object]]:
    if original is None:
        raise ValueError(
            f"the optimizer has {len(settings)} parameter groups; pass original=<the unpruned "
            "model> so each pruned parameter can join its group"
        )
    check_model(original, "original")
    old_names = {id(param): name for name, param in original.named_parameters()}
    new_params = dict(model.named_parameters())
    groups = []
    for group, setting in zip(optimizer.param_groups, settings, strict=True):
        names = [old_names.get(id(param)) for param in group["params"]]
        if any(name is None or name not in new_params for name in names):
            raise ValueError(
                "original and model must have the same parameter names, and original must own "
                "the optimizer's parameters"
            )
        groups.append({**setting, "params": [new_params[name] for name in names]})
    return groups
