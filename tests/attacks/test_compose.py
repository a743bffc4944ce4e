"""WorstCase and Transfer: composition keeps the base meaning of success_step and fooled."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from advkit.attacks import FGSM, IFGSM, MIFGSM, PGD, Attack
from advkit.attacks.compose import Transfer, WorstCase, iterate_count
from conftest import blob_images, tiny_model, train_tiny

MEMBERS = {
    "FGSM": lambda eps: FGSM(eps=eps),
    "IFGSM": lambda eps: IFGSM(eps=eps, steps=3),
    "MIFGSM": lambda eps: MIFGSM(eps=eps, steps=2),
    "PGD-no-start": lambda eps: PGD(eps=eps, steps=2, random_start=False),
}


@pytest.fixture(scope="module")
def data(trained_model_and_data: tuple[nn.Module, Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    _, images, labels = trained_model_and_data
    return images[:64], labels[:64]


@pytest.fixture(scope="module")
def surrogate() -> nn.Module:
    """A second tiny model trained on the same blobs from another initialization."""
    images, labels = blob_images(256)
    return train_tiny(tiny_model(seed=1), images, labels, epochs=20)


class NoGradTarget(nn.Module):
    """Wraps a model and refuses to be differentiated: a true black box."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: Tensor) -> Tensor:
        if torch.is_grad_enabled() and inputs.requires_grad:
            raise AssertionError("the target model was differentiated")
        return self.model(inputs)


@settings(max_examples=12)
@given(
    names=st.lists(st.sampled_from(sorted(MEMBERS)), min_size=1, max_size=3),
    eps_255=st.lists(st.sampled_from([0.0, 1.0, 3.0, 8.0]), min_size=3, max_size=3),
    early_stop=st.booleans(),
)
def test_worst_case_fools_exactly_the_union_of_its_members(
    trained_model_and_data: tuple[nn.Module, Tensor, Tensor],
    names: list[str],
    eps_255: list[float],
    early_stop: bool,
) -> None:
    model, images, labels = trained_model_and_data
    x, y = images[:48], labels[:48]
    members = [MEMBERS[name](eps / 255) for name, eps in zip(names, eps_255, strict=False)]
    worst = WorstCase(members).run(model, x, y, early_stop=early_stop)
    alone = torch.stack([member.run(model, x, y).fooled for member in members])
    # Never weaker than any member, and never stronger than all of them together.
    assert torch.equal(worst.fooled, alone.any(dim=0))
    robust_worst = int((~worst.fooled).sum())
    assert all(robust_worst <= int((~fooled).sum()) for fooled in alone)


def test_later_members_run_only_on_the_survivors(
    trained_model_and_data: tuple[nn.Module, Tensor, Tensor],
) -> None:
    model, images, labels = trained_model_and_data
    x, y = images[:64], labels[:64]
    first, second = FGSM(eps=4 / 255), IFGSM(eps=4 / 255, steps=3)
    survivors = int((~first.run(model, x, y).fooled).sum())
    assert 0 < survivors < 64  # the count below is a real test only if both sets are non-empty
    result = WorstCase([first, second]).run(model, x, y)
    assert result.grad_calls == 1 + 3
    assert result.grad_samples == 64 + 3 * survivors


def test_worst_case_numbers_points_across_members(data: tuple[Tensor, Tensor]) -> None:
    model = tiny_model().eval()  # untrained: many samples fooled at the start
    x, y = data
    first, second = IFGSM(eps=2 / 255, steps=2), IFGSM(eps=8 / 255, steps=4)
    worst = WorstCase([first, second])
    assert iterate_count(worst) == 3 + 5
    result = worst.run(model, x, y)
    by_first = first.run(model, x, y)
    by_second = second.run(model, x, y)
    expected = torch.where(
        by_first.fooled,
        by_first.success_step,
        torch.where(by_second.fooled, by_second.success_step + 3, -1),
    )
    assert torch.equal(result.success_step, expected)
    # success describes the returned example, as in the base class.
    assert torch.equal(result.success, result.logits.argmax(1) != y)
    assert torch.equal(result.logits, model(result.adversarial).detach())


