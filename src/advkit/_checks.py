"""The one home of argument checks: every message says what was expected and what came.

One wording for each kind of error: ``"<name> must be an int, got str"`` for a wrong type,
``"<name> must be >= 1, got 0"`` or ``"<name> must be in (0, 1), got 2.0"`` for a value out
of range. Attacks, evaluation, training, pruning and data all check their arguments here.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from numbers import Real
from typing import Any

import torch
from torch import Tensor, nn

EpsArg = float | Tensor

_NONFINITE_ALLOWED: ContextVar[bool] = ContextVar("advkit_nonfinite_logits", default=False)


@contextmanager
def allow_nonfinite_logits() -> Iterator[None]:
    """Let attacks and evaluations accept logits holding NaN or infinity inside this block.

    By default a model that returns a NaN or infinite logit is an error
    (``ValueError: the model returned non-finite logits ...``): ``argmax`` of NaN is class 0, so
    such a model would otherwise be scored as correct (or as robust) on every sample of class 0.
    Inside this context manager the check is skipped and the logits are used as they are, for a
    model whose ``-inf`` logits are deliberate (masked classes). The setting is per thread and
    per asyncio task.

    Example:
        >>> import torch
        >>> from advkit.attacks import allow_nonfinite_logits
        >>> with allow_nonfinite_logits():
        ...     pass  # attacks and evaluations here score whatever the model returns
    """
    token = _NONFINITE_ALLOWED.set(True)
    try:
        yield
    finally:
        _NONFINITE_ALLOWED.reset(token)


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

_NORMALIZE_HINT = (
    "; images normalized in the data pipeline (e.g. by transforms.Normalize) fall outside "
    "(0, 1): keep the pipeline's pixels in [0, 1] and put the normalization inside the model, "
    "nn.Sequential(advkit.models.Normalize(mean, std), model), so that eps is measured in pixels "
    "(Normalize.from_weights(weights) reads mean and std from torchvision weights or a timm "
    "pretrained_cfg; see the attacks guide, 'Your own model')"
)


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the first caller outside advkit: the user's line."""
    frame = sys._getframe(1)
    level = 2
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)


def describe(value: Any) -> str:
    """What a message calls a wrong argument: its type's name, or ``the class X`` for a class."""
    if isinstance(value, type):
        return f"the class {value.__name__} itself"
    return type(value).__name__


def brief(value: Any, width: int = 60) -> str:
    """A value's ``repr`` for a message, cut to ``width`` characters."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def check_generator(
    generator: object, device: torch.device | None = None, where: str = "the inputs are on"
) -> torch.Generator | None:
    """A source of randomness must be a ``torch.Generator`` or ``None``; given ``device``, on
    that kind of device (random draws on CUDA need a CUDA generator). Returns it, checked.

    Args:
        generator: The generator to check.
        device: The device its draws are used on, or ``None`` not to check the device.
        where: How the error names that device (``"the Trainer trains on"``).
    """
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {describe(generator)}; for a "
            "seed write generator=torch.Generator().manual_seed(seed)"
        )
    if device is not None and generator.device.type != device.type:
        raise ValueError(
            f"generator is on {generator.device} but {where} {device}; make it there: "
            f"torch.Generator(device={device.type!r}).manual_seed(seed)"
        )
    return generator


def check_differentiable(logits: Tensor, who: str) -> None:
    """The model's output must carry a gradient with respect to the inputs ``who`` attacks."""
    if not logits.requires_grad:
        raise ValueError(
            f"{who} needs the gradient of the model's output with respect to its inputs, but "
            "the output carries none (computed under torch.no_grad, detached, or converted "
            "outside autograd); return differentiable logits, or attack the model with a "
            "black-box attack such as Square"
        )


PROBABILITY_TOL = 1e-5
"""Rows within this of a probability distribution count as one (AutoAttack's ``alpha``)."""


