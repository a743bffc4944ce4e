"""The attack interface and the gradient loop every iterative L-inf attack shares."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advkit.attacks._precision import (
    autocast_context,
    check_autocast,
    finite_gradient,
    gradient_scale,
)
from advkit.attacks._validation import (
    EpsArg,
    check_batch,
    check_bounds,
    check_eps,
    check_logits,
    check_positive,
    check_run_dtypes,
    check_steps,
)
from advkit.attacks.threat import Norm, ThreatModel, threat_model

__all__ = ["Attack", "AttackResult", "GradientAttack", "LossFn", "ModelMode"]

LossFn = Callable[[Tensor, Tensor], Tensor]
"""``loss(logits, labels)`` returning a per-sample ``[N]`` or a scalar loss."""

ModelMode = Literal["eval", "train"]
"""The mode a model runs in during an attack: ``"eval"`` or ``"train"``."""

StepObserver = Callable[[int, Tensor, Tensor, Tensor], None]
"""``on_step(step, positions, iterate, direction)``, called before each step of a run."""


@dataclass(frozen=True)
class AttackResult:
    """What :meth:`Attack.run` found.

    Attributes:
        adversarial: Adversarial inputs, same shape, dtype and device as the inputs, detached.
            The last iterate, or with ``early_stop=True`` the first iterate that succeeded.
        success: Per-sample bool, whether ``adversarial`` fools the model (is misclassified,
            or for a targeted attack classified as the target).
        logits: The model's logits on ``adversarial``, shape ``[N, C]``.
        success_step: Per-sample index of the first iterate that fooled the model
            (0 is the starting point), or -1 if none did. A sample is robust against the
            attack only if it is -1: every point the attack visited lies inside the threat
            model, so any of them is a valid adversarial example.
        grad_calls: Number of batched forward+backward passes made.
        grad_samples: Sum of the batch sizes of those passes (less than
            ``grad_calls * N`` when early stopping drops samples).
    """

    adversarial: Tensor
    success: Tensor
    logits: Tensor
    success_step: Tensor
    grad_calls: int
    grad_samples: int

    @property
    def fooled(self) -> Tensor:
        """Per-sample bool: some iterate of the attack fooled the model."""
        return self.success_step >= 0


def _default_loss(logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(logits, labels)


@contextmanager
def _model_guard(model: nn.Module, mode: ModelMode) -> Iterator[None]:
    """Run ``model`` in ``mode`` with frozen parameters; restore every flag (and buffers) after."""
    modules = list(model.modules())
    flags = [(module, module.training) for module in modules]
    # Eager autograd skips parameter-gradient kernels when only the inputs' gradient is asked
    # for, but a torch.compile'd model's backward graph computes every gradient its inputs
    # require: frozen parameters keep both at the floor of one input-gradient backward.
    # (Read from the modules already listed: model.parameters() walks them all again. A
    # shared parameter is listed twice, with the same flag, which restores it correctly.)
    requires_grad = [
        (param, param.requires_grad)
        for module in modules
        for param in module._parameters.values()
        if param is not None
    ]
    # Train mode updates BatchNorm running statistics; snapshot them so nothing leaks out.
    saved = [(buf, buf.detach().clone()) for buf in model.buffers()] if mode == "train" else []
    training = mode == "train"
    # model.train() and Module.__setattr__ walk Python code per module (a few hundred
    # microseconds for a ResNet, per call): touch only what changes.
    if any(flag != training for _, flag in flags):
        model.train(training)
    try:
        for param, flag in requires_grad:
            if flag:
                param.requires_grad_(False)
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


class Attack(abc.ABC):
    """Base class of all attacks: ``attack(model, inputs, labels) -> adversarial inputs``.

    The model is passed at call time, so one attack object can serve a trainer, an evaluator
    and a script. Attacks leave no trace: the model's ``training`` flags, ``requires_grad``
    flags, ``.grad`` fields and buffers, and the input tensor, are as they were.

    Subclasses implement :meth:`_run`; :meth:`run` validates the batch and guards the model.

    Args:
        eps: Radius of the threat model in input space (in the norm ``norm``), a float or one
            value per sample (tensor ``[N]``).
        norm: The threat model's norm, ``"Linf"`` (the default) or ``"L2"``; see
            :func:`~advkit.attacks.threat.threat_model`.
        bounds: The box ``(lo, hi)`` inputs live in; adversarial inputs stay inside it.
        loss: ``loss(logits, labels)`` to maximize (or, when ``targeted``, minimize);
            per-sample ``[N]`` losses are averaged. Defaults to mean cross-entropy.
        targeted: If true, ``labels`` are the target classes and the attack succeeds when the
            model predicts them.
        model_mode: Mode the model runs in during the attack. ``"eval"`` (the default) is what
            evaluation wants; ``"train"`` runs BatchNorm on batch statistics, and its running
            statistics are restored afterwards.
    """

    _settings: dict[str, Any]

    def __new__(cls, *args: Any, **settings: Any) -> Attack:
        # Settings are keyword-only; keeping them makes replace() and repr() exact.
        attack = super().__new__(cls)
        attack._settings = dict(settings)
        return attack

    def __init__(
        self,
        *,
        eps: EpsArg,
        norm: Norm = "Linf",
        bounds: tuple[float, float] = (0.0, 1.0),
        loss: LossFn | None = None,
        targeted: bool = False,
        model_mode: ModelMode = "eval",
    ) -> None:
        self.eps = check_eps(eps)
        self.norm: Norm = norm
        self.threat_model = threat_model(norm)
        self.bounds = check_bounds(bounds)
        if loss is not None and not callable(loss):
            raise TypeError(f"loss must be callable, got {type(loss).__name__}")
        self.loss = loss
        if not isinstance(targeted, bool):
            raise TypeError(f"targeted must be a bool, got {type(targeted).__name__}")
        self.targeted = targeted
        if model_mode not in ("eval", "train"):
            raise ValueError(f"model_mode must be 'eval' or 'train', got {model_mode!r}")
        self.model_mode: ModelMode = model_mode

    def __call__(
        self,
        model: nn.Module,
        inputs: Tensor,
        labels: Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Return adversarial inputs: same shape, dtype and device as ``inputs``, detached."""
        return self._guarded_run(model, inputs, labels, generator, early_stop=False, track=False)[0]

    def run(
        self,
        model: nn.Module,
        inputs: Tensor,
        labels: Tensor,
        *,
        generator: torch.Generator | None = None,
        early_stop: bool = False,
    ) -> AttackResult:
        """Attack and report per-sample success and the final logits.

        Args:
            model: A classifier returning ``[N, C]`` logits.
            inputs: Clean inputs inside ``bounds``, shape ``[N, ...]``.
            labels: True labels ``[N]`` (targets, for a targeted attack).
            generator: Source of randomness for random starts; the global RNG is never reseeded.
            early_stop: Stop attacking a sample as soon as it is fooled, keeping that iterate.
                Every sample's ``fooled`` flag is the same as without early stopping; only
                the work (and ``adversarial`` of fooled samples) differs.
        """
        result = self._guarded_run(model, inputs, labels, generator, early_stop, track=True)[1]
        assert result is not None  # internal invariant: track=True always builds a result
        return result

    def _guarded_run(
        self,
        model: nn.Module,
        inputs: Tensor,
        labels: Tensor,
        generator: torch.Generator | None,
        early_stop: bool,
        track: bool,
    ) -> tuple[Tensor, AttackResult | None]:
        if not isinstance(model, nn.Module) and not callable(model):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        check_batch(inputs, labels, self.bounds)
        labels = labels.long()  # labels of any integer dtype, as the losses need
        steps = {"eps": self.eps, "alpha": getattr(self, "alpha", None)}
        check_run_dtypes(model, inputs, steps, getattr(self, "autocast", None))
        eps = self.eps
        if isinstance(eps, Tensor) and eps.shape[0] != inputs.shape[0]:
            raise ValueError(
                f"per-sample eps has {eps.shape[0]} values but the batch has {inputs.shape[0]}"
            )
        context = _model_guard(model, self.model_mode) if isinstance(model, nn.Module) else None
        with context if context is not None else _nullcontext():
            return self._run(model, inputs.detach(), labels, generator, early_stop, track)

    @abc.abstractmethod
    def _run(
        self,
        model: nn.Module,
        inputs: Tensor,
        labels: Tensor,
        generator: torch.Generator | None,
        early_stop: bool,
        track: bool,
    ) -> tuple[Tensor, AttackResult | None]:
        """Return the adversarial inputs and, when ``track``, the full result."""

    # -- shared helpers ------------------------------------------------------------------------

    def _objective(self, logits: Tensor, labels: Tensor) -> Tensor:
        """The scalar the attack ascends: the loss, or its negative for a targeted attack."""
        loss = (self.loss or _default_loss)(logits, labels)
        if loss.ndim == 1 and loss.shape[0] == logits.shape[0]:
            loss = loss.mean()
        elif loss.ndim != 0:
            raise ValueError(
                f"loss must return a scalar or per-sample [{logits.shape[0]}] tensor, "
                f"got shape {list(loss.shape)}"
            )
        return -loss if self.targeted else loss

    def _is_success(self, logits: Tensor, labels: Tensor) -> Tensor:
        hit = logits.argmax(dim=1) == labels
        return hit if self.targeted else ~hit

    def replace(self, **changes: Any) -> Attack:
        """A copy of this attack with some settings changed, e.g. ``attack.replace(eps=0.01)``."""
        return type(self)(**{**self._settings, **changes})

    def __repr__(self) -> str:
        shown = (
            f"{name}=tensor(shape={list(value.shape)})"
            if isinstance(value, Tensor)
            else f"{name}={value!r}"
            for name, value in self._settings.items()
        )
        return f"{type(self).__name__}({', '.join(shown)})"


