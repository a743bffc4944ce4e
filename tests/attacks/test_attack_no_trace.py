"""An attack leaves the model exactly as it found it."""

from __future__ import annotations

import pytest
import torch
from attack_cases import ATTACK_FACTORIES
from torch import nn

from advkit import PGD
from conftest import tiny_model

NAMES = sorted(ATTACK_FACTORIES)


def _snapshot(model: nn.Module) -> dict[str, object]:
    return {
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grad": [p.grad for p in model.parameters()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
    }


def _mixed_state_model() -> nn.Module:
    """Some submodules in train mode, some in eval; some parameters frozen."""
    model = tiny_model()
    model.train()
    model[1].eval()  # first BatchNorm in eval, second one in train mode
    model[0].weight.requires_grad_(False)
    # Non-trivial running statistics, so "untouched" is a real check.
    with torch.no_grad():
        model[4].running_mean.uniform_(-1, 1)
        model[4].running_var.uniform_(0.5, 2)
    return model


def _assert_same(before: dict[str, object], model: nn.Module) -> None:
    after = _snapshot(model)
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert all(g is None for g in after["grad"])  # type: ignore[union-attr]
    for key, value in before["state"].items():  # type: ignore[union-attr]
        assert torch.equal(value, after["state"][key]), key  # type: ignore[index]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("model_mode", ["eval", "train"])
def test_attack_leaves_no_trace(name: str, model_mode: str, batch) -> None:
    model = _mixed_state_model()
    before = _snapshot(model)
    images, labels = batch
    attack = ATTACK_FACTORIES[name](0.1).replace(model_mode=model_mode)
    attack(model, images, labels)
    attack.run(model, images, labels, early_stop=True)
    _assert_same(before, model)


def test_flags_restored_when_the_model_raises(batch) -> None:
    model = _mixed_state_model()
    before = _snapshot(model)

    class Exploding(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.inner(x)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        PGD(eps=0.1, steps=2)(Exploding(), *batch)
    _assert_same(before, model)


def test_attack_runs_model_in_eval_mode_by_default(batch) -> None:
    seen: list[bool] = []
    model = tiny_model().train()
    model[1].register_forward_pre_hook(lambda module, args: seen.append(module.training))
    PGD(eps=0.1, steps=2)(model, *batch)
    assert seen and not any(seen)
    seen.clear()
    PGD(eps=0.1, steps=2, model_mode="train")(model, *batch)
    assert seen and all(seen)


def test_global_rng_untouched_by_random_start(model: nn.Module, batch) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    PGD(eps=0.1, steps=2)(model, *batch, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.rand(3), expected)
