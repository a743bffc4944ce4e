"""Validation of a grid's arguments, and the factory that builds the attack of each row."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from advkit._checks import check_int, check_real
from advkit.attacks import Attack

AttackFactory = Callable[[Tensor, "int | None"], Attack]


def check_eps_values(eps: Sequence[float]) -> tuple[float, ...]:
    """Validate the grid's radii: a non-empty sequence of distinct finite reals >= 0; sorted."""
    if isinstance(eps, str | Tensor) or not isinstance(eps, Sequence):
        raise TypeError(f"eps must be a sequence of floats, got {type(eps).__name__}")
    if len(eps) == 0:
        raise ValueError("eps must list at least one value, got an empty sequence")
    for value in eps:
        check_real(value, "eps values", low=0)
    if len(set(eps)) != len(eps):
        raise ValueError(f"eps values must be distinct, got {list(eps)}")
    return tuple(sorted(float(value) for value in eps))


def check_steps_values(steps: Sequence[int] | None) -> tuple[int | None, ...]:
    """Validate the grid's iteration counts: distinct ints >= 1, sorted; ``(None,)`` for None."""
    if steps is None:
        return (None,)
    if isinstance(steps, str | Tensor) or not isinstance(steps, Sequence):
        raise TypeError(f"steps must be a sequence of ints or None, got {type(steps).__name__}")
    if len(steps) == 0:
        raise ValueError("steps must list at least one value (or be None), got an empty sequence")
    for value in steps:
        check_int(value, "steps values", minimum=1)
    if len(set(steps)) != len(steps):
        raise ValueError(f"steps values must be distinct, got {list(steps)}")
    return tuple(sorted(steps))


def attack_factory(
    attack: type[Attack] | Attack, iterative: bool, attack_kwargs: Mapping[str, Any] | None
) -> tuple[AttackFactory, str]:
    """A function ``(eps tensor, steps) -> attack``, and a description of the attack.

    ``attack`` is a class built as ``attack(eps=..., steps=..., **attack_kwargs)``, or an object
    used as a template through ``attack.replace(eps=..., steps=...)``.
    """
    kwargs = dict(attack_kwargs or {})
    for name in ("eps", "steps"):
        if name in kwargs:
            raise ValueError(f"attack_kwargs may not set {name!r}: the grid sets it")
    if isinstance(attack, Attack):
        if kwargs:
            raise ValueError("attack_kwargs only apply to an attack class, not an attack object")
        attack_class: type = type(attack)
        kwargs = {k: v for k, v in attack._settings.items() if k not in ("eps", "steps")}
    elif isinstance(attack, type) and issubclass(attack, Attack):
        attack_class = attack
        if iterative and "steps" not in inspect.signature(attack.__init__).parameters:
            raise ValueError(
                f"{attack.__name__} is not iterative (its constructor takes no steps): "
                "pass steps=None for an eps-only grid"
            )
    else:
        raise TypeError(
            f"attack must be an Attack class (e.g. IFGSM) or object, got {type(attack).__name__}"
        )
    for name, value in kwargs.items():
        if isinstance(value, Tensor):
            raise ValueError(f"grid attack settings must be scalars, got a tensor for {name!r}")

    def make(eps: Tensor, steps: int | None) -> Attack:
        changes: dict[str, Any] = {"eps": eps} if steps is None else {"eps": eps, "steps": steps}
        if isinstance(attack, Attack):
            return attack.replace(**changes)
        return attack(**kwargs, **changes)

    if isinstance(attack, Attack) and iterative:
        try:
            make(torch.zeros(1), 1)
        except TypeError as err:
            raise ValueError(
                f"{attack!r} is not iterative (it takes no steps): pass steps=None for an "
                f"eps-only grid ({err})"
            ) from None
    if isinstance(attack, Attack) and not attack._settings:
        return make, repr(attack)  # a composite (WorstCase, Transfer) shows its members
    shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return make, f"{attack_class.__name__}({shown})"
