"""Errors and warnings that say what to do, and the defaults and reprs torchattacks users expect."""

from __future__ import annotations

import inspect
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torchattacks
from hypothesis import given
from hypothesis import strategies as st

from advkit import FGSM, IFGSM, MIFGSM, PGD
from advkit.attacks import APGD, APGDT, FAB, Attack, AutoAttack, Square
from advkit.evaluation import robust_accuracy
from advkit.training import MixedCE, Trainer
from conftest import tiny_model

DOCS_EXT = Path(__file__).resolve().parents[2] / "docs" / "_ext"


def test_normalized_inputs_get_the_hint_to_normalize_inside_the_model() -> None:
    images = (torch.rand(4, 3, 8, 8) - 0.485) / 0.229  # transforms.Normalize in the pipeline
    with pytest.raises(ValueError, match=r"inside bounds.*advkit\.models\.Normalize"):
        PGD(eps=8 / 255)(tiny_model(), images, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"inside bounds \(0\.0, 1\.0\), got values in \[[^;]*\]$"):
        PGD(eps=8 / 255)(tiny_model(), torch.rand(4, 3, 8, 8) + 1, torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("attack", [FGSM, IFGSM, PGD, MIFGSM])
def test_an_linf_eps_wider_than_the_box_is_an_error_that_suggests_grey_levels(
    attack: type,
) -> None:
    with pytest.raises(ValueError, match=r"eps=8 is larger .* eps=8 / 255$"):
        attack(eps=8)
    with pytest.raises(ValueError, match=r"eps=2 is larger .* eps=2 / 255$"):
        attack(eps=torch.tensor([0.1, 2.0]))
    # not a whole number of grey levels: the usual radius is suggested, never "1.0001 / 255"
    with pytest.raises(ValueError, match=r"eps=1\.0001 is larger .* eps=8 / 255$"):
        attack(eps=1.0001)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attack(eps=1.0)  # the whole box, exactly: not a unit mistake
        attack(eps=8.0, norm="L2")  # an L2 radius may exceed the box's width
        attack(eps=8.0, bounds=(0.0, 255.0))


def test_fgsm_with_steps_says_which_attack_takes_them() -> None:
    with pytest.raises(TypeError, match=r"FGSM takes no steps: .* use IFGSM \(BIM\) or PGD"):
        FGSM(eps=8 / 255, steps=3)
    with pytest.raises(TypeError, match="FGSM takes no alpha"):
        FGSM(eps=8 / 255, alpha=0.1)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Trainer(tiny_model(), lambda p: torch.optim.SGD(p, lr=0.1), attack=PGD),
        lambda: Trainer(tiny_model(), lambda p: torch.optim.SGD(p, lr=0.1), val_attack=PGD),
        lambda: MixedCE(PGD),
        lambda: robust_accuracy(tiny_model(), [], PGD, progress=False),
    ],
)
def test_an_attack_class_instead_of_an_object_shows_how_to_build_one(build) -> None:
    with pytest.raises(TypeError, match=r"got the class PGD itself; build .*PGD\(eps=8 / 255\)"):
        build()


@given(st.integers(1, 254))
def test_repr_shows_whole_grey_levels_as_fractions_of_255(grey: int) -> None:
    attack = PGD(eps=grey / 255, alpha=1 / 255)
    shown = repr(attack)
    assert f"eps={grey}/255" in shown or f"eps={grey / 255!r}" in shown
    assert "alpha=1/255" in shown
    rebuilt = eval(shown, {"PGD": PGD})  # still an exact expression
    assert rebuilt.eps == attack.eps and rebuilt.alpha == attack.alpha


def test_repr_keeps_short_values_and_the_issue_example() -> None:
    assert repr(PGD(eps=8 / 255, steps=20)) == "PGD(eps=8/255, steps=20)"
    # A setting equal to its default is the same attack, and shows as such.
    assert repr(PGD(eps=8 / 255, steps=10)) == "PGD(eps=8/255)" == repr(PGD(eps=8 / 255))
    assert repr(IFGSM(eps=0.2, steps=3)) == "IFGSM(eps=0.2, steps=3)"
    assert repr(PGD(eps=0.5)) == "PGD(eps=0.5)"


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(IFGSM, torchattacks.BIM), (PGD, torchattacks.PGD), (MIFGSM, torchattacks.MIFGSM)],
)
def test_steps_defaults_to_torchattacks_default(ours: type, theirs: type) -> None:
    default = inspect.signature(theirs.__init__).parameters["steps"].default
    assert ours(eps=8 / 255).steps == default == 10


def test_the_attack_page_shows_the_constructor_not_args_and_settings() -> None:
    sys.path.insert(0, str(DOCS_EXT))
    try:
        from classsig import init_signature
    finally:
        sys.path.remove(str(DOCS_EXT))
    shown = init_signature(
        None, "class", "advkit.attacks.Attack", Attack, None, "(*args, **settings)", None
    )
    assert shown is not None
    assert shown[0].startswith("(*, eps, norm='Linf', bounds=(0.0, 1.0)")


@pytest.mark.parametrize(
    "build",
    [
        lambda eps: FGSM(eps=eps),
        lambda eps: IFGSM(eps=eps),
        lambda eps: PGD(eps=eps),
        lambda eps: MIFGSM(eps=eps),
        lambda eps: APGD(eps=eps),
        lambda eps: APGDT(eps=eps),
        lambda eps: FAB(eps=eps),
        lambda eps: Square(eps=eps),
        lambda eps: AutoAttack(eps=eps),
        lambda eps: AutoAttack(eps=eps, version="custom", attacks=[APGD(eps=0.1)]),
    ],
    ids=["FGSM", "IFGSM", "PGD", "MIFGSM", "APGD", "APGDT", "FAB", "Square", "AA", "AA-custom"],
)
def test_one_rule_for_eps_in_every_attack(build) -> None:
    """L-inf eps > 1 with bounds (0, 1) is one ValueError everywhere, suggesting k / 255."""
    with pytest.raises(ValueError, match=r"^eps=8 is larger than the width 1 .* eps=8 / 255$"):
        build(8)
    with pytest.raises(ValueError, match=r"^eps=1\.5 is larger .* eps=8 / 255$"):
        build(1.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build(8 / 255)