@contextmanager
def _nullcontext() -> Iterator[None]:
    yield


def _per_sample(value: EpsArg, like: Tensor) -> Tensor:
    """``value`` as a tensor of shape ``[N, 1, ..., 1]`` matching ``like``'s batch and dtype."""
    shape = (like.shape[0],) + (1,) * (like.ndim - 1)
    if not isinstance(value, Tensor):
        # A fill on the device, not a host-to-device copy (which would synchronize on CUDA).
        return torch.full((), value, dtype=like.dtype, device=like.device).expand(shape)
    tensor = value.to(dtype=like.dtype, device=like.device)
    return tensor.view(-1, *shape[1:]).expand(shape) if tensor.ndim else tensor.expand(shape)


class GradientAttack(Attack):
    """The loop of gradient-sign attacks in an L-inf ball; subclasses override one piece.

    Each step evaluates ``g``, the gradient of the objective with respect to the inputs only,
    and moves to ``project(x + alpha * sign(direction(g)))``. Subclasses choose the start
    (:meth:`_start`), the direction (:meth:`_direction`, e.g. momentum) and the default step
    size (:meth:`_default_alpha`).

    Args:
        eps: L-inf radius, a float or a per-sample tensor ``[N]``.
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
        **kwargs: ``bounds``, ``loss``, ``targeted`` and ``model_mode`` of :class:`Attack`.
    """

    def __init__(
        self,
        *,
        eps: EpsArg,
        steps: int,
        alpha: EpsArg | None = None,
        autocast: torch.dtype | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(eps=eps, **kwargs)
        self.steps = check_steps(steps)
        self.alpha = check_positive(alpha, "alpha")
        self.autocast = check_autocast(autocast)

    def _default_alpha(self, eps: Tensor) -> Tensor:
        """Step size used when ``alpha`` is ``None``: ``eps / steps``."""
        return eps / self.steps

    def _start(self, ball: ThreatModel, generator: torch.Generator | None) -> Tensor:
        """Starting point of the iteration: the clean input (never written to: steps copy)."""
        return ball.center

    def _starts_at_center(self) -> bool:
        """Whether the iteration starts at the clean input (a subclass's own start may not)."""
        return type(self)._start is GradientAttack._start

    def _shares_first_gradient(self) -> bool:
        """Whether the first step's gradient is the same for every eps, steps and alpha.

        True when the attack starts at the clean input and runs the model in eval mode (so a
        sample's gradient does not depend on the rest of the batch): the gradient at the clean
        input can then be computed once and shared by the cells of an eps x steps grid.
        """
        return self._starts_at_center() and self.model_mode == "eval"

    def _shares_trajectories(self) -> bool:
        """Whether runs with the same step size visit the same points, whatever their steps.

        Iterate ``k`` then depends on nothing but the clean inputs, the model, the step size
        and the ball: it is the same for every ``steps >= k``, and for a larger ``eps`` as
        long as the iterates stay inside the smaller ball. True for this class's own loop
        started at the clean input in eval mode (see :meth:`_shares_first_gradient`). A
        subclass whose step rule reads ``self.steps`` must return ``False``.
        """
        return self._shares_first_gradient() and type(self)._run is GradientAttack._run

    def _step_size(self, eps: Tensor, like: Tensor) -> Tensor:
        """Per-sample step size ``[N, 1, ..., 1]`` for ``eps`` of that shape (see ``alpha``)."""
        return self._default_alpha(eps) if self.alpha is None else _per_sample(self.alpha, like)

    def _fools(self, model: nn.Module, inputs: Tensor, labels: Tensor) -> Tensor:
        """Per-sample bool: whether ``inputs`` fool the model, judged as :meth:`run` does."""
        with _model_guard(model, self.model_mode), torch.no_grad():
            logits = self._logits(model, inputs.detach())
        check_logits(logits, inputs.shape[0], labels)
        return self._is_success(logits, labels)

    def _center_gradient(
        self, model: nn.Module, inputs: Tensor, labels: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Logits at the clean inputs and the objective's gradient there, the model guarded."""
        with _model_guard(model, self.model_mode):
            return self._gradient(model, inputs.detach(), labels)

    def _run_from_center_gradient(
        self,
        model: nn.Module,
        inputs: Tensor,
        labels: Tensor,
        first: tuple[Tensor, Tensor],
        *,
        early_stop: bool,
        on_step: StepObserver | None = None,
    ) -> AttackResult:
        """:meth:`run` with the first step's logits and gradient given (see
        :meth:`_shares_first_gradient`); the inputs must have been checked already.

        ``on_step`` (only for an attack that :meth:`_shares_trajectories`) is called before
        every step with the step number, the batch positions of the samples still attacked,
        their iterate and the direction the step follows. ``result.grad_calls`` and
        ``grad_samples`` count only the gradients computed here.
        """
        if not self._shares_first_gradient():
            raise ValueError(f"{type(self).__name__} cannot start from a shared gradient")
        if on_step is not None and not self._shares_trajectories():
            raise ValueError(f"{type(self).__name__} does not show its steps to an observer")
        observer = () if on_step is None else (on_step,)
        with _model_guard(model, self.model_mode):
            result = self._run(
                model, inputs.detach(), labels, None, early_stop, True, first, *observer
            )[1]
        assert result is not None  # internal invariant: track=True always builds a result
        return result

    def _init_state(self, inputs: Tensor) -> dict[str, Tensor]:
        """Per-sample state the direction rule carries across steps (first dim is the batch)."""
        return {}

    def _direction(self, grad: Tensor, state: dict[str, Tensor]) -> Tensor:
        """What the sign step follows: the raw gradient."""
        return grad

    def _step(self, ball: ThreatModel, x: Tensor, direction: Tensor, alpha: Tensor) -> Tensor:
        """One projected sign step from ``x``."""
        return ball.step(x, direction, alpha)

    def _logits(self, model: nn.Module, inputs: Tensor) -> Tensor:
        """The model's logits, under autocast if asked, returned in the inputs' dtype."""
        with autocast_context(self.autocast, inputs.device):
            logits = model(inputs)
        if self.autocast is not None and isinstance(logits, Tensor):
            logits = logits.to(inputs.dtype)
        return logits

    def _gradient(
        self, model: nn.Module, inputs: Tensor, labels: Tensor, check_labels: bool = True
    ) -> tuple[Tensor, Tensor]:
        """Logits at ``inputs`` and the objective's gradient with respect to ``inputs`` only.

        ``check_labels=False`` skips the label-range check, which reads a value back to the
        host: the loop pays it on the first step only, as the labels never change.
        """
        inputs = inputs.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self._logits(model, inputs)
            check_logits(
                logits,
                inputs.shape[0],
                labels if check_labels else None,
                finite=self.autocast is None,  # an fp16 overflow gives no step (finite_gradient)
            )
            objective = self._objective(logits, labels)
            scale = gradient_scale(self.autocast, inputs.shape[0])
            # Gradients w.r.t. the inputs only (the guard froze the parameters): no parameter
            # gradient is computed or written, and no graph outlives this call.
            (grad,) = torch.autograd.grad(objective * scale if scale != 1 else objective, inputs)
        if self.autocast is not None:
            grad = finite_gradient(grad / scale if scale != 1 else grad)
        return logits.detach(), grad

    def _run(
        self,
        model: nn.Module,
        inputs: Tensor,
        labels: Tensor,
        generator: torch.Generator | None,
        early_stop: bool,
        track: bool,
        first: tuple[Tensor, Tensor] | None = None,
        on_step: StepObserver | None = None,
    ) -> tuple[Tensor, AttackResult | None]:
        eps = _per_sample(self.eps, inputs)
        alpha = self._step_size(eps, inputs)
        ball = self.threat_model(inputs, eps, self.bounds)
        x = self._start(ball, generator)
        state = self._init_state(x)
        batch, full_labels = inputs.shape[0], labels
        success_step = torch.full((batch,), -1, dtype=torch.long, device=inputs.device)
        grad_calls = grad_samples = 0
        # With early stopping, finished samples are written here and dropped from the batch.
        index = torch.arange(batch, device=inputs.device)
        out: Tensor | None = None
        out_logits: Tensor | None = None

        for step in range(self.steps):
            if step == 0 and first is not None:  # computed once for many attacks
                logits, grad = first
            else:
                logits, grad = self._gradient(model, x, labels, check_labels=step == 0)
                grad_calls, grad_samples = grad_calls + 1, grad_samples + x.shape[0]
            if track:
                fooled = self._is_success(logits, labels)
                self._record(success_step, index, fooled, step)
                # One host sync per step, paid only when early stopping is asked for.
                if early_stop and bool(fooled.any()):
                    if out is None or out_logits is None:
                        out = torch.empty_like(inputs)
                        out_logits = logits.new_empty(batch, logits.shape[1])
                    out[index[fooled]] = x[fooled]
                    out_logits[index[fooled]] = logits[fooled]
                    keep = ~fooled
                    index, x, labels, grad = index[keep], x[keep], labels[keep], grad[keep]
                    ball, alpha = ball.subset(keep), alpha[keep]
                    state = {name: value[keep] for name, value in state.items()}
                    if index.numel() == 0:
                        break
            direction = self._direction(grad, state)
            if on_step is not None:
                on_step(step, index, x, direction)
            x = self._step(ball, x, direction, alpha)

        if not track:
            return x.detach(), None
        if index.numel() > 0:
            with torch.no_grad():
                logits = self._logits(model, x)
            check_logits(logits, x.shape[0], labels)
            self._record(success_step, index, self._is_success(logits, labels), self.steps)
            if out is None or out_logits is None:  # nothing was dropped: x is the whole batch
                out, out_logits = x, logits
            else:
                out[index], out_logits[index] = x, logits
        assert out is not None and out_logits is not None  # the loop ran at least once
        adversarial = out.detach()
        return adversarial, AttackResult(
            adversarial=adversarial,
            success=self._is_success(out_logits, full_labels),
            logits=out_logits.detach(),
            success_step=success_step,
            grad_calls=grad_calls,
            grad_samples=grad_samples,
        )

    @staticmethod
    def _record(success_step: Tensor, index: Tensor, fooled: Tensor, step: int) -> None:
        """Write ``step`` for the samples of ``index`` fooled now and never before."""
        current = success_step[index]
        success_step[index] = torch.where(fooled & (current < 0), step, current)
