"""Auto-PGD (APGD): PGD with momentum and a step size that halves on a checkpoint schedule.

The loop follows the authors' reference implementation (``fra31/auto-attack``,
``autoattack/autopgd_base.py``) rule for rule, split into small pieces: the checkpoint schedule
(``checkpoint_schedule``), the halving condition (``should_halve``), one momentum step
(``momentum_step``), the random start (``reference_start``) and the per-sample state of one run
(``_RunState``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advkit._checks import EpsArg, check_int, check_logits, check_real, check_steps
from advkit.attacks.base import Attack, AttackResult, _per_sample
from advkit.attacks.losses import dlr_loss, targeted_dlr_loss
from advkit.attacks.threat import ThreatModel

__all__ = ["APGD", "APGDT", "checkpoint_schedule", "momentum_step", "should_halve"]

APGDLoss = Literal["ce", "dlr"]
"""The loss APGD ascends: ``"ce"`` (cross-entropy) or ``"dlr"`` (:func:`dlr_loss`)."""

MOMENTUM = 0.75
"""The weight ``alpha`` of the new step against the previous one (the paper's momentum)."""

_Evaluate = Callable[[Tensor, Tensor, Tensor | None], tuple[Tensor, Tensor, Tensor]]


def checkpoint_schedule(steps: int) -> list[int]:
    r"""The iterations after which APGD checks whether to halve its step size.

    The paper places checkpoints at :math:`w_j = \lceil p_j N \rceil` for :math:`p_0 = 0`,
    :math:`p_1 = 0.22`, :math:`p_{j+1} = p_j + \max(p_j - p_{j-1} - 0.03, 0.06)`. The reference
    implementation, followed here, computes it in whole iterations: the first window is
    ``max(int(0.22 N), 1)`` steps, each next window ``max(int(0.03 N), 1)`` steps shorter, but
    never shorter than ``max(int(0.06 N), 1)`` (for ``N = 100`` both give 22, 41, 57, 70, 80, 87,
    93, 99).

    Args:
        steps: The number of iterations ``N`` of a run, >= 1.

    Returns:
        The checkpoints ``w_1 < w_2 < ... <= steps``: the step size is checked after step ``w_j``
        (counting steps from 1). The window of checkpoint ``j`` is ``w_j - w_{j-1}``, ``w_0 = 0``.

    Example:
        >>> checkpoint_schedule(100)
        [22, 41, 57, 70, 80, 87, 93, 99]
    """
    steps = check_steps(steps)
    window = max(int(0.22 * steps), 1)
    shrink = max(int(0.03 * steps), 1)
    shortest = max(int(0.06 * steps), 1)
    points: list[int] = []
    at = 0
    while at + window <= steps:
        at += window
        points.append(at)
        window = max(window - shrink, shortest)
    return points


def should_halve(
    increases: Tensor,
    window: int,
    rho: float,
    halved_before: Tensor,
    best_before: Tensor,
    best_now: Tensor,
) -> Tensor:
    """APGD's two conditions for halving the step size at a checkpoint, per sample.

    1. The loss increased in at most ``rho * window`` of the ``window`` steps since the last
       checkpoint (the reference's ``<=``; the paper writes "fewer than").
    2. The step size was not halved at the last checkpoint and the best loss has not improved
       since it.

    Args:
        increases: How many steps since the last checkpoint increased the loss, ``[N]``.
        window: The number of steps since the last checkpoint.
        rho: The fraction of the first condition, in ``(0, 1]``.
        halved_before: Whether the step size was halved at the last checkpoint, ``[N]`` bool.
            The reference counts the start of the run as a halving, so condition 2 cannot fire
            at the first checkpoint.
        best_before: The best loss at the last checkpoint (at the start of the run for the
            first), ``[N]``.
        best_now: The best loss now, ``[N]``.

    Returns:
        ``[N]`` bool: halve the step size of these samples and restart them from their best point.
    """
    oscillating = increases <= rho * window
    stalled = ~halved_before & (best_before >= best_now)
    return oscillating | stalled


def momentum_step(
    ball: ThreatModel, x: Tensor, previous: Tensor, grad: Tensor, step_size: Tensor, alpha: float
) -> Tensor:
    r"""One APGD step: a projected steepest-ascent step, then momentum, then projection again.

    .. math::
        z = P(x + \eta\, d(g)), \qquad
        x' = P\big(x + \alpha (z - x) + (1 - \alpha)(x - x_{prev})\big)

    with ``d`` the threat model's steepest-ascent direction (``sign`` for L-inf, ``g/||g||_2``
    for L2) and ``P`` its projection; the operations in the reference's order. The first step of
    a run uses ``alpha = 1`` (no momentum).

    Args:
        ball: The threat model of the samples.
        x: The current iterate.
        previous: The iterate before it (``x`` itself at the first step).
        grad: The loss gradient at ``x``.
        step_size: Per-sample step size ``eta``, ``[N, 1, ..., 1]``.
        alpha: The weight of the new step, ``0.75`` (:data:`MOMENTUM`), ``1`` at the first step.
    """
    z = ball.step(x, grad, step_size)
    return ball.project(x + (z - x) * alpha + (x - previous) * (1 - alpha))


def reference_start(ball: ThreatModel, generator: torch.Generator | None) -> Tensor:
    """The random start of the reference implementation, clipped to the box.

    L-inf: ``x0 + eps * u / max|u|`` with ``u`` uniform in ``[-1, 1]`` per element (a corner
    of the direction ``u`` on the ball's surface). L2: ``x0 + eps * g / ||g||_2`` with ``g``
    Gaussian (uniform on the sphere). Unlike :meth:`~advkit.attacks.ThreatModel.random_point`,
    the perturbation has norm ``eps`` before clipping, as in the reference.
    """
    x0 = ball.center
    flat_shape = (x0.shape[0],) + (1,) * (x0.ndim - 1)
    if ball.norm == "Linf":
        noise = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        noise = 2 * noise - 1
        scale = noise.abs().reshape(x0.shape[0], -1).amax(dim=1).view(flat_shape)
    else:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        scale = torch.linalg.vector_norm(noise.reshape(x0.shape[0], -1), dim=1).view(flat_shape)
    return ball.project(x0 + ball.eps * noise / (scale + 1e-12))


@dataclass
class _RunState:
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
    ) -> _RunState:
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
        wide = _per_sample_mask(improved, x)
        self.x_best = torch.where(wide, x, self.x_best)
        self.grad_best = torch.where(wide, grad, self.grad_best)
        self.loss_best = torch.where(improved, loss, self.loss_best)
        self.previous, self.x, self.grad, self.loss = self.x, x, grad, loss

    def record(self, point: int, fooled: Tensor) -> None:
        """Note the samples the current iterate (point ``point`` of the run) fools."""
        self.fool_step = torch.where(fooled & (self.fool_step < 0), point, self.fool_step)
        better = fooled & (self.loss > self.adv_loss)
        self.adv = torch.where(_per_sample_mask(better, self.x), self.x, self.adv)
        self.adv_loss = torch.where(better, self.loss, self.adv_loss)

    def checkpoint(self, window: int, rho: float) -> None:
        """Halve the step size where :func:`should_halve` says so, and restart from the best."""
        halve = should_halve(
            self.increases, window, rho, self.halved, self.best_at_check, self.loss_best
        )
        wide = _per_sample_mask(halve, self.x)
        self.step_size = torch.where(wide, self.step_size / 2, self.step_size)
        self.x = torch.where(wide, self.x_best, self.x)
        self.grad = torch.where(wide, self.grad_best, self.grad)
        self.halved, self.best_at_check = halve, self.loss_best
        self.increases = torch.zeros_like(self.increases)


