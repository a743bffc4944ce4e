"""The loop every iterative gradient attack shares, as one walk that its consumers follow.

:meth:`GradientAttack.iterates` returns a :class:`Walk`, which yields a :class:`Step` for
every point an attack visits; a consumer reads it and may narrow the batch (drop the samples it
is done with), or :meth:`Walk.follow` it to its end. ``__call__`` and ``run()`` are consumers of
the walk, and so is :func:`advkit.evaluation.evaluate_grid`'s trajectory sharing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from advkit._checks import (
    EpsArg,
    check_batch_values,
    check_differentiable,
    check_generator,
    check_logits,
    check_positive,
    check_steps,
)
from advkit.attacks._precision import (
    autocast_context,
    check_autocast,
    finite_gradient,
    gradient_scale,
)
from advkit.attacks.base import Attack, AttackResult, ModelWork, _CountingModel, _per_sample
from advkit.attacks.masking import warn_probabilities
from advkit.attacks.threat import ThreatModel

__all__ = ["GradientAttack", "Step", "Walk"]

_Toward = Callable[[Tensor, Tensor], Tensor]


class Step:
    """One point of a gradient attack's walk, as :meth:`GradientAttack.iterates` yields it.

    Attributes:
        index: The point's number: 0 is the start, ``steps`` the last point.
        positions: Batch positions ``[M]`` of the samples still walked.
        inputs: Their current point ``x_k``, ``[M, ...]``.
        labels: Their labels ``[M]``.
        logits: The model's logits at ``x_k``, or ``None`` at the last point (the walk ends
            there without a forward pass; a consumer that needs them computes them).
        grad: The objective's gradient at ``x_k`` with respect to the inputs, or ``None`` at
            the last point.
        direction: What the next step follows (the gradient, or e.g. MI-FGSM's momentum), or
            ``None`` at the last point.
        grad_computed: Whether this point cost a forward+backward pass (not when the gradient
            at the start was given).
    """

    __slots__ = (
        "_toward",
        "direction",
        "grad",
        "grad_computed",
        "index",
        "inputs",
        "keep",
        "labels",
        "logits",
        "positions",
    )

    def __init__(
        self,
        index: int,
        positions: Tensor,
        inputs: Tensor,
        labels: Tensor,
        logits: Tensor | None,
        grad: Tensor | None,
        direction: Tensor | None,
        grad_computed: bool,
        toward: _Toward | None = None,
    ) -> None:
        self._toward = toward
        self.index = index
        self.positions = positions
        self.inputs = inputs
        self.labels = labels
        self.logits = logits
        self.grad = grad
        self.direction = direction
        self.grad_computed = grad_computed
        self.keep: Tensor | None = None

    @property
    def last(self) -> bool:
        """Whether this is the walk's last point (no logits, no further step)."""
        return self.direction is None

    def narrow(self, keep: Tensor) -> None:
        """Walk on with only the samples where the bool mask ``keep`` ``[M]`` is true."""
        self.keep = keep

    def toward(self, eps: Tensor, where: Tensor) -> Tensor:
        """Where this step would lead the samples ``where`` in balls of other radii.

        The attack's own step rule and step size, from ``inputs[where]`` along
        ``direction[where]``, projected on the balls of radius ``eps`` (per sample, as many as
        ``where`` selects) around their clean inputs: the last point of a run with those radii
        and this step size that shares this walk's earlier points (see
        :mod:`advkit.evaluation.trajectories`).

        Args:
            eps: Radii ``[K]``, one per selected sample.
            where: Bool mask ``[M]`` of the samples of this step, ``K`` of them true.

        Raises:
            ValueError: At the last point, which leads nowhere.
        """
        if self._toward is None or self.direction is None:
            raise ValueError("the last point of a walk has no next step")
        return self._toward(eps, where)


class Walk(Iterator[Step]):
    """A gradient attack's walk on one batch, as :meth:`GradientAttack.iterates` returns it.

    An iterator of :class:`Step` (the model stays guarded until it ends or is closed), which
    can also be followed to its end as :meth:`~advkit.attacks.Attack.run` follows it. The
    passes through the model are counted as :meth:`~advkit.attacks.Attack.run` counts them
    (:attr:`work`).
    """

    def __init__(
        self,
        attack: GradientAttack,
        model: _CountingModel,
        inputs: Tensor,
        labels: Tensor,
        steps: Generator[Step, None, None],
    ) -> None:
        self.attack = attack
        self._model, self._inputs, self._labels, self._steps = model, inputs, labels, steps

    @property
    def work(self) -> ModelWork:
        """The rows that have gone through the model on this walk so far."""
        return self._model.work

    def __next__(self) -> Step:
        return next(self._steps)

    def close(self) -> None:
        """End the walk now: the model gets its flags back."""
        self._steps.close()

    def follow(
        self, *, early_stop: bool = False, observe: Callable[[Step], None] | None = None
    ) -> AttackResult:
        """Follow the walk to its end and report it as :meth:`~advkit.attacks.Attack.run` does.

        Args:
            early_stop: Drop each sample from the walk at the first point that fools the model,
                keeping that point as its adversarial input.
            observe: Called with every step before it is judged (e.g. to read the points a
                consumer needs on the way).
        """
        result = self.attack._follow(
            self._model, self._steps, self._inputs, self._labels, early_stop, observe
        )
        return replace(result, work=self._model.work)


class GradientAttack(Attack):
    """The loop of iterative gradient attacks in a norm ball; subclasses override one piece.

    Each step evaluates ``g``, the gradient of the objective with respect to the inputs only,
    and moves to ``project(x + alpha * u)``, where ``u`` is the threat model's steepest-ascent
    direction of ``direction(g)``: its sign for L-inf, ``g / ||g||_2`` for L2. Subclasses
    choose the start (:meth:`_start`), the direction (:meth:`_direction`, e.g. momentum) and
    the default step size (:meth:`_default_alpha`).

    Args:
        eps: Radius in the norm ``norm``, a float or a per-sample tensor ``[N]``.
        steps: Number of gradient steps, >= 1.
        alpha: Step size, a float or per-sample tensor ``[N]``; ``None`` for the default of the
            subclass.
        autocast: ``None`` (the default) for full precision, or ``torch.bfloat16`` /
            ``torch.float16`` to run the model's forward (and so its backward) under
            :func:`torch.autocast`: faster on GPUs with tensor cores, at the cost of a few
            gradient signs. The iterate, the projection and the loss stay in the inputs'
            dtype, and so do the returned inputs and logits. For float16 the objective is
            scaled by the power of two >= the batch size before the backward pass (and the
            gradient divided back) so small gradients do not underflow; with either dtype, a
            NaN gradient entry from an overflow gives no step. :meth:`Attack.run` judges
            success with the same reduced-precision forward; evaluate the adversarial inputs
            in full precision for a reported figure.
        **kwargs: ``norm``, ``bounds``, ``loss``, ``targeted`` and ``model_mode`` of
            :class:`~advkit.attacks.Attack`.
    """

    starts_at_center: bool = True
    """Whether the walk starts at the clean input. A subclass whose :meth:`_start` starts
    elsewhere sets it to ``False`` (PGD does, per object, with ``random_start``)."""

    shareable_walk: bool = True
    """Whether runs of this class from one start with one step size visit the same points:
    ``run()`` and ``__call__`` return what the walk of :meth:`iterates` gives, and a point
    depends on the start, the model, the step size and the ball only. A subclass with a loop
    of its own (``_run`` or ``_walk`` overridden), or whose step rule reads ``self.steps``,
    sets it to ``False``."""

    _values_at_call = False  # checked at the walk's first point, in its one host read

    def __init__(
        self,
        *,
        eps: EpsArg,
        steps: int,
        alpha: EpsArg | None = None,
        autocast: torch.dtype | None = None,
        **kwargs: Any,
    ) -> None:
        self._record_settings(eps=eps, steps=steps, alpha=alpha, autocast=autocast, **kwargs)
        super().__init__(eps=eps, **kwargs)
        self.steps = check_steps(steps)
        self.alpha = check_positive(alpha, "alpha")
        self.autocast = check_autocast(autocast)

    # -- the walk ------------------------------------------------------------------------------

    def iterates(
        self,
        model: nn.Module,
        inputs: Tensor,
        labels: Tensor,
        *,
        generator: torch.Generator | None = None,
        start_gradient: tuple[Tensor, Tensor] | None = None,
    ) -> Walk:
        """Walk the attack: a :class:`Walk` yielding a :class:`Step` for each of the
        ``steps + 1`` points visited.

        This is the one public way into the attack's loop: ``run()`` and ``__call__`` follow
        the same walk. The consumer may call :meth:`Step.narrow` on a step to drop samples from
        the rest of the walk, or :meth:`Walk.follow` it to its end. The arguments are checked
        as :meth:`~advkit.attacks.Attack.run` checks them (at the first step), and the model
        stays guarded (this attack's mode, frozen parameters) from the first point until the
        walk ends or is closed.

        Args:
            model: A classifier returning ``[N, C]`` logits.
            inputs: Clean inputs inside ``bounds``, shape ``[N, ...]``.
            labels: True labels ``[N]`` (targets, for a targeted attack).
            generator: Source of randomness for a random start.
            start_gradient: The logits and the objective's gradient at the start, when already
                known (only where :meth:`shares_walks`): the first point then costs nothing.
        """
        counted = _CountingModel(model)  # the walk's passes, counted as run() counts them
        return Walk(
            self,
            counted,
            inputs,
            labels,
            self._guarded_walk(counted, inputs, labels, generator, start_gradient),
        )

    def _guarded_walk(
        self,
        model: nn.Module,
        inputs: Tensor,
        labels: Tensor,
        generator: torch.Generator | None,
        start_gradient: tuple[Tensor, Tensor] | None,
    ) -> Generator[Step, None, None]:
        labels = self._check_call(model, inputs, labels)
        check_generator(generator)
        if start_gradient is not None and not self.shares_walks():
            raise ValueError(f"{type(self).__name__} cannot start from a given gradient")
        with self._guard(model):
            yield from self._walk(model, inputs.detach(), labels, generator, start_gradient)

    def _walk(
        self,
        model: nn.Module,
        inputs: Tensor,
        labels: Tensor,
        generator: torch.Generator | None,
        start_gradient: tuple[Tensor, Tensor] | None = None,
    ) -> Iterator[Step]:
        """:meth:`iterates` on arguments already checked, with the model already guarded."""
        eps = _per_sample(self.eps, inputs)
        alpha = self._step_size(eps, inputs)
        ball = self.threat_model(inputs, eps, self.bounds)
        x = self._start(ball, generator)
        state = self._init_state(x)
        positions = torch.arange(inputs.shape[0], device=inputs.device)
        for k in range(self.steps):
            computed = k > 0 or start_gradient is None
            if computed:
                logits, grad = self._gradient(model, x, labels, clean=inputs if k == 0 else None)
            else:
                logits, grad = start_gradient  # type: ignore[misc]
                known = check_batch_values(inputs, labels, self.bounds, logits)
                warn_probabilities(logits, known=known)
            direction = self._direction(grad, state)
            step = Step(
                k, positions, x, labels, logits, grad, direction, computed,
                toward=self._toward(ball, x, direction, alpha),
            )  # fmt: skip
            yield step
            if step.keep is not None:
                keep = step.keep
                positions, x, labels, direction = (
                    positions[keep], x[keep], labels[keep], direction[keep]
                )  # fmt: skip
                ball, alpha = ball.subset(keep), alpha[keep]
                state = {name: value[keep] for name, value in state.items()}
                if positions.numel() == 0:
                    return
            x = self._step(ball, x, direction, alpha)
        yield Step(self.steps, positions, x, labels, None, None, None, False)

    def _toward(self, ball: ThreatModel, x: Tensor, direction: Tensor, alpha: Tensor) -> _Toward:
        """:meth:`Step.toward` of a step at ``x``: this attack's step of size ``alpha`` along
        ``direction``, in other balls around the centers of ``ball``."""

        def toward(eps: Tensor, where: Tensor) -> Tensor:
            center = ball.center[where]
            other = self.threat_model(center, _per_sample(eps, center), self.bounds)
            return self._step(other, x[where], direction[where], alpha[where])

        return toward

    # -- the consumers -------------------------------------------------------------------------

    def _run(
        self,
        model: nn.Module,
        inputs: Tensor,
        labels: Tensor,
        generator: torch.Generator | None,
        early_stop: bool,
        track: bool,
    ) -> tuple[Tensor, AttackResult | None]:
        walk = self._walk(model, inputs, labels, generator)
        if not track:
            last = deque(walk, maxlen=1).pop()  # the plain call needs the last point only
            return last.inputs.detach(), None
        result = self._follow(model, walk, inputs, labels, early_stop=early_stop)
        return result.adversarial, result

    def _follow(
        self,
        model: nn.Module,
        walk: Iterator[Step],
        inputs: Tensor,
        labels: Tensor,
        early_stop: bool = False,
        observe: Callable[[Step], None] | None = None,
    ) -> AttackResult:
        """Follow a walk of this attack on ``inputs`` to its end and report it as
        :meth:`~advkit.attacks.Attack.run` does (see :meth:`Walk.follow`).

        With ``early_stop``, each sample is dropped from the walk at the first point that fools
        the model, and that point is kept as its adversarial input; ``observe`` is called with
        every step before it is judged.
        """
        batch = inputs.shape[0]
        success_step = torch.full((batch,), -1, dtype=torch.long, device=inputs.device)
        out: Tensor | None = None
        out_logits: Tensor | None = None
        grad_calls = grad_samples = 0
        for step in walk:
            if observe is not None:
                observe(step)
            logits = step.logits
            if logits is None:  # the last point: judge it with one forward pass
                with torch.no_grad():
                    logits = self._logits(model, step.inputs)
                check_logits(logits, step.inputs.shape[0], step.labels)
            elif step.grad_computed:
                grad_calls, grad_samples = grad_calls + 1, grad_samples + step.inputs.shape[0]
            fooled = self.is_success(logits, step.labels)
            _record(success_step, step.positions, fooled, step.index)
            if step.last:
                finished = torch.ones_like(fooled)
            elif early_stop and bool(fooled.any()):  # one host sync per step, only when asked
                finished = fooled
            else:
                continue
            if step.last and out is None:  # nothing was dropped: the last point is the batch
                out, out_logits = step.inputs, logits
                break
            if out is None or out_logits is None:
                out = torch.empty_like(inputs)
                out_logits = logits.new_empty(batch, logits.shape[1])
            out[step.positions[finished]] = step.inputs[finished]
            out_logits[step.positions[finished]] = logits[finished]
            if not step.last:
                step.narrow(~finished)
        assert out is not None and out_logits is not None  # the walk always has a last point
        return AttackResult(
            adversarial=out.detach(),
            success=self.is_success(out_logits, labels),
            logits=out_logits.detach(),
            success_step=success_step,
            grad_calls=grad_calls,
            grad_samples=grad_samples,
        )

    def fools(self, model: nn.Module, inputs: Tensor, labels: Tensor) -> Tensor:
        """Per-sample bool: whether ``inputs`` fool the model, judged as
        :meth:`~advkit.attacks.Attack.run` judges (in this attack's model mode and precision),
        without attacking."""
        with self._guard(model), torch.no_grad():
            logits = self._logits(model, inputs.detach())
        check_logits(logits, inputs.shape[0], labels)
        return self.is_success(logits, labels)

    # -- what a subclass overrides ---------------------------------------------------------------

    def _default_alpha(self, eps: Tensor) -> Tensor:
        """Step size used when ``alpha`` is ``None``: ``eps / steps``."""
        return eps / self.steps

    def _start(self, ball: ThreatModel, generator: torch.Generator | None) -> Tensor:
        """Starting point of the iteration: the clean input (never written to: steps copy)."""
        return ball.center

    def _init_state(self, inputs: Tensor) -> dict[str, Tensor]:
        """Per-sample state the direction rule carries across steps (first dim is the batch)."""
        return {}

    def _direction(self, grad: Tensor, state: dict[str, Tensor]) -> Tensor:
        """What the step follows: the raw gradient."""
        return grad

    def _step(self, ball: ThreatModel, x: Tensor, direction: Tensor, alpha: Tensor) -> Tensor:
        """One projected step from ``x``."""
        return ball.step(x, direction, alpha)

    # -- what a grid asks ----------------------------------------------------------------------

    def iterate_count(self) -> int:
        """``steps + 1``: the start and one point per step."""
        return self.steps + 1

    def shares_walks(self) -> bool:
        """Whether runs of this attack that differ in eps, steps or alpha share their walks.

        True when the walk starts at the clean input (:attr:`starts_at_center`), the class's
        walk is shareable (:attr:`shareable_walk`) and the model runs in eval mode (so a sample's
        gradient does not depend on the rest of the batch). Then the gradient at the clean
        input is the same for every eps, steps and alpha (an eps x steps grid computes it once
        and passes it as ``start_gradient``), and point ``k`` depends on nothing but the clean
        inputs, the model, the step size and the ball: it is the same for every ``steps >= k``,
        and for a larger ``eps`` as long as the points stay inside the smaller ball (the grid
        reads such cells off one walk).
        """
        return self.starts_at_center and self.shareable_walk and self.model_mode == "eval"

    def step_size(self, eps: Tensor) -> Tensor:
        """Per-sample step size ``[N]`` for the radii ``eps`` ``[N]`` (see ``alpha``)."""
        return self._step_size(_per_sample(eps, eps), eps).reshape(-1)

    def _step_size(self, eps: Tensor, like: Tensor) -> Tensor:
        """Per-sample step size ``[N, 1, ..., 1]`` for ``eps`` of that shape (see ``alpha``)."""
        return self._default_alpha(eps) if self.alpha is None else _per_sample(self.alpha, like)

    # -- the model -----------------------------------------------------------------------------

    def _logits(self, model: nn.Module, inputs: Tensor) -> Tensor:
        """The model's logits, under autocast if asked, returned in the inputs' dtype."""
        with autocast_context(self.autocast, inputs.device):
            logits = model(inputs)
        if self.autocast is not None and isinstance(logits, Tensor):
            logits = logits.to(inputs.dtype)
        return logits

    def _gradient(
        self, model: nn.Module, inputs: Tensor, labels: Tensor, clean: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Logits at ``inputs`` and the objective's gradient with respect to ``inputs`` only.

        The logits' shape is checked. At a walk's first point, ``clean`` (the clean batch) is
        given: its values and the labels' range are checked then, before the loss, in one host
        read (see :attr:`Attack._values_at_call`).
        """
        inputs = inputs.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self._logits(model, inputs)
            check_logits(logits, inputs.shape[0], None)
            if clean is not None:  # an fp16 overflow gives no step (finite_gradient): allowed
                known = check_batch_values(
                    clean, labels, self.bounds, logits, finite=self.autocast is None
                )
                warn_probabilities(logits, known=known)
            objective = self._objective(logits, labels)
            check_differentiable(objective, type(self).__name__)
            scale = gradient_scale(self.autocast, inputs.shape[0])
            # Gradients w.r.t. the inputs only (the guard froze the parameters): no parameter
            # gradient is computed or written, and no graph outlives this call.
            (grad,) = torch.autograd.grad(objective * scale if scale != 1 else objective, inputs)
        if self.autocast is not None:
            grad = finite_gradient(grad / scale if scale != 1 else grad)
        return logits.detach(), grad


def _record(success_step: Tensor, positions: Tensor, fooled: Tensor, index: int) -> None:
    """Write ``index`` for the samples at ``positions`` fooled now and never before."""
    current = success_step[positions]
    success_step[positions] = torch.where(fooled & (current < 0), index, current)
