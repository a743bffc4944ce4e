"""The attack hierarchy: settings recorded by each constructor, AutoAttack made of members,
APGD's loss kept as given."""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from advkit.attacks import (
    APGD,
    FGSM,
    IFGSM,
    PGD,
    AutoAttack,
    GradientAttack,
    GradientMaskingWarning,
    Square,
    WorstCase,
)
from conftest import blob_images, tiny_model


def test_settings_ignore_an_advertised_signature() -> None:
    """Defaults come from the constructor itself: Sphinx's ``autodoc_preserve_defaults`` sets a
    ``__signature__`` whose defaults are strings, which made the docs' doctests print
    ``IFGSM(eps=4/255, steps=20, alpha=None)`` (CI failed on it)."""

    class Shown(IFGSM):
        def __init__(self, *, steps: int = 10, alpha: float | None = None, **kwargs: Any) -> None:
            self._record_settings(steps=steps, alpha=alpha, **kwargs)
            super().__init__(steps=steps, alpha=alpha, **kwargs)

    signature = inspect.signature(Shown.__init__)
    Shown.__init__.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[
            p.replace(default=repr(p.default)) if p.default is not p.empty else p
            for p in signature.parameters.values()
        ]
    )
    attack = Shown(eps=8 / 255, steps=10)
    assert attack.settings == {"eps": 8 / 255}
    assert repr(attack.replace(eps=4 / 255, steps=20)) == "Shown(steps=20, eps=4/255)"


def test_settings_are_what_was_built_without_defaults() -> None:
    attack = PGD(eps=0.1, steps=20, random_start=False, bounds=(0.0, 1.0))
    assert attack.settings == {"eps": 0.1, "steps": 20, "random_start": False}
    assert type(attack)(**attack.settings).settings == attack.settings
    assert FGSM(eps=0.1, targeted=True).settings == {"eps": 0.1, "targeted": True}
    apgd = APGD(eps=0.1, steps=100, loss="dlr")  # steps=100 is APGD's default, not IFGSM's 10
    assert apgd.settings == {"eps": 0.1, "loss": "dlr"}
    attack.settings["eps"] = 5.0  # a copy: the attack keeps its own
    assert attack.eps == 0.1 and attack.settings["eps"] == 0.1
    assert WorstCase([FGSM(eps=0.1)]).settings == {}


class RFGSM(GradientAttack):
    """A subclass with its own constructor records its own settings (the guide's example)."""

    def __init__(self, *, eps: Any, **kwargs: Any) -> None:
        self._record_settings(eps=eps, **kwargs)
        super().__init__(eps=eps, steps=1, **kwargs)

    def _default_alpha(self, eps: Tensor) -> Tensor:
        return eps / 2


class TIFGSM(IFGSM):
    """A subclass without a constructor needs nothing."""


def test_subclasses_replace_and_restrict() -> None:
    attack = RFGSM(eps=0.1, targeted=True)
    assert repr(attack.replace(eps=0.2)) == "RFGSM(eps=0.2, targeted=True)"
    restricted = attack.replace(eps=torch.tensor([0.1, 0.2, 0.3])).restrict(torch.tensor([0, 2]), 3)
    assert isinstance(restricted, RFGSM) and restricted.eps.tolist() == pytest.approx([0.1, 0.3])
    assert repr(TIFGSM(eps=0.1, steps=3).replace(steps=2)) == "TIFGSM(eps=0.1, steps=2)"


def test_autoattack_holds_its_members_and_is_not_a_worst_case() -> None:
    attack = AutoAttack(eps=8 / 255, version="custom", attacks=["apgd-ce", "square"])
    assert not isinstance(attack, WorstCase)
    assert attack.members() == attack.attacks and len(attack.members()) == 2
    assert attack.iterate_count() == sum(m.iterate_count() for m in attack.members())
    assert repr(attack) == "AutoAttack(eps=8/255, version='custom', attacks=['apgd-ce', 'square'])"
    changed = attack.replace(eps=4 / 255)
    assert isinstance(changed, AutoAttack) and all(m.eps == 4 / 255 for m in changed.members())
    per_sample = attack.replace(eps=torch.tensor([0.01, 0.02, 0.03]))
    restricted = per_sample.restrict(torch.tensor([1]), 3)
    assert isinstance(restricted, AutoAttack) and restricted.eps.tolist() == pytest.approx([0.02])


def test_a_member_listed_twice_is_keyed_apart() -> None:
    model, (x, y) = tiny_model().eval(), blob_images(16)
    attack = AutoAttack(
        eps=8 / 255,
        version="custom",
        attacks=["apgd-ce", Square(eps=1, n_queries=10), "apgd-ce", APGD(eps=1, steps=3)],
        check_large_eps=False,
    )
    assert attack.names == ("apgd-ce", "square", "apgd-ce#2", "apgd-ce#3")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientMaskingWarning)
        result = attack.run(model, x, y)
    assert list(result.member_accuracy) == list(attack.names)
    assert len(result.robust_after) == 4


def _per_sample_ce(logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


def test_apgd_keeps_the_loss_it_was_given() -> None:
    model, (x, y) = tiny_model().eval(), blob_images(16)
    named = APGD(eps=8 / 255, steps=5, loss="ce")
    given = APGD(eps=8 / 255, steps=5, loss=_per_sample_ce)
    assert named.loss == "ce" and given.loss is _per_sample_ce
    assert callable(named.loss_fn) and given.loss_fn is _per_sample_ce
    assert given.replace(steps=3).loss is _per_sample_ce
    a, b = named.run(model, x, y), given.run(model, x, y)
    assert torch.equal(a.adversarial, b.adversarial)
    assert torch.equal(a.success_step, b.success_step)


def test_apgd_refuses_a_loss_that_is_not_per_sample() -> None:
    model, (x, y) = tiny_model().eval(), blob_images(4)
    with pytest.raises(ValueError, match=r"per-sample losses of shape \[\d+\], got shape \[\]"):
        APGD(eps=8 / 255, steps=2, loss=F.cross_entropy).run(model, x, y)