def test_worst_case_adversarial_stays_in_the_largest_ball(data: tuple[Tensor, Tensor]) -> None:
    model = tiny_model().eval()
    x, y = data
    worst = WorstCase([FGSM(eps=2 / 255), IFGSM(eps=6 / 255, steps=2)])
    assert worst.eps == pytest.approx(6 / 255)
    adversarial = worst(model, x, y)
    assert float((adversarial - x).abs().max()) <= 6 / 255 + 1e-6
    assert float(adversarial.min()) >= 0 and float(adversarial.max()) <= 1


def test_worst_case_leaves_no_trace(data: tuple[Tensor, Tensor]) -> None:
    model = tiny_model().train()
    model[1].eval()
    flags = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = data
    x_before = x.clone()
    WorstCase([FGSM(eps=0.03), PGD(eps=0.03, steps=2, model_mode="train")]).run(model, x, y)
    assert [m.training for m in model.modules()] == flags
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(x, x_before)


def test_worst_case_replace_changes_every_member() -> None:
    worst = WorstCase([FGSM(eps=0.1), IFGSM(eps=0.2, steps=2)])
    changed = worst.replace(eps=0.05)
    assert isinstance(changed, WorstCase)
    assert [m.eps for m in changed.attacks] == [0.05, 0.05]
    swapped = worst.replace(attacks=[FGSM(eps=0.3)])
    assert isinstance(swapped, WorstCase) and swapped.eps == 0.3
    assert repr(worst) == "WorstCase([FGSM(eps=0.1), IFGSM(eps=0.2, steps=2)])"


def test_worst_case_per_sample_eps_is_the_elementwise_largest() -> None:
    worst = WorstCase([FGSM(eps=torch.tensor([0.1, 0.3])), FGSM(eps=0.2)])
    assert isinstance(worst.eps, Tensor)
    assert torch.allclose(worst.eps, torch.tensor([0.2, 0.3]))