def probability_rows(logits: Tensor) -> Tensor:
    """Per row of ``[N, C]`` outputs: whether it is a probability distribution (>= 0, sums to 1).

    A model whose outputs are probabilities (a softmax as its last layer) hides its gradient
    from the attacks' cross-entropy: the one test of it, shared by every attack and AutoAttack's
    gradient-masking checks.
    """
    first = logits.detach()
    lowest, highest = torch.aminmax(first, dim=1)  # one pass for both
    return (
        (lowest > -PROBABILITY_TOL)
        & (highest < 1 + PROBABILITY_TOL)
        & ((first.sum(dim=1) - 1).abs() < PROBABILITY_TOL)
    )


def check_model(model: object, name: str = "model") -> nn.Module:
    """``model`` if it is a ``torch.nn.Module`` (an instance, not the class)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {describe(model)}")
    return model


def check_bool(value: bool, name: str) -> bool:
    """``value`` if it is a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_bool_tensor(value: object, name: str) -> Tensor:
    """``value`` if it is a tensor of dtype bool (a mask)."""
    if not isinstance(value, Tensor) or value.dtype != torch.bool:
        got = f"a tensor of dtype {value.dtype}" if isinstance(value, Tensor) else describe(value)
        raise TypeError(f"{name} must be a bool tensor, got {got}")
    return value


def check_int(value: int, name: str, *, minimum: int | None = None) -> int:
    """``value`` if it is an int (not a bool) and at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_real(
    value: float,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
) -> float:
    """``value`` as a float if it is a finite real number in the given interval.

    ``low``/``high`` bound the interval (``None``: unbounded), closed unless ``open_low`` /
    ``open_high``.
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    value = float(value)
    too_low = low is not None and (value <= low if open_low else value < low)
    too_high = high is not None and (value >= high if open_high else value > high)
    if math.isfinite(value) and not too_low and not too_high:
        return value
    if low is not None and high is not None:
        interval = f"in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    elif low is not None:
        interval = f"finite and {'>' if open_low else '>='} {low:g}"
    elif high is not None:
        interval = f"finite and {'<' if open_high else '<='} {high:g}"
    else:
        interval = "finite"
    raise ValueError(f"{name} must be {interval}, got {value}")


def check_eps(eps: EpsArg, name: str = "eps") -> EpsArg:
    """Validate a radius or step size: a finite real >= 0 or a 1-D tensor of them."""
    if isinstance(eps, Tensor):
        if eps.ndim != 1 or not eps.is_floating_point():
            raise ValueError(
                f"{name} as a tensor must be 1-D floating point (one value per sample), "
                f"got shape {list(eps.shape)} and dtype {eps.dtype}"
            )
        if not bool(torch.isfinite(eps).all()) or bool((eps < 0).any()):
            raise ValueError(f"{name} must be finite and >= 0, got {eps.tolist()}")
        return eps.detach()
    if isinstance(eps, bool) or not isinstance(eps, Real):
        raise TypeError(f"{name} must be a float or a 1-D tensor, got {type(eps).__name__}")
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {eps}")
    if eps > _FLOAT32_MAX:  # inf once it meets float32 inputs: NaN iterates, not an error
        raise ValueError(f"{name} must be finite in float32 (<= {_FLOAT32_MAX:.4g}), got {eps}")
    return float(eps)


_FLOAT32_MAX = torch.finfo(torch.float32).max


