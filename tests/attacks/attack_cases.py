"""Every attack of the package, built at a given eps, for parametrized tests."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from advkit import FGSM, IFGSM, MIFGSM, PGD, Attack

EpsLike = float | Tensor

ATTACK_FACTORIES: dict[str, Callable[[EpsLike], Attack]] = {
    "FGSM": lambda eps: FGSM(eps=eps),
    "IFGSM": lambda eps: IFGSM(eps=eps, steps=4),
    "PGD": lambda eps: PGD(eps=eps, steps=4),
    "PGD-no-start": lambda eps: PGD(eps=eps, steps=3, random_start=False),
    "MIFGSM": lambda eps: MIFGSM(eps=eps, steps=4, decay=0.9),
    "FGSM-L2": lambda eps: FGSM(eps=eps, norm="L2"),
    "IFGSM-L2": lambda eps: IFGSM(eps=eps, steps=4, norm="L2"),
    "PGD-L2": lambda eps: PGD(eps=eps, steps=4, norm="L2"),
    "MIFGSM-L2": lambda eps: MIFGSM(eps=eps, steps=4, decay=0.9, norm="L2"),
}


def distance(name: str, adversarial: Tensor, inputs: Tensor) -> Tensor:
    """Per-sample distance ``[N]`` in the norm of the attack called ``name``."""
    delta = (adversarial - inputs).flatten(1)
    return delta.norm(dim=1) if name.endswith("-L2") else delta.abs().max(dim=1).values
