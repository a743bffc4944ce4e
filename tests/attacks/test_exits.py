"""Per-sample exits (``exit_fooled``): the same samples fooled, at the same points, for less work."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advkit.attacks import APGD, APGDT, FAB, Attack


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 5)).eval()


MEMBERS: dict[str, type[Attack]] = {"APGD": APGD, "APGDT": APGDT, "FAB": FAB}


def _build(name: str, **options: object) -> Attack:
    if name == "APGD":
        return APGD(eps=0.05, steps=12, n_restarts=2, **options)  # type: ignore[arg-type]
    if name == "APGDT":
        return APGDT(eps=0.05, steps=12, n_target_classes=3, **options)  # type: ignore[arg-type]
    return FAB(eps=0.05, steps=8, n_target_classes=3, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(MEMBERS))
def test_a_sample_exits_only_when_fooled(name: str) -> None:
    model = _model()
    x = torch.rand(40, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    y = torch.arange(40) % 5
    reference = _build(name).run(model, x, y, generator=torch.Generator().manual_seed(0))
    fast = _build(name, exit_fooled=True).run(
        model, x, y, generator=torch.Generator().manual_seed(0)
    )
    # The same samples are fooled, at the same first point: the robust count is unchanged.
    assert torch.equal(fast.success_step, reference.success_step)
    assert int((~fast.fooled).sum()) == int((~reference.fooled).sum())
    assert torch.equal(fast.fooled, fast.success)  # the kept point is a fooling one
    fooled_during = (reference.success_step > 0).any()
    assert fooled_during, "the case must have samples that fall during the attack"
    assert fast.work.forward_equivalents < reference.work.forward_equivalents
    # The option is the run's early_stop, on every call.
    early = _build(name).run(
        model, x, y, generator=torch.Generator().manual_seed(0), early_stop=True
    )
    assert early.work == fast.work


@pytest.mark.parametrize("name", sorted(MEMBERS))
def test_exit_fooled_is_recorded_and_checked(name: str) -> None:
    attack = _build(name, exit_fooled=True)
    assert attack.settings["exit_fooled"] is True
    assert attack.replace(exit_fooled=False).exit_fooled is False  # type: ignore[attr-defined]
    assert "exit_fooled" not in _build(name).settings  # the reference is the default
    with pytest.raises(TypeError, match="exit_fooled"):
        _build(name, exit_fooled="yes")
