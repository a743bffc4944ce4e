"""Auto-PGD (APGD): PGD with momentum and a step size that halves on a checkpoint schedule.

The loop follows the authors' reference implementation (``fra31/auto-attack``,
``autoattack/autopgd_base.py``) rule for rule, split into small pieces: the rules in
:mod:`advkit.attacks.apgd_rules` (the checkpoint schedule, the halving condition, one momentum
step, the random start), the per-sample bookkeeping of a run in ``_apgd_state``, and the loop
here. The targeted variant is :class:`~advkit.attacks.APGDT` (``apgdt.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advkit._checks import (
    EpsArg,
    check_bool,
    check_differentiable,
    check_int,
    check_logits,
    check_real,
    check_steps,
)
from advkit.attacks._apgd_state import Outcome, RunState, drop_fooled, per_sample_mask
from advkit.attacks.a3_rules import DirectionStats, adi_weights, keep_highest, margin_loss
from advkit.attacks.apgd_rules import (
    MOMENTUM,
    checkpoint_windows,
    momentum_step,
    reference_start,
)
from advkit.attacks.base import Attack, AttackResult, LossFn, _arguments, _per_sample
from advkit.attacks.losses import dlr_loss
from advkit.attacks.masking import warn_probabilities
from advkit.attacks.targeting import target_classes
from advkit.attacks.threat import ThreatModel

__all__ = ["APGD"]

APGDLoss = Literal["ce", "dlr"]
"""The loss APGD ascends: ``"ce"`` (cross-entropy) or ``"dlr"`` (:func:`dlr_loss`)."""

_LOSSES: dict[str, LossFn] = {
    "ce": functools.partial(F.cross_entropy, reduction="none"),
    "dlr": dlr_loss,
}
"""The per-sample loss of each name APGD's ``loss`` takes."""

_Evaluate = Callable[[Tensor, Tensor, Tensor | None, Tensor | None], tuple[Tensor, Tensor, Tensor]]