def check_run_dtypes(
    model: object, inputs: Tensor, values: dict[str, EpsArg | None], autocast: object = None
) -> None:
    """Check that the inputs' dtype fits the model's and that eps-like values fit the inputs'.

    Args:
        model: The model; its first floating-point parameter gives its dtype (a model without
            one, or a plain callable, is not checked).
        inputs: The inputs (already checked by :func:`check_batch`).
        values: ``name -> value`` of radii and step sizes to check, ``None`` for absent ones.
        autocast: The attack's autocast dtype, if any: then mixed dtypes are fine.

    Raises:
        TypeError: If the inputs' dtype differs from the model's (outside autocast).
        ValueError: If a value is infinite in the inputs' dtype (e.g. eps=1e5 in float16).
    """
    if autocast is None and isinstance(model, nn.Module):
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
        if dtype is not None and dtype != inputs.dtype:
            raise TypeError(
                f"inputs are {inputs.dtype} but the model's parameters are {dtype}; convert "
                f"one to match (e.g. inputs.to({dtype}) or model.to({inputs.dtype}))"
            )
    limit = torch.finfo(inputs.dtype).max
    for name, value in values.items():
        if value is None:
            continue
        largest = float(value.max()) if isinstance(value, Tensor) else float(value)
        if largest > limit:
            raise ValueError(
                f"{name}={largest:g} is infinite in the inputs' dtype {inputs.dtype} "
                f"(largest {limit:g}); use a smaller {name} or wider inputs"
            )


def check_eps_scale(eps: EpsArg, bounds: tuple[float, float], norm: str) -> None:
    """The one rule for eps: an L-inf radius larger than the width of the box is an error.

    Such a ball allows every input in the box, an unbounded attack; the usual cause is eps
    written in grey levels (``eps=8``) where pixels are in ``[0, 1]``. L2 radii are not
    limited (an L2 ball of radius 3 is a small perturbation of a 224x224 image).

    Raises:
        ValueError: If ``norm`` is ``"Linf"`` and the largest eps exceeds ``hi - lo``; the
            message suggests the radius in the bounds' units (``8 / 255`` in ``[0, 1]``).
    """
    if norm != "Linf":
        return
    largest = float(eps.max()) if isinstance(eps, Tensor) else float(eps)
    lo, hi = bounds
    width = hi - lo
    if largest <= width:
        return
    grey = round(largest)
    levels = grey if grey == largest and 1 <= grey <= 255 else 8  # eps=8 meant 8 grey levels
    scale = "" if width == 1 else f" * {width:g}"
    raise ValueError(
        f"eps={largest:g} is larger than the width {width:g} of the bounds ({lo:g}, {hi:g}): "
        f"the L-inf ball would allow every input in the box. eps is measured in the units of "
        f"the bounds; {levels} grey levels of 8-bit images are eps={levels}{scale} / 255"
    )


def check_eps_length(eps: EpsArg, batch_size: int) -> None:
    """A per-sample eps must have one value per sample of the batch."""
    if isinstance(eps, Tensor) and eps.shape[0] != batch_size:
        raise ValueError(f"per-sample eps has {eps.shape[0]} values but the batch has {batch_size}")


def check_positive(value: EpsArg | None, name: str) -> EpsArg | None:
    """Validate an optional step size: ``None``, a real > 0, or a 1-D tensor of them."""
    if value is None:
        return None
    value = check_eps(value, name)
    positive = bool((value > 0).all()) if isinstance(value, Tensor) else value > 0
    if not positive:
        shown = value.tolist() if isinstance(value, Tensor) else value
        raise ValueError(f"{name} must be > 0, got {shown}")
    return value


def check_steps(steps: int) -> int:
    """Validate an iteration count: an integer >= 1."""
    return check_int(steps, "steps", minimum=1)


