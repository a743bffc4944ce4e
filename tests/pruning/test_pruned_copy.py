"""The pruned copy's fast paths make what the plain ones make: ``copy_model`` what
``copy.deepcopy`` makes, ``_sliced`` what indexing with the kept positions gives."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pruning_cases import SharedConv, randomize_batchnorm, tiny_vit
from torch import Tensor, nn

from advkit.models import resnet18
from advkit.pruning.apply import copy_model
from advkit.pruning.registry import _sliced


class CopiesItself(nn.Module):
    """A module with its own ``__deepcopy__``, which the fast path must call."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3))
        self.copied = 0

    def __deepcopy__(self, memo: dict[int, Any]) -> CopiesItself:
        clone = CopiesItself()
        clone.scale = copy.deepcopy(self.scale, memo)
        clone.copied = self.copied + 1
        return clone


class Odd(nn.Module):
    """Ties, a module registered twice, hooks, a bound-method hook, plain tensors and a user's
    attributes that point back into the model."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(3, 3)
        self.second = nn.Linear(3, 3)
        self.second.weight = self.first.weight  # tied
        self.again = self.first  # one module under two names
        self.custom = CopiesItself()
        self.register_buffer("steps", torch.tensor(4))
        self.register_buffer("scratch", torch.zeros(2), persistent=False)
        self.cache = torch.arange(3.0)  # a plain tensor attribute
        self.order = [self.first, self.second]  # a user's list of its own modules
        self.settings = {"mode": "sum", "sizes": (1, 2)}
        self.calls: list[int] = []
        self.register_forward_hook(self.count)
        self.first.register_forward_pre_hook(lambda module, args: None)

    def count(self, module: nn.Module, args: Any, output: Tensor) -> None:
        self.calls.append(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.custom.scale * self.second(self.first(x)) + self.cache


def _tensors(model: nn.Module) -> list[Tensor]:
    return [*model.parameters(), *model.buffers()]


def _assert_like_deepcopy(model: nn.Module, clone: nn.Module) -> None:
    """Same classes, attributes, states and modes as ``copy.deepcopy`` gives, nothing shared."""
    reference = copy.deepcopy(model)
    for (name, ours), (_, theirs) in zip(
        clone.named_modules(remove_duplicate=False),
        reference.named_modules(remove_duplicate=False),
        strict=True,
    ):
        assert type(ours) is type(theirs), name
        assert vars(ours).keys() == vars(theirs).keys(), name
        assert ours.training == theirs.training, name
    assert clone.state_dict().keys() == reference.state_dict().keys()
    for key, value in reference.state_dict().items():
        assert torch.equal(clone.state_dict()[key], value), key
    assert not {id(t) for t in _tensors(model)} & {id(t) for t in _tensors(clone)}
    assert not {id(m) for m in model.modules()} & {id(m) for m in clone.modules()}


def test_copy_keeps_ties_shared_modules_hooks_and_user_attributes() -> None:
    model = Odd()
    clone = copy_model(model)
    _assert_like_deepcopy(model, clone)
    assert clone.second.weight is clone.first.weight
    assert clone.again is clone.first
    assert clone.order[0] is clone.first and clone.order[1] is clone.second
    assert clone.custom.copied == 1  # the module's own __deepcopy__ ran
    assert clone.cache is not model.cache and torch.equal(clone.cache, model.cache)
    assert clone.settings == model.settings and clone.settings is not model.settings
    x = torch.rand(2, 3)
    torch.testing.assert_close(clone(x), model(x), rtol=0, atol=0)
    assert clone.calls == [1] and model.calls == [1]  # the hook is bound to each own module
    assert len(clone.first._forward_pre_hooks) == 1
    clone.first.weight.data.add_(1.0)  # nothing written into the caller's model
    assert not torch.equal(clone.first.weight, model.first.weight)


def test_copy_shares_exactly_the_tensors_given_in_memo() -> None:
    model = randomize_batchnorm(resnet18(num_classes=4))
    kept = model.backbone.conv1.weight
    clone = copy_model(model, {id(kept): kept})
    assert clone.backbone.conv1.weight is kept
    shared = {id(t) for t in _tensors(model)} & {id(t) for t in _tensors(clone)}
    assert shared == {id(kept)}


def test_copy_refuses_what_is_not_a_module() -> None:
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module, got Tensor"):
        copy_model(torch.zeros(2))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "build",
    [lambda: randomize_batchnorm(resnet18(num_classes=4)).train(), tiny_vit, SharedConv],
    ids=["resnet18-train", "vit", "shared-conv"],
)
def test_copy_of_real_models_matches_deepcopy(build: Any) -> None:
    torch.manual_seed(0)
    model = build()
    clone = copy_model(model)
    _assert_like_deepcopy(model, clone)
    x = torch.rand(2, 3, 16, 16)
    model.eval(), clone.eval()
    torch.testing.assert_close(clone(x), model(x), rtol=0, atol=0)


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    dim=st.integers(0, 3),
    data=st.data(),
    parameter=st.booleans(),
)
def test_sliced_equals_indexing_and_keeps_the_kind(
    shape: list[int], dim: int, data: st.DataObject, parameter: bool
) -> None:
    dim = dim % len(shape)
    values = torch.randn(shape)
    old = nn.Parameter(values, requires_grad=False) if parameter else values
    keep = sorted(data.draw(st.sets(st.integers(0, shape[dim] - 1), min_size=1)))
    index = torch.tensor(keep)
    new = _sliced(old, index, dim)
    assert torch.equal(new, values[(slice(None),) * dim + (index,)])
    assert isinstance(new, nn.Parameter) == parameter
    assert not new.requires_grad
    assert new.untyped_storage().data_ptr() != values.untyped_storage().data_ptr()
