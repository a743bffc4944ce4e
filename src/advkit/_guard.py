"""The one model-state guard: run a model in a mode and give every flag and buffer back after."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Literal

import torch
from torch import nn


@contextmanager
def model_state(
    *models: nn.Module,
    mode: Literal["eval", "train"] = "eval",
    freeze: bool = False,
    no_grad: bool = False,
) -> Iterator[None]:
    """Run ``models`` in ``mode``; restore every submodule's flag, and what else changed, after.

    Args:
        models: The models to guard.
        mode: ``"eval"`` or ``"train"``. In train mode BatchNorm updates its running
            statistics: every buffer is snapshot and written back afterwards.
        freeze: Set ``requires_grad=False`` on every parameter inside and restore the flags
            after, so that a backward pass computes input gradients only.
        no_grad: Run the body under :func:`torch.no_grad`.
    """
    modules = [module for model in models for module in model.modules()]
    flags = [(module, module.training) for module in modules]
    # Read from the modules already listed: model.parameters() walks them all again. A shared
    # parameter is listed twice, with the same flag, which restores it correctly.
    requires_grad = (
        [
            (param, param.requires_grad)
            for module in modules
            for param in module._parameters.values()
            if param is not None
        ]
        if freeze
        else []
    )
    saved = (
        [(buf, buf.detach().clone()) for model in models for buf in model.buffers()]
        if mode == "train"
        else []
    )
    training = mode == "train"
    # model.train() walks Python code per module (a few hundred microseconds for a ResNet, per
    # call): touch only what changes.
    if any(flag != training for _, flag in flags):
        for model in models:
            model.train(training)
    try:
        for param, flag in requires_grad:
            if flag:
                param.requires_grad_(False)
        with torch.no_grad() if no_grad else nullcontext():
            yield
    finally:
        with torch.no_grad():
            for buf, copy in saved:
                buf.copy_(copy)
        for module, flag in flags:
            if module.training != flag:
                module.training = flag
        for param, flag in requires_grad:
            if param.requires_grad != flag:
                param.requires_grad_(flag)