def check_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    """Validate a box ``(lo, hi)`` with finite ``lo < hi``."""
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise TypeError(f"bounds must be a pair of floats (lo, hi), got {bounds!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"bounds must be finite with lo < hi, got {bounds!r}")
    return lo, hi


def check_batch(
    inputs: Tensor, labels: Tensor, bounds: tuple[float, float], *, values: bool = True
) -> None:
    """Check types, shapes, dtypes, NaNs and bounds of an attack's inputs, with one host sync.

    With ``values=False`` only what needs no host read is checked (types, shapes, devices);
    the caller then calls :func:`check_batch_values` itself.
    """
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if not inputs.is_floating_point():
        hint = (
            "; 8-bit images: divide by 255, inputs.float() / 255"
            if inputs.dtype == torch.uint8
            else ""
        )
        raise TypeError(f"inputs must be floating point, got dtype {inputs.dtype}{hint}")
    if inputs.ndim < 1 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must be a non-empty batch [N, ...], got {list(inputs.shape)}")
    if labels.shape != (inputs.shape[0],):
        raise ValueError(
            f"labels must have shape [{inputs.shape[0]}] (one per input), got {list(labels.shape)}"
        )
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if labels.device != inputs.device:
        raise ValueError(
            f"labels are on {labels.device} but inputs on {inputs.device}; put both on one device"
        )
    if values:
        check_batch_values(inputs, labels, bounds)


def check_batch_values(
    inputs: Tensor,
    labels: Tensor,
    bounds: tuple[float, float],
    logits: Tensor | None = None,
    *,
    finite: bool = True,
) -> bool:
    """Check the values of a batch: no NaN, inside ``bounds``, labels in ``[0, C)``.

    One pass over the inputs (min and max propagate NaN) and one read-back to the host. Given
    the model's ``logits`` on the batch (after a forward pass), the same read also covers the
    labels' upper bound ``C``, with ``finite`` that the logits are finite (see
    :func:`check_logits`), and whether every row is a probability distribution
    (:func:`probability_rows`).

    Returns:
        Whether the logits are given and every row of them is a probability distribution (the
        caller warns: a softmax output masks the gradient).
    """
    smallest, largest = torch.aminmax(inputs)
    extremes = [smallest.double(), largest.double(), labels.min().double()]
    if logits is not None:
        extremes.append(labels.max().double())
        check_finite = finite and not _NONFINITE_ALLOWED.get() and logits.is_floating_point()
        finite_rows = torch.isfinite(logits).all(dim=1) if check_finite else None
        extremes.append(probability_rows(logits).all().double())
        if finite_rows is not None:
            extremes.append(finite_rows.all().double())
    read = torch.stack(extremes).tolist()
    _check_range(read[0], read[1], bounds)
    lowest_label = read[2]
    if lowest_label < 0:
        raise ValueError(f"labels must be >= 0, got minimum {int(lowest_label)}")
    if logits is not None and read[3] >= logits.shape[1]:
        raise ValueError(
            f"labels must be < the number of classes {logits.shape[1]}, got maximum {int(read[3])}"
        )
    if logits is not None and finite_rows is not None and not read[5]:
        _raise_nonfinite(finite_rows)
    return logits is not None and bool(read[4])


def check_pair(item: object, source: str, index: int | None = None) -> tuple[Tensor, Tensor]:
    """Check what a loader yielded: an ``(inputs [N, ...], labels [N])`` pair of tensors.

    Args:
        item: What the loader yielded.
        source: The loader's name, for the message (e.g. ``"train_loader"``).
        index: The batch's position in the pass, for the message.
    """
    where = source if index is None else f"{source} (batch {index})"
    if not isinstance(item, tuple | list) or len(item) != 2:
        shown = type(item).__name__ + (
            f" of length {len(item)}" if isinstance(item, tuple | list) else ""
        )
        raise TypeError(f"{where} must yield (inputs, labels) pairs, got a {shown}")
    inputs, labels = item
    if not isinstance(inputs, Tensor) or not isinstance(labels, Tensor):
        raise TypeError(
            f"{where} must yield (inputs, labels) tensors, got "
            f"({type(inputs).__name__}, {type(labels).__name__})"
        )
    if inputs.ndim < 1 or labels.shape != (inputs.shape[0],) or inputs.shape[0] == 0:
        raise ValueError(
            f"{where} must yield non-empty inputs [N, ...] and labels [N], got shapes "
            f"{list(inputs.shape)} and {list(labels.shape)}"
        )
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"{where} must yield integer labels, got dtype {labels.dtype}")
    return inputs, labels


