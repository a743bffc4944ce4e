"""Everything a Trainer checkpoint holds is checked before any of the trainer's state changes."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from advkit.training.checkpoint import check_model_state

_REQUIRED = (
    "model",
    "optimizer",
    "scheduler",
    "scaler",
    "epoch",
    "global_step",
    "history",
    "callbacks",
    "rng",
    "loader_rng",
)


def _fail(source: str, what: str) -> ValueError:
    return ValueError(f"the checkpoint {source} is not usable: {what}; nothing was restored")


def check_trainer_state(
    state: Mapping[str, Any],
    model: nn.Module,
    optimizer: Optimizer,
    source: str,
    generator: torch.Generator | None = None,
) -> None:
    """Raise ``ValueError`` naming the file unless ``state`` can be restored in full.

    Checks the entries' presence and types, the model's names and shapes, that the
    optimizer state has this optimizer's parameter groups and that saved generator states
    fit ``generator`` (the Trainer's), so that a version-skewed or edited checkpoint fails
    before the trainer is touched instead of half-way through loading.
    """
    missing = [key for key in _REQUIRED if key not in state]
    if missing:
        raise _fail(source, f"entries {missing} are missing (written by another version?)")
    check_model_state(model, state["model"], source)
    saved = state["optimizer"]
    if (
        not isinstance(saved, Mapping)
        or not isinstance(saved.get("state"), Mapping)
        or not isinstance(saved.get("param_groups"), list)
        or not all(isinstance(g, Mapping) and "params" in g for g in saved["param_groups"])
    ):
        raise _fail(source, "the optimizer state is not an optimizer state_dict")
    groups = [len(g["params"]) for g in saved["param_groups"]]
    expected = [len(g["params"]) for g in optimizer.param_groups]
    if groups != expected:
        raise ValueError(
            f"the optimizer state in {source} does not fit this optimizer (different "
            f"parameter groups?): parameters per group {groups} vs {expected}; nothing was "
            "restored"
        )
    for key in ("scheduler", "scaler"):
        if state[key] is not None and not isinstance(state[key], Mapping):
            raise _fail(source, f"{key} must be a state dict or None, got {type(state[key])}")
    for key in ("epoch", "global_step"):
        if isinstance(state[key], bool) or not isinstance(state[key], int) or state[key] < 0:
            raise _fail(source, f"{key} must be an integer >= 0, got {state[key]!r}")
    history = state["history"]
    if (
        not isinstance(history, Mapping)
        or not isinstance(history.get("epochs"), list)
        or not all(isinstance(record, Mapping) for record in history["epochs"])
    ):
        raise _fail(source, "the history is not a list of epoch records")
    callbacks = state["callbacks"]
    keyed = isinstance(callbacks, Mapping) and all(
        isinstance(key, str) and isinstance(value, Mapping) for key, value in callbacks.items()
    )
    positional = isinstance(callbacks, list) and all(  # checkpoints before state keys
        isinstance(e, Mapping) and isinstance(e.get("name"), str) and "state" in e
        for e in callbacks
    )
    if not (keyed or positional):
        raise _fail(
            source,
            "the callback states are neither a mapping of state_key to state nor a list of "
            "{'name', 'state'} entries",
        )
    rng = state["rng"]
    if (
        not isinstance(rng, list)
        or not rng
        or not all(
            isinstance(r, Mapping)
            and isinstance(r.get("torch"), Tensor)
            and isinstance(r.get("python"), Mapping)
            and isinstance(r.get("numpy"), Mapping)
            for r in rng
        )
    ):
        raise _fail(source, "the random states are not those of capture_rng_state")
    loader_rng = state["loader_rng"]
    if not isinstance(loader_rng, Mapping) or not all(
        isinstance(v, list) and all(isinstance(t, Tensor) for t in v) for v in loader_rng.values()
    ):
        raise _fail(source, "the loader generator states are not lists of tensors")
    _check_generator_states(state.get("generator"), generator, source)


def _check_generator_states(saved: Any, generator: torch.Generator | None, source: str) -> None:
    """The Trainer's generator states: absent (older checkpoints), ``None``, or one byte
    tensor per process, each the size of ``generator``'s state (a CPU generator's state does
    not fit a CUDA generator)."""
    if saved is None:
        return
    if not (
        isinstance(saved, list)
        and saved
        and all(isinstance(s, Tensor) and s.dtype == torch.uint8 and s.ndim == 1 for s in saved)
    ):
        raise _fail(source, "the Trainer's generator states are not a list of byte tensors")
    if generator is None:
        return  # not restored, with a warning
    expected = generator.get_state().numel()
    sizes = sorted({s.numel() for s in saved})
    if sizes != [expected]:
        raise _fail(
            source,
            f"the saved generator states hold {sizes} bytes but this trainer's generator, on "
            f"{generator.device}, has a state of {expected} (saved from another kind of "
            "generator?)",
        )


def backup(*objects: Any) -> list[Any]:
    """Copies of the ``state_dict()`` of each object that has one (``None`` for the others)."""
    return [
        copy.deepcopy(obj.state_dict()) if hasattr(obj, "state_dict") else None for obj in objects
    ]


def roll_back(objects: tuple[Any, ...], saved: list[Any]) -> None:
    """Give each object the state :func:`backup` copied."""
    for obj, state in zip(objects, saved, strict=True):
        if state is not None:
            obj.load_state_dict(state)
