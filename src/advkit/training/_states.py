"""Which checkpoint a fit resumes from, how it is checked, and how its parts are matched back.

Everything a Trainer checkpoint holds is checked (:func:`check_trainer_state`) before any of
the trainer's state changes. ``fit(resume_from="auto")`` continues from ``last.pt`` when it
exists; a new run refuses to overwrite another run's ``last.pt``.

Callback states are saved by :attr:`~advkit.training.Callback.state_key`; checkpoints written
before state keys list them by position, and are matched only where the class names agree.
Checkpoints written before objectives had state carry no ``"objective"`` entry. A scheduler or
GradScaler state is restored only when the trainer has one too.

The Trainer's own generator: like the global random states, its state is saved for every
process (rank order) and each process gets its own back on resume. The Trainer never reseeds the
generator: under ``torchrun`` every process builds its own, and seeding it with the rank (as one
would the global RNG) is what gives the processes different random starts. Checkpoints written
before the Trainer had a generator carry no ``"generator"`` entry; it reads as ``None``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from advkit._checks import warn
from advkit._process import ProcessContext
from advkit.training.callbacks import Callback
from advkit.training.checkpoint import check_model_state
from advkit.training.objectives import Objective

__all__ = [
    "backup",
    "check_trainer_state",
    "generator_state",
    "keyed_callbacks",
    "load_callback_states",
    "load_objective_state",
    "load_optional",
    "restore_generator_state",
    "resume_path",
    "roll_back",
]


def resume_path(
    resume_from: str | os.PathLike[str] | None,
    checkpoint_dir: Path | None,
    epoch: int,
    context: ProcessContext,
) -> str | os.PathLike[str] | None:
    """The checkpoint ``fit`` continues from, after ``"auto"`` and the overwrite check.

    Args:
        resume_from: ``fit``'s argument: a path, ``"auto"`` or ``None``.
        checkpoint_dir: The Trainer's checkpoint folder, or ``None``.
        epoch: Epochs the trainer has done (a new run has done none).
        context: The process context; rank 0's view of the folder counts everywhere.

    Raises:
        ValueError: If ``"auto"`` has no folder to look in, or a new run would overwrite
            ``last.pt``.
    """
    auto = isinstance(resume_from, str) and resume_from == "auto"
    if resume_from is not None and not auto:
        return resume_from
    if checkpoint_dir is None:
        if auto:
            raise ValueError("resume_from='auto' needs a checkpoint_dir to look in")
        return None
    last = checkpoint_dir / "last.pt"
    exists = context.gather_objects(last.is_file())[0]  # rank 0's view, everywhere
    if auto:
        return last if exists else None
    if exists and epoch == 0:
        raise ValueError(
            f"{str(last)!r} already exists and this fit would overwrite it with a new run. "
            f"To continue that run pass resume_from='auto' (or resume_from={str(last)!r}); "
            "to start over, choose another checkpoint_dir or delete the file"
        )
    return None


def keyed_callbacks(callbacks: Sequence[Callback], own: Callback | None) -> dict[str, Callback]:
    """The user's callbacks by :attr:`~Callback.state_key`; a repeated key gets ``#2``, ...

    ``own`` (the Trainer's best-checkpoint tracker, rebuilt from the history) is left out.
    """
    keyed: dict[str, Callback] = {}
    for callback in callbacks:
        if callback is own:
            continue
        key, count = callback.state_key, 1
        while key in keyed:
            count += 1
            key = f"{callback.state_key}#{count}"
        keyed[key] = callback
    return keyed


def load_callback_states(saved: Any, keyed: dict[str, Callback], source: str) -> None:
    """Give each callback of ``keyed`` its saved state; warn about the unmatched ones."""
    if isinstance(saved, list):  # checkpoints before state keys: by position
        saved = _positional_states(saved, keyed)
    for key, callback in keyed.items():
        if key in saved:
            callback.load_state_dict(saved[key])
    fresh = [key for key, cb in keyed.items() if key not in saved and cb.state_dict()]
    unused = [key for key in saved if key not in keyed]
    notes = [f"no saved state for {fresh}, which start fresh"] if fresh else []
    notes += [f"saved states of {unused} have no callback in this trainer"] if unused else []
    if notes:
        warn(f"{source}: callback states are matched by state_key; " + "; ".join(notes))


def load_objective_state(
    objective: Objective, saved: Mapping[str, Any] | None, source: str
) -> None:
    """Restore ``objective``'s state if the checkpoint was saved with the same objective."""
    if saved is None:  # a checkpoint from before objectives had state: nothing to restore
        return
    if (
        not isinstance(saved, Mapping)
        or not isinstance(saved.get("name"), str)
        or not isinstance(saved.get("state"), Mapping)
    ):
        raise ValueError(
            f"the objective entry in {source} must be {{'name': str, 'state': dict}}, got "
            f"{saved!r:.200}"
        )
    name = type(objective).__name__
    if saved["name"] != name:
        warn(
            f"{source} was saved with objective {saved['name']} but this trainer trains "
            f"with {name}; the objective's state is not restored"
        )
        return
    objective.load_state_dict(saved["state"])


def load_optional(target: Any, state: Any, what: str, source: str) -> None:
    """Load ``state`` into ``target`` when both exist; warn when only one does."""
    if target is not None and state is not None:
        target.load_state_dict(state)
    elif target is not None or state is not None:
        has = "has" if state is not None else "has no"
        warn(
            f"{source} {has} {what} state but this trainer "
            f"{'has none' if target is None else 'has one'}; it is not restored"
        )


def _positional_states(saved: list[dict[str, Any]], keyed: dict[str, Callback]) -> dict[str, Any]:
    """Old checkpoints list states by position: match them only if the class names agree."""
    names = [type(cb).__name__ for cb in keyed.values()]
    if [entry["name"] for entry in saved] != names:
        return {f"{entry['name']} (position {i})": entry for i, entry in enumerate(saved)}
    return {key: entry["state"] for key, entry in zip(keyed, saved, strict=True)}


def generator_state(
    generator: torch.Generator | None, context: ProcessContext
) -> list[Tensor] | None:
    """Every process's generator state in rank order (a collective under DDP), or ``None``."""
    if generator is None:
        return None
    return context.gather_objects(generator.get_state())


def restore_generator_state(
    generator: torch.Generator | None,
    saved: Sequence[Tensor] | None,
    context: ProcessContext,
    source: str,
) -> None:
    """Give ``generator`` this process's saved state; warn when only one side has a generator.

    A checkpoint saved by another number of processes restores rank 0's state (the Trainer
    has already warned that the run is then not bit-exact).
    """
    if generator is not None and saved is not None:
        index = context.rank if len(saved) == context.world_size else 0
        generator.set_state(saved[index])
    elif generator is not None or saved is not None:
        has = "has" if saved is not None else "has no"
        what = "has none" if generator is None else "has one, which keeps its current state"
        warn(
            f"{source} {has} state of the Trainer's generator but this trainer {what}; the "
            "objectives' random draws do not continue the saved run's"
        )


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
    _check_optimizer_state(state["optimizer"], optimizer, source)
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


def _check_optimizer_state(saved: Any, optimizer: Optimizer, source: str) -> None:
    """A saved optimizer ``state_dict`` with this optimizer's parameter groups."""
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