def check_confidence(confidence: float) -> float:
    """A confidence level of an interval, in ``(0, 1)``."""
    return check_real(confidence, "confidence", low=0, high=1, open_low=True, open_high=True)


def check_logits(
    logits: Tensor, batch_size: int, labels: Tensor | None, *, finite: bool = True
) -> None:
    """Check that a model returned finite ``[N, C]`` logits and that every label is below ``C``.

    The label and finiteness checks read one value back to the host together; pass
    ``labels=None`` to skip both where the labels were already checked against these logits'
    classes (an attack's intermediate steps: a NaN born there reaches the final logits, which
    are checked). Non-finite logits are accepted inside :func:`allow_nonfinite_logits`, and
    with ``finite=False`` where the caller handles them itself (an attack's gradient under
    float16 autocast, whose overflow gives no step).
    """
    if not isinstance(logits, Tensor):
        raise TypeError(f"the model must return a tensor of logits, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(
            f"the model must return floating-point logits, got dtype {logits.dtype} (class "
            "indices or rounded scores carry no gradient and no margin); return the raw scores"
        )
    if logits.ndim != 2 or logits.shape[0] != batch_size:
        raise ValueError(
            f"the model must return logits of shape [N, C] = [{batch_size}, C], "
            f"got {list(logits.shape)}"
        )
    if labels is None:
        return
    check_finite = finite and not _NONFINITE_ALLOWED.get() and logits.is_floating_point()
    too_large = (labels >= logits.shape[1]).any()
    if check_finite:
        finite = torch.isfinite(logits).all(dim=1)
        too_large, all_finite = torch.stack([too_large, finite.all()]).tolist()
    else:
        too_large, all_finite = bool(too_large), True
    if too_large:
        raise ValueError(
            f"labels must be < the number of classes {logits.shape[1]}, "
            f"got maximum {labels.max().item()}"
        )
    if not all_finite:
        _raise_nonfinite(finite)


def _raise_nonfinite(finite_rows: Tensor) -> None:
    """The error for logits with non-finite rows (``finite_rows[i]`` false for sample ``i``)."""
    bad = (~finite_rows).nonzero().flatten().tolist()
    shown = ", ".join(map(str, bad[:8])) + (", ..." if len(bad) > 8 else "")
    raise ValueError(
        f"the model returned non-finite logits (NaN or inf) for {len(bad)} of "
        f"{finite_rows.shape[0]} samples (batch positions {shown}); check the inputs and the "
        "weights for NaN, or wrap the call in advkit.attacks.allow_nonfinite_logits() if this "
        "is deliberate"
    )


def check_inputs(inputs: Tensor, bounds: tuple[float, float]) -> None:
    """Check a batch of inputs without labels: a floating-point ``[N, ...]`` tensor, ``N >= 1``,
    without NaN and inside ``bounds`` (one read-back to the host)."""
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if not inputs.is_floating_point():
        raise TypeError(f"inputs must be floating point, got dtype {inputs.dtype}")
    if inputs.ndim < 2 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must be a non-empty batch [N, ...], got {list(inputs.shape)}")
    _check_range(*torch.stack(torch.aminmax(inputs)).double().tolist(), bounds)


def _check_range(smallest: float, largest: float, bounds: tuple[float, float]) -> None:
    """The inputs' extremes (read back together) hold no NaN and lie inside ``bounds``."""
    if math.isnan(smallest) or math.isnan(largest):
        raise ValueError("inputs contain NaN")
    if smallest < bounds[0] or largest > bounds[1]:
        raise ValueError(
            f"inputs must lie inside bounds {bounds}, got values in [{smallest:.6g}, {largest:.6g}]"
            + (_NORMALIZE_HINT if smallest < 0 <= bounds[0] else "")
        )
