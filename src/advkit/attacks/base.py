"""The attack interface: ``attack(model, inputs, labels)`` and ``attack.run(...)``."""

from __future__ import annotations

import abc
import functools
import inspect
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advkit._checks import (
    EpsArg,
    check_batch,
    check_bool,
    check_bounds,
    check_eps,
    check_eps_length,
    check_eps_scale,
    check_generator,
    check_run_dtypes,
    describe,
)
from advkit._guard import model_state
from advkit.attacks.threat import Norm, threat_model

__all__ = ["Attack", "AttackResult", "LossFn", "ModelMode", "ModelWork"]

LossFn = Callable[[Tensor, Tensor], Tensor]
"""``loss(logits, labels)`` returning a per-sample ``[N]`` or a scalar loss."""

ModelMode = Literal["eval", "train"]
"""The mode a model runs in during an attack: ``"eval"`` or ``"train"``."""


@dataclass(frozen=True)
class ModelWork:
    """The rows that went through a model: the cost of an attack on any machine.

    The unit of cost is the *forward-equivalent*: one sample's forward pass counts 1, its
    backward pass 2, so a forward + input-gradient row counts 3 (the usual estimate of a
    backward pass as two forwards). Counts are exact: they are taken by a counting wrapper
    around the model inside the attack's model-state guard, not declared by each attack.

    Attributes:
        forward_rows: Rows (samples) of forward passes made without tracking input gradients.
        gradient_rows: Rows of forward passes that tracked input gradients.
        backward_rows: Rows of backward passes through the model (one per gradient row for
            most attacks; untargeted FAB's Jacobian takes one per class).
    """

    forward_rows: int = 0
    gradient_rows: int = 0
    backward_rows: int = 0

    @property
    def forward_equivalents(self) -> int:
        """``forward_rows + gradient_rows + 2 * backward_rows``: a forward row 1, a
        forward + backward row 3."""
        return self.forward_rows + self.gradient_rows + 2 * self.backward_rows

    def __add__(self, other: ModelWork) -> ModelWork:
        """The work of both."""
        if not isinstance(other, ModelWork):
            return NotImplemented
        return ModelWork(
            self.forward_rows + other.forward_rows,
            self.gradient_rows + other.gradient_rows,
            self.backward_rows + other.backward_rows,
        )