@pytest.mark.parametrize(
    ("attacks", "error", "match"),
    [
        ([], ValueError, "at least one attack"),
        ([FGSM(eps=0.1), "PGD"], TypeError, "every member must be an advkit Attack"),
        (FGSM(eps=0.1), TypeError, "sequence of Attack objects"),
        ([FGSM(eps=0.1), FGSM(eps=0.1, bounds=(-1, 1))], ValueError, "share bounds"),
        ([FGSM(eps=0.1), FGSM(eps=0.1, targeted=True)], ValueError, "targeted or all untargeted"),
        (
            [FGSM(eps=torch.ones(2)), FGSM(eps=torch.ones(3))],
            ValueError,
            "one common length",
        ),
    ],
)
def test_worst_case_rejects_bad_members(attacks: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        WorstCase(attacks)  # type: ignore[arg-type]


def test_worst_case_replace_rejects_mixed_changes() -> None:
    with pytest.raises(TypeError, match="either attacks or member settings"):
        WorstCase([FGSM(eps=0.1)]).replace(attacks=[FGSM(eps=0.2)], eps=0.3)


# -- Transfer ----------------------------------------------------------------------------------


def test_transfer_crafts_on_the_surrogate_and_only_queries_the_target(
    trained_model_and_data: tuple[nn.Module, Tensor, Tensor],
    surrogate: nn.Module,
    data: tuple[Tensor, Tensor],
) -> None:
    target, _, _ = trained_model_and_data
    x, y = data
    inner = IFGSM(eps=8 / 255, steps=3)
    result = Transfer(surrogate, inner).run(NoGradTarget(target), x, y)
    crafted = inner(surrogate, x, y)
    assert torch.equal(result.adversarial, crafted)
    with torch.no_grad():
        clean_wrong = target(x).argmax(1) != y
        final_wrong = target(crafted).argmax(1) != y
    expected = torch.where(clean_wrong, 0, torch.where(final_wrong, 1, -1))
    assert torch.equal(result.success_step, expected)
    assert torch.equal(result.success, final_wrong)
    assert (result.grad_calls, result.grad_samples) == (3, 3 * 64)
    assert iterate_count(Transfer(surrogate, inner)) == 2


def test_transfer_from_the_model_itself_is_no_stronger_than_white_box(
    trained_model_and_data: tuple[nn.Module, Tensor, Tensor], data: tuple[Tensor, Tensor]
) -> None:
    model, _, _ = trained_model_and_data
    x, y = data
    inner = IFGSM(eps=4 / 255, steps=3)
    transfer = Transfer(model, inner).run(model, x, y)
    white_box = inner.run(model, x, y)
    # The transfer visits a subset of the white-box points (clean and last iterate).
    assert bool((white_box.fooled | ~transfer.fooled).all())
    assert torch.equal(transfer.success, white_box.success)


def test_transfer_early_stop_only_skips_samples_the_target_gets_wrong(
    surrogate: nn.Module, data: tuple[Tensor, Tensor]
) -> None:
    target = tiny_model(seed=3).eval()  # untrained: gets many samples wrong
    x, y = data
    transfer = Transfer(surrogate, IFGSM(eps=8 / 255, steps=2))
    full = transfer.run(target, x, y)
    early = transfer.run(target, x, y, early_stop=True)
    assert torch.equal(full.fooled, early.fooled)
    skipped = full.success_step == 0
    assert 0 < int(skipped.sum()) < 64
    assert early.grad_samples == 2 * int((~skipped).sum())
    assert torch.equal(early.adversarial[skipped], x[skipped])
    assert torch.equal(early.adversarial[~skipped], full.adversarial[~skipped])


def test_transfer_leaves_both_models_as_they_were(
    surrogate: nn.Module, data: tuple[Tensor, Tensor]
) -> None:
    target = tiny_model(seed=2).train()
    own = tiny_model(seed=4).train()
    flags = [m.training for m in [*target.modules(), *own.modules()]]
    x, y = data
    Transfer(own, PGD(eps=0.03, steps=2)).run(target, x, y, generator=torch.Generator())
    assert [m.training for m in [*target.modules(), *own.modules()]] == flags
    assert all(p.grad is None for p in [*target.parameters(), *own.parameters()])


def test_transfer_replace_and_repr(surrogate: nn.Module) -> None:
    transfer = Transfer(surrogate, IFGSM(eps=0.1, steps=2))
    changed = transfer.replace(eps=0.2)
    assert isinstance(changed, Transfer) and changed.attack.eps == 0.2 and changed.eps == 0.2
    assert changed.surrogate is surrogate
    assert repr(transfer) == "Transfer(surrogate=Sequential, attack=IFGSM(eps=0.1, steps=2))"


@pytest.mark.parametrize(
    ("surrogate", "attack", "match"),
    [
        ("model", FGSM(eps=0.1), r"surrogate must be a torch\.nn\.Module"),
        (nn.Linear(2, 2), "FGSM", "attack must be an advkit Attack"),
    ],
)
def test_transfer_rejects_bad_arguments(surrogate: object, attack: object, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        Transfer(surrogate, attack)  # type: ignore[arg-type]


def test_compositions_are_attacks() -> None:
    assert issubclass(WorstCase, Attack) and issubclass(Transfer, Attack)
    nested = WorstCase([Transfer(nn.Linear(2, 2), FGSM(eps=0.1)), IFGSM(eps=0.1, steps=4)])
    assert iterate_count(nested) == 2 + 5


def test_per_sample_eps_follows_the_survivors(
    surrogate: nn.Module, data: tuple[Tensor, Tensor]
) -> None:
    model = tiny_model().eval()
    x, y = data
    eps = torch.linspace(0, 8 / 255, 64)
    members = [FGSM(eps=eps), IFGSM(eps=eps.flip(0), steps=2)]
    worst = WorstCase(members).run(model, x, y, early_stop=True)
    alone = torch.stack([member.run(model, x, y).fooled for member in members])
    assert torch.equal(worst.fooled, alone.any(dim=0))
    transfer = Transfer(surrogate, IFGSM(eps=eps, steps=2))
    assert torch.equal(
        transfer.run(model, x, y, early_stop=True).fooled, transfer.run(model, x, y).fooled
    )
