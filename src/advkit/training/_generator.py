"""The Trainer's own generator: its state, checkpointed and restored per process.

Like the global random states, the generator's state is saved for every process (rank order)
and each process gets its own back on resume. The Trainer never reseeds the generator: under
``torchrun`` every process builds its own, and seeding it with the rank (as one would the
global RNG) is what gives the processes different random starts. Checkpoints written before
the Trainer had a generator carry no ``"generator"`` entry; it reads as ``None``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from advkit._checks import warn
from advkit._process import ProcessContext

__all__ = ["generator_state", "restore_generator_state"]


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
