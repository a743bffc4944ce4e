"""Loaders and planted faults shared by the evaluation tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advkit.attacks import IFGSM, AttackResult

Loader = list[tuple[Tensor, Tensor]]


def make_loader(images: Tensor, labels: Tensor, batch_size: int) -> Loader:
    """A deterministic loader: the same batches in the same order on every pass."""
    return [
        (images[i : i + batch_size], labels[i : i + batch_size])
        for i in range(0, images.shape[0], batch_size)
    ]


class EscapingIFGSM(IFGSM):
    """A broken attack: its examples end up ``escape`` beyond the eps-ball."""

    escape = 0.05
    shareable_walk = False  # its run() is not its walk: a grid must run it

    def _run(self, model, inputs, labels, generator, early_stop, track):  # type: ignore[no-untyped-def]
        adversarial, result = super()._run(model, inputs, labels, generator, early_stop, track)
        escaped = (adversarial + self.escape).clamp(0, 1)
        if result is None:
            return escaped, None
        return escaped, AttackResult(
            adversarial=escaped,
            success=result.success,
            logits=result.logits,
            success_step=result.success_step,
            grad_calls=result.grad_calls,
            grad_samples=result.grad_samples,
        )


class OutOfBoxIFGSM(EscapingIFGSM):
    """A broken attack that leaves the box ``[0, 1]`` but stays inside the eps-ball."""

    def _run(self, model, inputs, labels, generator, early_stop, track):  # type: ignore[no-untyped-def]
        adversarial, result = IFGSM._run(self, model, inputs, labels, generator, early_stop, track)
        # Pixels closer to 0 than eps move to x - eps: below 0, on the border of the ball.
        escaped = torch.where(inputs < self.eps, inputs - self.eps, adversarial)
        if result is None:
            return escaped, None
        return escaped, AttackResult(
            escaped, result.success, result.logits, result.success_step, 0, 0
        )


class ShrinkingIFGSM(IFGSM):
    """A broken attack whose step shrinks as eps grows: robust accuracy rises with eps."""

    def _default_alpha(self, eps: Tensor) -> Tensor:
        return (0.1 - eps).clamp_min(0) / self.steps


class NoisyModel(nn.Module):
    """A model with noise that eval mode does not switch off: eps = 0 changes its answers."""

    def __init__(self, model: nn.Module, scale: float = 5.0) -> None:
        super().__init__()
        self.model = model
        self.scale = scale

    def forward(self, inputs: Tensor) -> Tensor:
        logits = self.model(inputs)
        return logits + self.scale * torch.randn_like(logits)