class APGD(Attack):
    """Auto-PGD: momentum PGD whose step size halves when progress stalls.

    Each run starts at a random point of the ball (``reference_start``) with step size
    ``2 * eps`` and takes ``steps`` momentum steps (``momentum_step``). At the checkpoints
    of ``checkpoint_schedule`` each sample's step size is halved, and the sample restarted
    from its best point (highest loss so far) with that point's gradient, when
    ``should_halve`` holds. Samples the model misclassifies at the clean input are not
    attacked (as in the reference); random restarts run only on the samples no earlier run
    fooled.

    **Visited points** (the range of ``success_step``, see :meth:`iterate_count`): point 0 is the
    clean input; run ``r`` (``0 <= r < n_restarts``) visits points ``1 + r * (steps + 1) + t``
    for ``t = 0`` (its random start) to ``steps``.

    **Returned points**: for a fooled sample, the point of highest loss among those that fooled
    the model (with ``early_stop=True``, the first one: the sample leaves the batch there); for a
    robust sample, the point of highest loss over all runs. All lie in the ball and the box.

    Deviations from the reference, and why: (1) the first checkpoint counts the first step as
    an increase if it beats the loss at the start point, as the paper writes; the reference
    compares it with an unwritten slot of zeros. (2) The randomness comes from a
    :class:`torch.Generator` (``seed`` or the ``generator`` of
    :meth:`~advkit.attacks.Attack.run`), never by reseeding the global RNG. (3) The gradient of
    an L2 step is normalized without the reference's ``+1e-12``, as
    :class:`~advkit.attacks.L2Ball` does (a zero gradient gives no step). (4) Samples with
    ``eps = 0`` are not attacked: the clean input is their only admissible point.

    Args:
        eps: Radius of the ball, a float or a per-sample tensor ``[N]``.
        norm: ``"Linf"`` or ``"L2"``.
        steps: Iterations per run, >= 1 (the reference's ``n_iter``).
        n_restarts: Runs from fresh random starts, >= 1.
        loss: ``"ce"`` (cross-entropy), ``"dlr"`` (:func:`~advkit.attacks.dlr_loss`, needs
            at least 3 classes), or a callable ``loss(logits, labels)`` returning per-sample
            ``[N]`` losses. The attribute ``loss`` keeps what was given; ``loss_fn`` holds the
            per-sample function it names.
        rho: The fraction of increasing steps below which the step size halves, in ``(0, 1]``.
        seed: Seed of the random starts when :meth:`~advkit.attacks.Attack.run` gets no
            ``generator``; ``None`` draws from the global RNG.
        eot_iter: Expectation over transformation (Athalye et al., ICML 2018) for randomized
            models, as the reference's ``eot_iter``: every gradient is the mean over
            ``eot_iter`` forward+backward passes at the same point, and the logits and loss of
            the last pass are the ones recorded (success and best-loss tracking). AutoAttack's
            ``version="rand"`` uses 20; 1 (the default) is plain APGD.
        exit_fooled: Per-sample exits: a sample leaves the batch at the first point that fools
            the model, on every call (as ``run(..., early_stop=True)``). The set of fooled
            samples is the same; only the work, and the returned point of a fooled sample (the
            first fooling one instead of the fooling one of highest loss), differ. The default
            ``False`` is the reference: fooled samples keep maximizing the loss.
        keep_share: A3's online statistics-based discarding
            (:func:`~advkit.attacks.keep_highest`), in ``(0, 1]``: each run after the
            first attacks only this share of the still-robust samples, those of highest margin
            (:func:`~advkit.attacks.margin_loss`) over every point visited so far; the rest
            skip that run (and count robust if no run fools them). The default 1.0 attacks
            them all (the reference). Discarding only ever spares a sample; it never makes one
            count fooled.
        adi_steps: A3's adaptive direction initialization: each run first takes this many
            full-radius steps from its random start along the gradient of ``w . f(x)``
            (:func:`~advkit.attacks.adi_weights`: random logit weights, unbiased in
            the first run, whose fooled samples' statistics then bias later runs' weights
            towards the run's target: :class:`APGDT`'s, or for APGD the 2nd, 3rd, ...
            highest clean logit's class), then its ``steps`` APGD steps from there. A sample
            fooled during these steps leaves the run at once, as in A3. 0 (the default) is
            the reference's random start; A3 uses 7.
        **kwargs: ``bounds``, ``targeted`` and ``model_mode`` of
            :class:`~advkit.attacks.Attack`. ``targeted=True`` (labels are targets; the
            attack descends their cross-entropy) needs ``loss="ce"``; for targeted DLR use
            :class:`APGDT`.

    Raises:
        ValueError: If a setting is out of range, ``loss`` or ``norm`` is unknown, or
            ``targeted=True`` with ``loss="dlr"``; at call time, if ``loss="dlr"`` and the
            model has fewer than 3 classes.

    References:
        Croce and Hein, "Reliable Evaluation of Adversarial Robustness with an Ensemble of
        Diverse Parameter-free Attacks", ICML 2020 (reference code: ``fra31/auto-attack``).
        ``keep_share`` and ``adi_steps``: Liu et al., "Practical Evaluation of Adversarial
        Robustness via Adaptive Auto Attack", CVPR 2022 (``advkit.attacks.a3_rules``).

    Example:
        >>> import torch
        >>> from advkit.attacks import APGD
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
        >>> x, y = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])
        >>> result = APGD(eps=8 / 255, steps=10, loss="dlr").run(model, x, y)
        >>> bool(((result.adversarial - x).abs() <= 8 / 255 + 1e-7).all())
        True
    """

    def __init__(
        self,
        *,
        eps: EpsArg,
        norm: Literal["Linf", "L2"] = "Linf",
        steps: int = 100,
        n_restarts: int = 1,
        loss: APGDLoss | LossFn = "ce",
        rho: float = 0.75,
        seed: int | None = 0,
        eot_iter: int = 1,
        exit_fooled: bool = False,
        keep_share: float = 1.0,
        adi_steps: int = 0,
        **kwargs: Any,
    ) -> None:
        self._record_settings(**_arguments(locals()))
        if not callable(loss) and loss not in ("ce", "dlr"):
            raise ValueError(
                f"loss must be 'ce', 'dlr' or a callable loss(logits, labels) returning "
                f"per-sample [N] losses, got {loss!r}"
            )
        super().__init__(eps=eps, norm=norm, **kwargs)
        self.loss = loss  # as given: a name or a callable
        self.loss_fn = _LOSSES[loss] if isinstance(loss, str) else loss  # per-sample
        if self.targeted and loss == "dlr":
            raise ValueError(
                "a targeted APGD needs loss='ce' (labels are the targets); "
                "for the targeted DLR loss use APGDT"
            )
        self.steps = check_steps(steps)
        self.n_restarts = check_int(n_restarts, "n_restarts", minimum=1)
        self.rho = check_real(rho, "rho", low=0.0, high=1.0, open_low=True)
        self.seed = None if seed is None else check_int(seed, "seed")
        self.eot_iter = check_int(eot_iter, "eot_iter", minimum=1)
        self.exit_fooled = check_bool(exit_fooled, "exit_fooled")
        self.keep_share = check_real(keep_share, "keep_share", low=0.0, high=1.0, open_low=True)
        self.adi_steps = check_int(adi_steps, "adi_steps", minimum=0)

    # -- the public counts ---------------------------------------------------------------------

    def _runs(self) -> int:
        """How many runs a robust sample goes through."""
        return self.n_restarts

    def _run_points(self) -> int:
        """Points one run visits: its random start, its ADI steps' points, its steps."""
        return 1 + self.adi_steps + self.steps

    def iterate_count(self) -> int:
        """How many points the attack visits per sample: the range of ``success_step``.

        ``1 + runs * (adi_steps + steps + 1)``: the clean input, then each run's start, ADI
        points and steps (runs: ``n_restarts``; for :class:`APGDT`
        ``n_target_classes * n_restarts``).
        """
        return 1 + self._runs() * self._run_points()

    # -- the loss ------------------------------------------------------------------------------

    def _loss(self, logits: Tensor, labels: Tensor, targets: Tensor | None) -> Tensor:
        """The per-sample loss ascended: ``loss_fn``, negated for a targeted attack."""
        loss = self.loss_fn(logits, labels)
        if loss.shape != (logits.shape[0],):
            raise ValueError(
                f"APGD's loss must return per-sample losses of shape [{logits.shape[0]}], got "
                f"shape {list(loss.shape)}"
            )
        return -loss if self.targeted else loss

    def _margin(self, logits: Tensor, labels: Tensor) -> Tensor | None:
        """The margin towards success, per sample (positive exactly where the attack
        succeeds), which discarding ranks by; ``None`` without discarding: not tracked."""
        if self.keep_share == 1:
            return None
        gap = margin_loss(logits, labels)
        return -gap if self.targeted else gap

    def _check_classes(self, num_classes: int) -> None:
        if self.loss == "dlr" and num_classes < 3:
            raise ValueError(f"loss='dlr' needs at least 3 classes, the model has {num_classes}")

    def _run_targets(
        self, model: nn.Module, inputs: Tensor, labels: Tensor, clean_logits: Tensor
    ) -> list[Tensor | None]:
        """The target of every run, per sample (``None``: untargeted loss)."""
        return [None] * self.n_restarts

    # -- the attack ----------------------------------------------------------------------------

    def _run(
        self,
        model: nn.Module,
        inputs: Tensor,
        labels: Tensor,
        generator: torch.Generator | None,
        early_stop: bool,
        track: bool,
    ) -> tuple[Tensor, AttackResult | None]:
        early_stop = early_stop or self.exit_fooled
        with torch.no_grad():
            clean_logits = model(inputs)
        check_logits(clean_logits, inputs.shape[0], labels)
        warn_probabilities(clean_logits)
        self._check_classes(clean_logits.shape[1])
        if generator is None and self.seed is not None:
            generator = torch.Generator(device=inputs.device).manual_seed(self.seed)

        ball = self.threat_model(inputs, _per_sample(self.eps, inputs), self.bounds)
        # A sample with eps = 0 has one admissible point, the clean input (point 0): no run.
        movable = ball.eps.reshape(inputs.shape[0], -1)[:, 0] > 0
        clean_logits = clean_logits.detach()
        outcome = Outcome(
            inputs, self.is_success(clean_logits, labels), self._margin(clean_logits, labels)
        )
        evaluate = self._evaluator(model, outcome)
        run_targets = self._run_targets(model, inputs, labels, clean_logits)
        stats = DirectionStats()  # what run 0's unbiased ADI steps learn, for later runs
        biases = None
        if self.adi_steps:
            biases = self._adi_targets(model, inputs, labels, clean_logits, run_targets)
        for run, targets in enumerate(run_targets):
            todo = (outcome.success_step < 0) & movable
            if not bool(todo.any()):
                break
            if run > 0 and outcome.best_margin is not None:  # discarding
                todo = keep_highest(todo, outcome.best_margin, self.keep_share)
            index = todo.nonzero().flatten()
            weights = None
            if biases is not None:
                bias = biases[run]
                weights = adi_weights(
                    labels[index], None if bias is None else bias[index],
                    clean_logits.shape[1], None if run == 0 else stats, generator, inputs.dtype,
                )  # fmt: skip
            self._single_run(
                evaluate,
                ball.subset(todo),
                index,
                labels[index],
                None if targets is None else targets[index],
                generator,
                early_stop,
                outcome,
                offset=1 + run * self._run_points(),
                adi=None if weights is None else (weights, stats if run == 0 else None),
            )

        # Every returned point is a visited one, already projected; projecting again guards
        # against rounding (the unmoved samples keep the clean input, which is inside).
        projected = ball.project(outcome.adversarial)
        adversarial = torch.where(
            per_sample_mask(movable, inputs), projected, outcome.adversarial
        ).detach()
        if not track:
            return adversarial, None
        with torch.no_grad():
            logits = model(adversarial).detach()
        check_logits(logits, inputs.shape[0], None)
        return adversarial, AttackResult(
            adversarial=adversarial,
            success=self.is_success(logits, labels),
            logits=logits,
            success_step=outcome.success_step,
            grad_calls=outcome.grad_calls,
            grad_samples=outcome.grad_samples,
        )

    def _adi_targets(
        self,
        model: nn.Module,
        inputs: Tensor,
        labels: Tensor,
        clean_logits: Tensor,
        run_targets: list[Tensor | None],
    ) -> list[Tensor | None]:
        """The class each run's ADI weights favour: ``None`` in run 0 (unbiased), then the
        run's target, or for untargeted runs the class of the 2nd, 3rd, ... highest clean
        logit, cycling (the reference's ``"logits"`` order; the authors' ``sorted_logits``)."""
        if len(run_targets) < 2 or run_targets[1] is not None:
            return [None, *run_targets[1:]]
        ranked = target_classes(
            model, inputs, labels, clean_logits, clean_logits.shape[1] - 1,
            targeting="logits", norm=self.norm,
        )  # fmt: skip
        later = [ranked[:, (run - 1) % ranked.shape[1]] for run in range(1, len(run_targets))]
        return [None, *later]

    def _evaluator(self, model: nn.Module, outcome: Outcome) -> _Evaluate:
        """``evaluate(x, labels, targets, weights) -> (logits, loss, grad)``, counted in
        ``outcome``; with logit ``weights`` ``[N, C]`` the loss is ``(weights * logits).sum(1)``
        (ADI's), else the attack's."""

        def evaluate(
            x: Tensor, labels: Tensor, targets: Tensor | None, weights: Tensor | None = None
        ) -> tuple[Tensor, Tensor, Tensor]:
            total: Tensor | None = None
            for _ in range(self.eot_iter):  # one pass unless EOT
                point = x.detach().requires_grad_(True)
                with torch.enable_grad():
                    logits = model(point)
                    check_logits(logits, x.shape[0], None)
                    if weights is None:
                        loss = self._loss(logits, labels, targets)
                    else:
                        loss = (logits * weights).sum(dim=1)
                    check_differentiable(loss, type(self).__name__)
                    # Input gradients only: the parameters are frozen by Attack.run's guard.
                    (grad,) = torch.autograd.grad(loss.sum(), point)
                total = grad if total is None else total + grad
            outcome.grad_calls += self.eot_iter
            outcome.grad_samples += self.eot_iter * x.shape[0]
            mean = grad if self.eot_iter == 1 else total / self.eot_iter  # type: ignore[operator]
            return logits.detach(), loss.detach(), mean

        return evaluate

    def _single_run(
        self,
        evaluate: _Evaluate,
        ball: ThreatModel,
        index: Tensor,
        labels: Tensor,
        targets: Tensor | None,
        generator: torch.Generator | None,
        early_stop: bool,
        outcome: Outcome,
        offset: int,
        adi: tuple[Tensor, DirectionStats | None] | None = None,
    ) -> None:
        """One run from a random start on the samples ``index``; results go to ``outcome``.

        With ``adi`` (the run's logit weights, and the statistics to gather or ``None``), the
        run's ADI steps come first (points ``offset`` to ``offset + adi_steps - 1``); the
        samples they fool leave, the rest go on from the last ADI point.
        """
        start = reference_start(ball, generator)
        if adi is not None:
            weights, stats = adi
            for point in range(offset, offset + self.adi_steps):
                logits, _, grad = evaluate(start, labels, targets, weights)
                fooled = self.is_success(logits, labels)
                outcome.raise_margin(index, self._margin(logits, labels))
                if stats is not None:
                    stats.update(weights, labels, logits.argmax(dim=1), fooled)
                if bool(fooled.any()):  # one host sync per ADI step
                    outcome.take_fooled(index[fooled], start[fooled], point)
                    kept = ~fooled
                    ball, index, labels = ball.subset(kept), index[kept], labels[kept]
                    start, grad, weights = start[kept], grad[kept], weights[kept]
                    targets = None if targets is None else targets[kept]
                    if index.numel() == 0:
                        return
                start = ball.step(start, grad, ball.eps)
            offset += self.adi_steps
        self._iterate(evaluate, ball, start, index, labels, targets, early_stop, outcome, offset)

    def _iterate(
        self,
        evaluate: _Evaluate,
        ball: ThreatModel,
        start: Tensor,
        index: Tensor,
        labels: Tensor,
        targets: Tensor | None,
        early_stop: bool,
        outcome: Outcome,
        offset: int,
    ) -> None:
        """The APGD loop of one run from ``start``."""
        logits, loss, grad = evaluate(start, labels, targets, None)
        outcome.raise_margin(index, self._margin(logits, labels))
        state = RunState.begin(index, labels, targets, start, grad, loss, 2 * ball.eps)
        state.record(0, self.is_success(logits, labels))
        windows = checkpoint_windows(self.steps)
        for step in range(1, self.steps + 1):
            if early_stop:
                state, ball = drop_fooled(state, ball, outcome, offset)
                if state.index.numel() == 0:
                    return
            alpha = 1.0 if step == 1 else MOMENTUM
            x = momentum_step(ball, state.x, state.previous, state.grad, state.step_size, alpha)
            logits, loss, grad = evaluate(x, state.labels, state.targets, None)
            outcome.raise_margin(state.index, self._margin(logits, state.labels))
            state.advance(x, loss, grad)
            state.record(step, self.is_success(logits, state.labels))
            if step in windows:
                state.checkpoint(windows[step], self.rho)
        outcome.absorb(state, offset)
