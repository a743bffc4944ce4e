"""The bookkeeping of APGD's runs: the per-sample state of one run and what the runs found for
the whole batch (best points, best losses, the first fooling point)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from advkit.attacks.apgd_rules import should_halve
from advkit.attacks.threat import ThreatModel


@dataclass
class RunState:
    """Per-sample state of one APGD run; every field's first dimension is the run's batch."""

    index: Tensor  # positions of the run's samples in the attacked batch
    labels: Tensor
    targets: Tensor | None
    x: Tensor
    previous: Tensor
    grad: Tensor
    loss: Tensor
    x_best: Tensor
    grad_best: Tensor
    loss_best: Tensor
    step_size: Tensor
    increases: Tensor  # steps since the last checkpoint that increased the loss
    halved: Tensor  # whether the step size was halved at the last checkpoint
    best_at_check: Tensor  # the best loss at the last checkpoint
    fool_step: Tensor  # the first point of the run that fooled the model, or -1
    adv: Tensor  # the fooling point of the highest loss so far
    adv_loss: Tensor

    @classmethod
    def begin(
        cls,
        index: Tensor,
        labels: Tensor,
        targets: Tensor | None,
        start: Tensor,
        grad: Tensor,
        loss: Tensor,
        step_size: Tensor,
    ) -> RunState:
        """The state at the start point of a run, before its first step."""
        return cls(
            index=index,
            labels=labels,
            targets=targets,
            x=start,
            previous=start,
            grad=grad,
            loss=loss,
            x_best=start,
            grad_best=grad,
            loss_best=loss,
            step_size=step_size,
            increases=torch.zeros_like(loss, dtype=torch.long),
            halved=torch.ones_like(loss, dtype=torch.bool),
            best_at_check=loss,
            fool_step=torch.full_like(loss, -1, dtype=torch.long),
            adv=start,
            adv_loss=torch.full_like(loss, -torch.inf),
        )

    def keep(self, mask: Tensor) -> None:
        """Restrict the state to the samples of the boolean ``mask``."""
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, Tensor):
                setattr(self, field.name, value[mask])

    def advance(self, x: Tensor, loss: Tensor, grad: Tensor) -> None:
        """Move to the new iterate ``x``: count an increase, keep the best point."""
        self.increases += loss > self.loss
        improved = loss > self.loss_best
        wide = per_sample_mask(improved, x)
        self.x_best = torch.where(wide, x, self.x_best)
        self.grad_best = torch.where(wide, grad, self.grad_best)
        self.loss_best = torch.where(improved, loss, self.loss_best)
        self.previous, self.x, self.grad, self.loss = self.x, x, grad, loss

    def record(self, point: int, fooled: Tensor) -> None:
        """Note the samples the current iterate (point ``point`` of the run) fools."""
        self.fool_step = torch.where(fooled & (self.fool_step < 0), point, self.fool_step)
        better = fooled & (self.loss > self.adv_loss)
        self.adv = torch.where(per_sample_mask(better, self.x), self.x, self.adv)
        self.adv_loss = torch.where(better, self.loss, self.adv_loss)

    def checkpoint(self, window: int, rho: float) -> None:
        """Halve the step size where :func:`should_halve` says so, and restart from the best."""
        halve = should_halve(
            self.increases, window, rho, self.halved, self.best_at_check, self.loss_best
        )
        wide = per_sample_mask(halve, self.x)
        self.step_size = torch.where(wide, self.step_size / 2, self.step_size)
        self.x = torch.where(wide, self.x_best, self.x)
        self.grad = torch.where(wide, self.grad_best, self.grad)
        self.halved, self.best_at_check = halve, self.loss_best
        self.increases = torch.zeros_like(self.increases)


def per_sample_mask(mask: Tensor, like: Tensor) -> Tensor:
    """A ``[N]`` mask shaped ``[N, 1, ..., 1]`` to select whole samples of ``like``."""
    return mask.view(-1, *(1,) * (like.ndim - 1))


class Outcome:
    """What the runs found for the whole batch; runs write into it as they finish samples."""

    def __init__(
        self, inputs: Tensor, clean_fooled: Tensor, clean_margin: Tensor | None = None
    ) -> None:
        self.success_step = torch.where(clean_fooled, 0, -1)
        # The highest margin over every point visited; tracked only with a clean margin given.
        self.best_margin = clean_margin
        self.adversarial = inputs.clone()
        self.best_loss = torch.full(
            clean_fooled.shape, -torch.inf, dtype=inputs.dtype, device=inputs.device
        )
        self.grad_calls = self.grad_samples = 0

    def absorb(self, state: RunState, offset: int) -> None:
        """Take the results of ``state``'s samples; point ``t`` of that run is ``offset + t``."""
        index = state.index
        fooled = state.fool_step >= 0
        self.success_step[index] = torch.where(
            fooled, offset + state.fool_step, self.success_step[index]
        )
        better = ~fooled & (state.loss_best > self.best_loss[index])
        self.best_loss[index] = torch.where(better, state.loss_best, self.best_loss[index])
        chosen = torch.where(per_sample_mask(fooled, state.adv), state.adv, state.x_best)
        update = per_sample_mask(fooled | better, chosen)
        self.adversarial[index] = torch.where(update, chosen, self.adversarial[index])

    def raise_margin(self, index: Tensor, margin: Tensor | None) -> None:
        """Keep the highest margin of the samples ``index``, given their ``margin`` now."""
        if margin is not None and self.best_margin is not None:
            self.best_margin[index] = torch.maximum(self.best_margin[index], margin)

    def take_fooled(self, index: Tensor, x: Tensor, point: int) -> None:
        """Samples ``index`` are fooled first at ``x``, point ``point`` (they leave the run)."""
        self.success_step[index] = point
        self.adversarial[index] = x


def drop_fooled(
    state: RunState, ball: ThreatModel, outcome: Outcome, offset: int
) -> tuple[RunState, ThreatModel]:
    """Hand the fooled samples to ``outcome`` and go on with the rest (early stopping)."""
    fooled = state.fool_step >= 0
    if not bool(fooled.any()):  # one host sync per step, only with early stopping
        return state, ball
    done = RunState(**{f.name: getattr(state, f.name) for f in fields(state)})
    done.keep(fooled)
    outcome.absorb(done, offset)
    state.keep(~fooled)
    return state, ball.subset(~fooled)
