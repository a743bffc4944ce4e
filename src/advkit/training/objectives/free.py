"""Free adversarial training: each batch replayed m times, the perturbation carried along."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from advkit._checks import (
    check_batch,
    check_batch_values,
    check_bounds,
    check_eps_scale,
    check_int,
    check_real,
)
from advkit.attacks.threat import Norm, ThreatModel, threat_model
from advkit.training.objectives.base import (
    Objective,
    ObjectiveOutput,
    TrainingModel,
    accuracy,
)
from advkit.training.objectives.mixed import clean_metrics

__all__ = ["FreeAT"]


class FreeAT(Objective):
    r"""Free adversarial training ("adversarial training for free").

    The Trainer replays each batch ``m = replays`` times. Every replay makes one training pass
    on :math:`\mathrm{clip}_{[lo, hi]}(x + \delta)` and one backward pass that gives both the
    weight gradient (for the optimizer step) and the gradient :math:`g` with respect to
    :math:`\delta`, which then moves

    .. math:: \delta \leftarrow \Pi_{\|\delta\| \le \epsilon}\big(\delta + \alpha\, d(g)\big)

    (``d = sign`` and a clip to ``[-eps, eps]`` on L-inf; on L2 the
    :class:`~advkit.attacks.L2Ball` step: ``g / ||g||_2``, then scaled into the ball). The
    perturbation is carried across replays *and* across batches (sample ``i`` of a batch
    starts from the ``delta`` left by sample ``i`` of the previous one), as in Shafahi et al.'s
    ``free_train.py``; it starts at zero and is saved in checkpoints, so a resumed run
    continues exactly. As there, the model sees the perturbed input clipped to the bounds, and
    ``delta`` itself is clipped to the ball only.

    Every replay is an optimizer step: ``trainer.global_step`` counts ``m`` per batch, and a
    ``scheduler_interval="step"`` scheduler steps ``m`` times per batch. An epoch of the Trainer
    is one pass over the data (``m`` passes of gradient work); the paper trains for the natural
    training's epochs divided by ``m``: use ``fit(epochs=objective.epochs_for(natural))``.

    Args:
        eps: Radius of the perturbation.
        replays: ``m``, the times each batch is replayed, >= 1.
        alpha: Step of ``delta`` per replay; ``eps`` by default (the paper's choice).
        norm: ``"Linf"`` (the paper's) or ``"L2"``.
        bounds: The box ``(lo, hi)`` inputs live in.
        clean_accuracy: Also log clean accuracy (``train_accuracy``) from one extra no-grad
            forward pass in eval mode on the first replay of each batch.

    Metrics: ``adv_accuracy`` (on every replay's perturbed inputs) and, with
    ``clean_accuracy``, ``accuracy``.

    References:
        Shafahi, Najibi, Ghiasi, Xu, Dickerson, Studer, Davis, Taylor and Goldstein,
        "Adversarial Training for Free!", NeurIPS 2019 (code: mahyarnajibi/FreeAdversarialTraining).

    Example:
        >>> objective = FreeAT(eps=8 / 255, replays=4)
        >>> objective.epochs_for(40)
        10
    """

    def __init__(
        self,
        *,
        eps: float,
        replays: int = 4,
        alpha: float | None = None,
        norm: Norm = "Linf",
        bounds: tuple[float, float] = (0.0, 1.0),
        clean_accuracy: bool = True,
    ) -> None:
        self.eps_value = check_real(eps, "eps", low=0)
        self.replays = check_int(replays, "replays", minimum=1)
        self.alpha = None if alpha is None else check_real(alpha, "alpha", low=0, open_low=True)
        threat_model(norm)  # raises on an unknown norm
        self.norm: Norm = norm
        self.bounds = check_bounds(bounds)
        check_eps_scale(self.eps_value, self.bounds, norm)
        # delta lives in a ball around 0, clipped to the ball only (as in free_train.py): the
        # attacks' threat model in a box no step can reach steps and projects it.
        reach = 2 * max(self.bounds[1] - self.bounds[0], self.eps_value, 1.0)
        self._delta_box = (-reach, reach)
        self.clean_accuracy = bool(clean_accuracy)
        self.delta: Tensor | None = None
        self._replay = 0
        self._pending: tuple[Tensor, float, float, list[bool]] | None = None

    @property
    def metric_names(self) -> tuple[str, ...]:
        """``accuracy`` (with ``clean_accuracy``) and ``adv_accuracy``."""
        return ("accuracy", "adv_accuracy") if self.clean_accuracy else ("adv_accuracy",)

    @property
    def eps(self) -> float:
        """The radius of the perturbation."""
        return self.eps_value

    def epochs_for(self, natural_epochs: int) -> int:
        """Epochs of free training with the gradient budget of ``natural_epochs`` epochs of
        natural training: ``ceil(natural_epochs / replays)``, the paper's rule."""
        return math.ceil(check_int(natural_epochs, "natural_epochs", minimum=1) / self.replays)

    def __call__(
        self, model: TrainingModel, inputs: Tensor, labels: Tensor, eps_scale: float
    ) -> ObjectiveOutput:
        """``CE(f(clip(x + delta)), y)``; the backward pass's ``delta`` gradient is kept."""
        eps = self.eps_value * eps_scale
        alpha = (self.eps_value if self.alpha is None else self.alpha) * eps_scale
        # The attacks' checks of a batch; a NaN input is left to the Trainer's non-finite
        # loss policy (``nonfinite_loss="skip"`` skips such a batch), the rest is checked.
        check_batch(inputs, labels, self.bounds, values=False)
        has_nan = bool(torch.isnan(inputs).any())
        delta = self._carried(inputs, eps)
        delta.requires_grad_(True)
        adv_logits = model(torch.clamp(inputs + delta, *self.bounds))
        # bounds, the labels' range and finite logits (where the inputs are) in one read
        clean = torch.nan_to_num(inputs, nan=self.bounds[0]) if has_nan else inputs
        check_batch_values(clean, labels, self.bounds, adv_logits, finite=not has_nan)
        backward_ran = [False]
        if adv_logits.requires_grad:
            adv_logits.register_hook(lambda grad: backward_ran.__setitem__(0, True))
        self._pending = (delta, eps, alpha, backward_ran)
        loss = F.cross_entropy(adv_logits, labels)
        metrics = {"adv_accuracy": accuracy(adv_logits, labels)}
        if self.clean_accuracy and self._replay == 0:
            metrics.update(clean_metrics(model.module, inputs, labels))
        return ObjectiveOutput(loss, metrics)

    def after_backward(self, model: TrainingModel) -> None:
        """Move ``delta`` along its gradient from the backward pass just made, and count the
        replay; a replay without a backward pass (a non-finite loss the Trainer skipped, or an
        error) abandons its batch, so the next call is the first replay of a new batch."""
        if self._pending is None:
            return
        delta, eps, alpha, backward_ran = self._pending
        self._pending = None
        if not backward_ran[0]:
            self._replay = 0  # the Trainer moves on to the next batch
            return
        self._replay = (self._replay + 1) % self.replays
        grad = delta.grad
        if grad is None or self.delta is None or alpha == 0:
            return  # the loss does not depend on the input, or the warm-up's radius 0
        # Under AMP the gradient is scaled by a positive factor: its sign and direction are the
        # same; an overflow (inf/NaN) gives no step for those entries.
        grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
        with torch.no_grad():
            ball = self._ball(delta, eps)
            self.delta[: delta.shape[0]] = ball.step(delta.detach(), grad, alpha)

    def _carried(self, inputs: Tensor, eps: float) -> Tensor:
        """The carried perturbation for this batch (grown with zeros, or reset on a new sample
        shape), on the inputs' device and dtype, projected into the ball of radius ``eps`` (a
        run resumed with a smaller eps does not replay the larger perturbation), as a fresh
        leaf."""
        n, shape = inputs.shape[0], tuple(inputs.shape[1:])
        stored = self.delta
        if stored is None or tuple(stored.shape[1:]) != shape:
            stored = torch.zeros_like(inputs)
        else:
            stored = stored.to(device=inputs.device, dtype=inputs.dtype)
            if stored.shape[0] < n:
                extra = stored.new_zeros((n - stored.shape[0], *shape))
                stored = torch.cat([stored, extra])
        with torch.no_grad():  # the identity inside the ball, bit for bit
            stored = self._ball(stored, eps).project(stored)
        self.delta = stored
        return stored[:n].detach().clone()

    def _ball(self, like: Tensor, eps: float) -> ThreatModel:
        """The ball of radius ``eps`` around 0 that ``delta`` lives in."""
        zero = torch.zeros((), dtype=like.dtype, device=like.device)
        radius = torch.full((), eps, dtype=like.dtype, device=like.device)
        return threat_model(self.norm)(zero, radius, self._delta_box)

    def state_dict(self) -> dict[str, Any]:
        """The carried perturbation (``None`` before the first batch) and the replay index."""
        delta = self.delta.detach().cpu().clone() if self.delta is not None else None
        return {"delta": delta, "replay": self._replay}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the carried perturbation (moved to the inputs' device on first use).

        Raises:
            ValueError: If ``state`` is not what :meth:`state_dict` returns: a mapping with
                ``delta`` (``None`` or a finite floating-point tensor ``[N, ...]``) and
                ``replay`` (an int in ``[0, replays)``).
        """
        expected = "{'delta': None or a finite floating-point tensor, 'replay': int}"
        if not isinstance(state, Mapping) or set(state) != {"delta", "replay"}:
            shown = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(f"FreeAT state must be {expected}, got {shown}")
        delta, replay = state["delta"], state["replay"]
        if delta is not None and (
            not isinstance(delta, Tensor)
            or not delta.is_floating_point()
            or delta.ndim < 1
            or not bool(torch.isfinite(delta).all())
        ):
            shown = (
                type(delta).__name__
                if not isinstance(delta, Tensor)
                else f"{delta.dtype} {list(delta.shape)}"
            )
            raise ValueError(f"FreeAT state must be {expected}, got delta {shown}")
        if (
            isinstance(replay, bool)
            or not isinstance(replay, int)
            or not 0 <= replay < self.replays
        ):
            raise ValueError(
                f"FreeAT state's replay must be an int in [0, {self.replays}), got {replay!r}"
            )
        self.delta = delta.clone() if delta is not None else None
        self._replay = replay
