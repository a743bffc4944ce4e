"""During an attack the model's parameters are frozen, so no parameter gradient is ever built."""

from __future__ import annotations

import pytest
import torch
from attack_cases import ATTACK_FACTORIES
from torch import Tensor, nn

from conftest import blob_images, tiny_model


class _Recorder(nn.Module):
    """Wraps a model and records the parameters' requires_grad flags seen by each forward."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen: list[list[bool]] = []

    def forward(self, inputs: Tensor) -> Tensor:
        self.seen.append([p.requires_grad for p in self.inner.parameters()])
        return self.inner(inputs)


@pytest.mark.parametrize("name", sorted(ATTACK_FACTORIES))
@pytest.mark.parametrize("autocast", [None, torch.bfloat16])
def test_parameters_are_frozen_inside_and_restored_after(name: str, autocast) -> None:
    x, y = blob_images(8)
    inner = tiny_model()
    inner[0].weight.requires_grad_(False)  # a mixed state, restored exactly
    model = _Recorder(inner).eval()
    before = [p.requires_grad for p in model.parameters()]
    attack = ATTACK_FACTORIES[name](0.03).replace(autocast=autocast)
    attack.run(model, x, y)
    assert model.seen and all(not any(flags) for flags in model.seen)
    assert [p.requires_grad for p in model.parameters()] == before
    assert all(p.grad is None for p in model.parameters())


def test_a_module_used_twice_gets_its_own_flags_back() -> None:
    x, y = blob_images(8)
    shared = nn.Linear(4, 4)
    shared.weight.requires_grad_(False)
    model = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 4), shared, nn.ReLU(), shared)
    model.eval()
    ATTACK_FACTORIES["IFGSM"](0.03)(model, x, y)
    assert shared.weight.requires_grad is False and shared.bias.requires_grad is True
    assert all(p.grad is None for p in model.parameters())
