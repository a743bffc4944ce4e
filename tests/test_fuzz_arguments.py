"""Fuzzing the public constructors' numeric arguments: accepted and working, or a clear error.

Every value either builds an object that then runs (finite output inside the bounds), or raises
ValueError/TypeError whose message names the argument; never any other exception.
"""

from __future__ import annotations

import math
import warnings

import torch
from hypothesis import given
from hypothesis import strategies as st

from advkit.attacks import FGSM, IFGSM, MIFGSM, PGD
from advkit.pruning import Pruner
from advkit.training import Trainer
from conftest import blob_images, tiny_model

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0, max_value=1),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.sampled_from([0, 1, -1, 1e-45, 1e38, 1e39, 3.4e38, 65504.0, 65520.0, True, None, "0.1"]),
)
small_ints = st.one_of(st.integers(min_value=-3, max_value=3), numbers)

MODEL = tiny_model().eval()
IMAGES, LABELS = blob_images(4)


def outcome(name: str, build, run=None) -> None:  # type: ignore[no-untyped-def]
    try:
        built = build()
    except (ValueError, TypeError) as err:
        assert name in str(err), f"{name}: {err}"
        return
    if run is not None:
        run(built)


def run_attack(attack) -> None:  # type: ignore[no-untyped-def]
    if attack.steps > 3:
        attack = attack.replace(steps=3)
    try:
        x_adv = attack(MODEL, IMAGES, LABELS)
    except ValueError as err:  # a value too large for these float32 inputs: named
        assert "eps" in str(err) or "alpha" in str(err), err
        return
    assert bool(torch.isfinite(x_adv).all())
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1


@given(eps=numbers)
def test_eps(eps) -> None:  # type: ignore[no-untyped-def]
    for cls in (FGSM, IFGSM, PGD, MIFGSM):
        kwargs = {} if cls is FGSM else {"steps": 2}
        outcome("eps", lambda cls=cls, kwargs=kwargs: cls(eps=eps, **kwargs), run_attack)


@given(alpha=numbers)
def test_alpha(alpha) -> None:  # type: ignore[no-untyped-def]
    for cls in (IFGSM, PGD, MIFGSM):
        outcome("alpha", lambda cls=cls: cls(eps=0.03, steps=2, alpha=alpha), run_attack)


@given(steps=small_ints)
def test_steps(steps) -> None:  # type: ignore[no-untyped-def]
    for cls in (IFGSM, PGD, MIFGSM):
        outcome("steps", lambda cls=cls: cls(eps=0.03, steps=steps), run_attack)


@given(decay=numbers)
def test_decay(decay) -> None:  # type: ignore[no-untyped-def]
    outcome("decay", lambda: MIFGSM(eps=0.03, steps=2, decay=decay), run_attack)


@given(ratio=numbers)
def test_ratio(ratio) -> None:  # type: ignore[no-untyped-def]
    def run(pruner: Pruner) -> None:
        plan = pruner.plan(tiny_model(), IMAGES[:1])
        assert 0 <= plan.params_after <= plan.params_before

    outcome("ratio", lambda: Pruner(ratio=ratio, targets="0"), run)


@given(adv_weight=numbers)
def test_adv_weight(adv_weight) -> None:  # type: ignore[no-untyped-def]
    def build() -> Trainer:
        return Trainer(
            tiny_model(),
            lambda p: torch.optim.SGD(p, lr=0.01),
            attack=FGSM(eps=0.03),
            adv_weight=adv_weight,
            device="cpu",
            progress=False,
        )

    def run(trainer: Trainer) -> None:
        history = trainer.fit([(IMAGES, LABELS)], epochs=1)
        assert math.isfinite(history.last["train_loss"])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # adv_weight=0 warns that the attack never runs
        outcome("adv_weight", build, run)