def _per_sample_mask(mask: Tensor, like: Tensor) -> Tensor:
    """A ``[N]`` mask shaped ``[N, 1, ..., 1]`` to select whole samples of ``like``."""
    return mask.view(-1, *(1,) * (like.ndim - 1))


class _Outcome:
    """What the runs found for the whole batch; runs write into it as they finish samples."""

    def __init__(self, inputs: Tensor, clean_fooled: Tensor) -> None:
        self.success_step = torch.where(clean_fooled, 0, -1)
        self.adversarial = inputs.clone()
        self.best_loss = torch.full(
            clean_fooled.shape, -torch.inf, dtype=inputs.dtype, device=inputs.device
        )
        self.grad_calls = 0
        self.grad_samples = 0

    def absorb(self, state: _RunState, offset: int) -> None:
        """Take the results of ``state``'s samples; point ``t`` of that run is ``offset + t``."""
        index = state.index
        fooled = state.fool_step >= 0
        self.success_step[index] = torch.where(
            fooled, offset + state.fool_step, self.success_step[index]
        )
        better = ~fooled & (state.loss_best > self.best_loss[index])
        self.best_loss[index] = torch.where(better, state.loss_best, self.best_loss[index])
        chosen = torch.where(_per_sample_mask(fooled, state.adv), state.adv, state.x_best)
        update = _per_sample_mask(fooled | better, chosen)
        self.adversarial[index] = torch.where(update, chosen, self.adversarial[index])


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
        loss: ``"ce"`` (cross-entropy) or ``"dlr"`` (:func:`~advkit.attacks.dlr_loss`, needs
            at least 3 classes).
        rho: The fraction of increasing steps below which the step size halves, in ``(0, 1]``.
        seed: Seed of the random starts when :meth:`~advkit.attacks.Attack.run` gets no
            ``generator``; ``None`` draws from the global RNG.
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
        loss: APGDLoss = "ce",
        rho: float = 0.75,
        seed: int | None = 0,
        **kwargs: Any,
    ) -> None:
        if loss not in ("ce", "dlr"):
            raise ValueError(f"loss must be 'ce' or 'dlr', got {loss!r}")
        super().__init__(eps=eps, norm=norm, **kwargs)
        self.loss = loss  # type: ignore[assignment]  # APGD names its loss; see _loss
        if self.targeted and loss != "ce":
            raise ValueError(
                "a targeted APGD needs loss='ce' (labels are the targets); "
                "for the targeted DLR loss use APGDT"
            )
        self.steps = check_steps(steps)
        self.n_restarts = check_int(n_restarts, "n_restarts", minimum=1)
        self.rho = check_real(rho, "rho", low=0.0, high=1.0, open_low=True)
        self.seed = None if seed is None else check_int(seed, "seed")

    # -- the public counts ---------------------------------------------------------------------

    def _runs(self) -> int:
        """How many runs a robust sample goes through."""
        return self.n_restarts

    def iterate_count(self) -> int:
        """How many points the attack visits per sample: the range of ``success_step``.

        ``1 + runs * (steps + 1)``: the clean input, then each run's start and steps (runs:
        ``n_restarts``; for :class:`APGDT` ``n_target_classes * n_restarts``).
        """
        return 1 + self._runs() * (self.steps + 1)

    # -- the loss ------------------------------------------------------------------------------

    def _loss(self, logits: Tensor, labels: Tensor, targets: Tensor | None) -> Tensor:
        """The per-sample loss ascended."""
        if self.loss == "dlr":
            return dlr_loss(logits, labels)
        loss = F.cross_entropy(logits, labels, reduction="none")
        return -loss if self.targeted else loss

    def _check_classes(self, num_classes: int) -> None:
        if self.loss == "dlr" and num_classes < 3:
            raise ValueError(f"loss='dlr' needs at least 3 classes, the model has {num_classes}")

    def _run_targets(self, clean_logits: Tensor) -> list[Tensor | None]:
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
        with torch.no_grad():
            clean_logits = model(inputs)
        check_logits(clean_logits, inputs.shape[0], labels)
        self._check_classes(clean_logits.shape[1])
        if generator is None and self.seed is not None:
            generator = torch.Generator(device=inputs.device).manual_seed(self.seed)

        ball = self.threat_model(inputs, _per_sample(self.eps, inputs), self.bounds)
        # A sample with eps = 0 has one admissible point, the clean input (point 0): no run.
        movable = ball.eps.reshape(inputs.shape[0], -1)[:, 0] > 0
        outcome = _Outcome(inputs, self.is_success(clean_logits.detach(), labels))
        evaluate = self._evaluator(model, outcome)
        for run, targets in enumerate(self._run_targets(clean_logits.detach())):
            todo = (outcome.success_step < 0) & movable
            if not bool(todo.any()):
                break
            index = todo.nonzero().flatten()
            self._single_run(
                evaluate,
                ball.subset(todo),
                index,
                labels[index],
                None if targets is None else targets[index],
                generator,
                early_stop,
                outcome,
                offset=1 + run * (self.steps + 1),
            )

        # Every returned point is a visited one, already projected; projecting again guards
        # against rounding (the unmoved samples keep the clean input, which is inside).
        projected = ball.project(outcome.adversarial)
        adversarial = torch.where(
            _per_sample_mask(movable, inputs), projected, outcome.adversarial
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

    def _evaluator(self, model: nn.Module, outcome: _Outcome) -> _Evaluate:
        """``evaluate(x, labels, targets) -> (logits, loss, grad)``, counted in ``outcome``."""

        def evaluate(
            x: Tensor, labels: Tensor, targets: Tensor | None
        ) -> tuple[Tensor, Tensor, Tensor]:
            x = x.detach().requires_grad_(True)
            with torch.enable_grad():
                logits = model(x)
                check_logits(logits, x.shape[0], None)
                loss = self._loss(logits, labels, targets)
                # Input gradients only: the parameters are frozen by Attack.run's guard.
                (grad,) = torch.autograd.grad(loss.sum(), x)
            outcome.grad_calls += 1
            outcome.grad_samples += x.shape[0]
            return logits.detach(), loss.detach(), grad

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
        outcome: _Outcome,
        offset: int,
    ) -> None:
        """One run from a random start on the samples ``index``; results go to ``outcome``."""
        start = reference_start(ball, generator)
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
        outcome: _Outcome,
        offset: int,
    ) -> None:
        """The APGD loop of one run from ``start``."""
        logits, loss, grad = evaluate(start, labels, targets)
        state = _RunState.begin(index, labels, targets, start, grad, loss, 2 * ball.eps)
        state.record(0, self.is_success(logits, labels))
        windows = _windows(self.steps)
        for step in range(1, self.steps + 1):
            if early_stop:
                state, ball = _drop_fooled(state, ball, outcome, offset)
                if state.index.numel() == 0:
                    return
            alpha = 1.0 if step == 1 else MOMENTUM
            x = momentum_step(ball, state.x, state.previous, state.grad, state.step_size, alpha)
            logits, loss, grad = evaluate(x, state.labels, state.targets)
            state.advance(x, loss, grad)
            state.record(step, self.is_success(logits, state.labels))
            if step in windows:
                state.checkpoint(windows[step], self.rho)
        outcome.absorb(state, offset)


