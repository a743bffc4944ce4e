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


def ball_slack(eps: float | Tensor, inputs: Tensor, l2: bool) -> float | Tensor:
    """How far past ``eps`` a float32 example in ``[0, 1]`` may lie, from rounding alone.

    x + delta rounds each element by up to half an ULP of 1.0. For L-inf that is the slack;
    for a tiny L2 radius (hypothesis found eps = 3.6e-7 for APGD, 1e-6 for MI-FGSM) the
    rounding summed over the image's elements is larger than eps itself: sqrt(elements) * ULP
    / 2.
    """
    ulp = 2.0**-23
    if not l2:
        return eps * (1 + 1e-6) + ulp
    return eps * (1 + 1e-5) + inputs[0].numel() ** 0.5 * ulp / 2


def distance(name: str, adversarial: Tensor, inputs: Tensor) -> Tensor:
    """Per-sample distance ``[N]`` in the norm of the attack called ``name``."""
    delta = (adversarial - inputs).flatten(1)
    return delta.norm(dim=1) if name.endswith("-L2") else delta.abs().max(dim=1).values