class _CountingModel(nn.Module):
    """The model an attack runs, counting the rows of its forward and backward passes.

    Wraps the caller's model (or plain callable) inside the attack's guard; the model itself
    is not changed. A forward pass tracks input gradients when grad mode is on and the input
    requires grad; a backward pass is counted by a hook on the output of such a pass.
    """

    def __init__(self, model: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.model = model
        self.training = bool(getattr(model, "training", False))
        self.work = ModelWork()  # what has gone through the model so far

    def forward(self, inputs: Tensor) -> Any:
        """The model's output on ``inputs``, counted."""
        output = self.model(inputs)
        rows = int(inputs.shape[0]) if inputs.ndim else 1
        tracked = torch.is_grad_enabled() and inputs.requires_grad
        if tracked:
            self.work += ModelWork(gradient_rows=rows)
            if isinstance(output, Tensor) and output.requires_grad:
                output.register_hook(functools.partial(self._count_backward, rows))
        else:
            self.work += ModelWork(forward_rows=rows)
        return output

    def _count_backward(self, rows: int, grad: Tensor) -> None:
        """The hook on a tracked output: count the rows of a backward pass through it."""
        self.work += ModelWork(backward_rows=rows)


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
        work: The rows that went through the model, counted at the model call (every
            forward and backward pass the attack made, checks included), and their cost in
            forward-equivalents (:class:`ModelWork`). A :class:`~advkit.attacks.compose.Transfer`
            counts the target model only (its surrogate's work is its inner attack's).
    """

    adversarial: Tensor
    success: Tensor
    logits: Tensor
    success_step: Tensor
    grad_calls: int
    grad_samples: int
    work: ModelWork = field(default=ModelWork(), kw_only=True)

    @property
    def fooled(self) -> Tensor:
        """Per-sample bool: some iterate of the attack fooled the model."""
        return self.success_step >= 0


class Attack(abc.ABC):
    """Base class of all attacks: ``attack(model, inputs, labels) -> adversarial inputs``.

    The model is passed at call time, so one attack object can serve a trainer, an evaluator
    and a script. Attacks leave no trace: the model's ``training`` flags, ``requires_grad``
    flags, ``.grad`` fields and buffers, and the input tensor, are as they were.

    Subclasses implement :meth:`_run`; :meth:`run` validates the batch and guards the model.

    Args:
        eps: Radius of the threat model in input space (in the norm ``norm``), a float or one
            value per sample (tensor ``[N]``), in the units of ``bounds``: an L-inf eps wider
            than the bounds (``eps=8`` meant as ``8 / 255``) is a ``ValueError``.
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

    _values_at_call: bool = True
    """Whether :meth:`_check_call` checks the batch's values (NaN, bounds, label range). A
    gradient attack checks them, and the first logits' finiteness, at its walk's first point
    instead, with the labels' upper bound from the logits' classes, in one host read: a plain
    call of a one-step attack reads from the device once."""

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
        self._record_settings(**_arguments(locals()))
        self.eps = check_eps(eps)
        self.norm: Norm = norm
        self.threat_model = threat_model(norm)
        self.bounds = check_bounds(bounds)
        check_eps_scale(self.eps, self.bounds, norm)
        if loss is not None and not callable(loss):
            raise TypeError(f"loss must be callable, got {type(loss).__name__}")
        self.loss: LossFn | str | None = loss  # as given; an attack may also take a name
        self.loss_fn: LossFn = loss or F.cross_entropy  # what the attack computes (mean CE)
        self.targeted = check_bool(targeted, "targeted")
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
        labels = self._check_call(model, inputs, labels)
        check_generator(generator)
        with self._guard(model):
            if not track:
                return self._run(model, inputs.detach(), labels, generator, early_stop, track)
            counted = _CountingModel(model)
            adversarial, result = self._run(
                counted, inputs.detach(), labels, generator, early_stop, track
            )
        return adversarial, None if result is None else replace(result, work=counted.work)

    def _check_call(self, model: nn.Module, inputs: Tensor, labels: Tensor) -> Tensor:
        """Check the arguments of a call (the model, the batch, per-sample settings, dtypes);
        return the labels as int64."""
        if not isinstance(model, nn.Module) and not callable(model):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        check_batch(inputs, labels, self.bounds, values=self._values_at_call)
        check_eps_length(self.eps, inputs.shape[0])
        steps = {"eps": self.eps, "alpha": getattr(self, "alpha", None)}
        check_run_dtypes(model, inputs, steps, getattr(self, "autocast", None))
        return labels.long()  # labels of any integer dtype, as the losses need

    def _guard(self, model: nn.Module) -> AbstractContextManager[None]:
        """The model in this attack's mode with frozen parameters, every flag restored after."""
        if not isinstance(model, nn.Module):  # a plain callable has no state to guard
            return nullcontext()
        return model_state(model, mode=self.model_mode, freeze=True)

    # -- what a composite attack asks of its members -------------------------------------------

    def iterate_count(self) -> int:
        """How many points the attack visits, counting its start: the range of ``success_step``.

        An attack that does not say otherwise visits two: the clean input and its result.
        """
        return 2

    def members(self) -> tuple[Attack, ...]:
        """The attacks this one is made of (empty for a single attack)."""
        return ()

    def surrogates(self) -> tuple[nn.Module, ...]:
        """Models this attack itself differentiates in place of the one it is called with."""
        return ()

    def restrict(self, index: Tensor, batch: int) -> Attack:
        """This attack for the samples ``index`` of a batch of ``batch``: per-sample settings
        (1-D tensors of length ``batch``, such as a per-sample eps) sliced, the rest kept."""
        changes = {
            name: value[index.to(value.device)]
            for name, value in self._settings.items()
            if isinstance(value, Tensor) and value.ndim == 1 and value.shape[0] == batch
        }
        return self.replace(**changes) if changes else self

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
        loss = self.loss_fn(logits, labels)
        if loss.ndim == 1 and loss.shape[0] == logits.shape[0]:
            loss = loss.mean()
        elif loss.ndim != 0:
            raise ValueError(
                f"loss must return a scalar or per-sample [{logits.shape[0]}] tensor, "
                f"got shape {list(loss.shape)}"
            )
        return -loss if self.targeted else loss

    def is_success(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Per-sample bool: the logits' top class is not the label (for a targeted attack:
        is the target)."""
        hit = logits.argmax(dim=1) == labels
        return hit if self.targeted else ~hit

    def _record_settings(self, **settings: Any) -> None:
        """Record the settings this attack is built with, for :meth:`replace` and ``repr``.

        Every attack's ``__init__`` calls it first, with its own arguments: its named
        parameters and the ``**kwargs`` it passes on to ``super().__init__``. The first call,
        that of the most derived class, is the record (the calls of the classes above it are
        no-ops); settings equal to their constructor default are left out. A subclass without
        an ``__init__`` of its own needs nothing: its parent's call records its settings.
        """
        if "_settings" in vars(self):
            return
        defaults = _constructor_defaults(type(self))
        self._settings = {
            name: value
            for name, value in settings.items()
            if not _is_default(value, defaults.get(name, _NO_DEFAULT))
        }

    @property
    def settings(self) -> dict[str, Any]:
        """The settings this attack was built with, by name, those equal to their default left
        out: ``type(attack)(**attack.settings)`` builds the same attack. Empty for a composite
        (:class:`~advkit.attacks.WorstCase`, :class:`~advkit.attacks.compose.Transfer`), built
        from attacks: its :meth:`replace` and ``repr`` are its own."""
        return dict(self._settings)

    def replace(self, **changes: Any) -> Attack:
        """A copy of this attack with some settings changed, e.g. ``attack.replace(eps=0.01)``."""
        return type(self)(**{**self._settings, **changes})

    def __repr__(self) -> str:
        """``PGD(eps=8/255, steps=10)``: radii and step sizes of whole grey levels as ``k/255``."""
        shown = (
            f"{name}=tensor(shape={list(value.shape)})"
            if isinstance(value, Tensor)
            else f"{name}={_show_setting(value)}"
            for name, value in self._settings.items()
        )
        return f"{type(self).__name__}({', '.join(shown)})"


_NO_DEFAULT = object()


def _arguments(given: dict[str, Any]) -> dict[str, Any]:
    """The arguments of a constructor, from its ``locals()`` taken first thing, for
    :meth:`Attack._record_settings`: its named parameters in order, then the ``**kwargs`` it
    passes on."""
    named = {
        name: value
        for name, value in given.items()
        if name not in ("self", "kwargs", "__class__")  # __class__: the cell super() reads
    }
    return {**named, **given.get("kwargs", {})}


@functools.cache
def _constructor_defaults(cls: type) -> dict[str, Any]:
    """The default of every keyword of the ``__init__`` methods of ``cls`` and its bases (the
    most derived class's default wins)."""
    defaults: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        init = inspect.unwrap(vars(klass).get("__init__", object.__init__))
        code = getattr(init, "__code__", None)
        if code is None or klass is object:
            continue
        # The function's own defaults, not ``inspect.signature``: a ``__signature__`` set on it
        # (Sphinx's autodoc_preserve_defaults does) must not change what counts as a default.
        positional = code.co_varnames[: code.co_argcount]
        values = init.__defaults__ or ()
        defaults.update(zip(positional[len(positional) - len(values) :], values, strict=True))
        defaults.update(init.__kwdefaults__ or {})
    return defaults


def _is_default(value: Any, default: Any) -> bool:
    """Whether a setting equals its default (a tensor never does)."""
    if value is default:
        return True
    if isinstance(value, Tensor) or isinstance(default, Tensor) or type(value) is not type(default):
        return False
    return bool(value == default)


def _show_setting(value: Any) -> str:
    """``repr(value)``, or ``k/255`` for a float that is exactly ``k / 255`` and shorter so.

    ``8/255`` is still a Python expression for the same float, so the repr stays exact.
    """
    text = repr(value)
    if isinstance(value, float) and 0 < value < 1:
        grey = round(value * 255)
        fraction = f"{grey}/255"
        if grey / 255 == value and len(fraction) < len(text):
            return fraction
    return text


def _per_sample(value: EpsArg, like: Tensor) -> Tensor:
    """``value`` as a tensor of shape ``[N, 1, ..., 1]`` matching ``like``'s batch and dtype."""
    shape = (like.shape[0],) + (1,) * (like.ndim - 1)
    if not isinstance(value, Tensor):
        # A fill on the device, not a host-to-device copy (which would synchronize on CUDA).
        return torch.full((), value, dtype=like.dtype, device=like.device).expand(shape)
    tensor = value.to(dtype=like.dtype, device=like.device)
    return tensor.view(-1, *shape[1:]).expand(shape) if tensor.ndim else tensor.expand(shape)


def check_attack(value: Any, name: str = "attack", *, optional: bool = False) -> Any:
    """``value`` if it is an advkit attack object (or ``None`` when ``optional``).

    Here, with :class:`Attack`, rather than among the base layer's checks: it needs the type.

    A class instead of an instance (``attack=PGD``) gets a message that shows how to build one.
    """
    if isinstance(value, Attack) or (optional and value is None):
        return value
    expected = "an advkit Attack" + (" or None" if optional else "")
    if isinstance(value, type) and issubclass(value, Attack):
        raise TypeError(
            f"{name} must be {expected}, got the class {value.__name__} itself; build an "
            f"attack object first, e.g. {name}={value.__name__}(eps=8 / 255)"
        )
    raise TypeError(f"{name} must be {expected}, got {describe(value)}")