def _windows(steps: int) -> dict[int, int]:
    """``checkpoint -> window`` of ``checkpoint_schedule``."""
    points = checkpoint_schedule(steps)
    return {point: point - before for point, before in zip(points, [0, *points[:-1]], strict=True)}


def _drop_fooled(
    state: _RunState, ball: ThreatModel, outcome: _Outcome, offset: int
) -> tuple[_RunState, ThreatModel]:
    """Hand the fooled samples to ``outcome`` and go on with the rest (early stopping)."""
    fooled = state.fool_step >= 0
    if not bool(fooled.any()):  # one host sync per step, only with early stopping
        return state, ball
    done = _RunState(**{f.name: getattr(state, f.name) for f in fields(state)})
    done.keep(fooled)
    outcome.absorb(done, offset)
    state.keep(~fooled)
    return state, ball.subset(~fooled)


class APGDT(APGD):
    """APGD-T: APGD on the targeted DLR loss, one run per target among the top classes.

    For target rank ``k = 2 .. n_target_classes + 1`` (and each of ``n_restarts`` restarts) one
    APGD run attacks the samples still robust, ascending :func:`~advkit.attacks.targeted_dlr_loss`
    towards the class with the ``k``-th largest clean logit. A sample counts as fooled when it
    is misclassified (as any class), as in the reference. Run ``r`` in that order (target-major)
    visits points ``1 + r * (steps + 1) + t``, after point 0, the clean input.

    Args:
        eps: Radius of the ball, a float or a per-sample tensor ``[N]``.
        norm: ``"Linf"`` or ``"L2"``.
        steps: Iterations per run, >= 1.
        n_restarts: Runs per target class, >= 1.
        n_target_classes: How many target classes to try, >= 1 and below the number of
            classes of the model (checked at call time; at least 4 classes are needed).
        rho: The fraction of increasing steps below which the step size halves, in ``(0, 1]``.
        seed: Seed of the random starts when :meth:`~advkit.attacks.Attack.run` gets no
            ``generator``; ``None`` draws from the global RNG.
        **kwargs: ``bounds`` and ``model_mode`` of :class:`~advkit.attacks.Attack`.

    Raises:
        ValueError: If a setting is out of range, or ``targeted=True`` is given (the targets are
            chosen by the attack; labels are the true labels); at call time if
            ``n_target_classes`` is not below the number of classes or there are fewer than 4.

    References:
        Croce and Hein, "Reliable Evaluation of Adversarial Robustness with an Ensemble of
        Diverse Parameter-free Attacks", ICML 2020 (reference code: ``fra31/auto-attack``,
        ``APGDAttack_targeted``).

    Example:
        >>> import torch
        >>> from advkit.attacks import APGDT
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5))
        >>> x, y = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 4])
        >>> attack = APGDT(eps=8 / 255, steps=5, n_target_classes=3)
        >>> result = attack.run(model, x, y)
        >>> attack.iterate_count(), int(result.success_step.max()) < attack.iterate_count()
        (19, True)
    """

    def __init__(
        self,
        *,
        eps: EpsArg,
        norm: Literal["Linf", "L2"] = "Linf",
        steps: int = 100,
        n_restarts: int = 1,
        n_target_classes: int = 9,
        rho: float = 0.75,
        seed: int | None = 0,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("targeted", False):
            raise ValueError(
                "APGDT chooses its own target classes; pass the true labels and targeted=False"
            )
        if "loss" in kwargs:
            raise TypeError("APGDT always uses the targeted DLR loss; it takes no loss argument")
        super().__init__(
            eps=eps, norm=norm, steps=steps, n_restarts=n_restarts, rho=rho, seed=seed, **kwargs
        )
        self.loss = "dlr-targeted"  # type: ignore[assignment]
        self.n_target_classes = check_int(n_target_classes, "n_target_classes", minimum=1)

    def _runs(self) -> int:
        return self.n_target_classes * self.n_restarts

    def _loss(self, logits: Tensor, labels: Tensor, targets: Tensor | None) -> Tensor:
        assert targets is not None  # internal invariant: every APGDT run has targets
        return targeted_dlr_loss(logits, labels, targets)

    def _check_classes(self, num_classes: int) -> None:
        if self.n_target_classes >= num_classes:
            raise ValueError(
                f"n_target_classes must be < the number of classes {num_classes}, "
                f"got {self.n_target_classes}"
            )
        if num_classes < 4:
            raise ValueError(f"APGDT needs at least 4 classes, the model has {num_classes}")

    def _run_targets(self, clean_logits: Tensor) -> list[Tensor | None]:
        ranked = clean_logits.sort(dim=1)[1]  # ascending, as the reference
        return [
            ranked[:, -rank]
            for rank in range(2, self.n_target_classes + 2)
            for _ in range(self.n_restarts)
        ]
