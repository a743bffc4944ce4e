"""GradientAttack.iterates: the one walk that run(), __call__ and the grid follow."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advkit import FGSM, IFGSM, MIFGSM, PGD, WorstCase
from advkit.attacks import Step, Transfer
from conftest import blob_images, tiny_model


def test_the_walk_visits_steps_plus_one_points_and_ends_where_the_call_ends() -> None:
    model = tiny_model().eval()
    images, labels = blob_images(8)
    attack = MIFGSM(eps=8 / 255, steps=4)
    walk = list(attack.iterates(model, images, labels))
    assert [step.index for step in walk] == [0, 1, 2, 3, 4]
    assert all(step.logits is not None and step.grad is not None for step in walk[:-1])
    assert walk[-1].last and walk[-1].logits is None and walk[-1].direction is None
    assert torch.equal(walk[0].inputs, images)
    assert torch.equal(walk[-1].inputs, attack(model, images, labels))
    # Each point's logits are the model's at that point.
    torch.testing.assert_close(walk[2].logits, model(walk[2].inputs))


def test_narrowing_drops_samples_from_the_rest_of_the_walk() -> None:
    model = tiny_model().eval()
    images, labels = blob_images(8)
    attack = IFGSM(eps=8 / 255, steps=3)
    full = list(attack.iterates(model, images, labels))
    sizes, last = [], None
    for step in attack.iterates(model, images, labels):
        sizes.append(step.positions.tolist())
        if step.index == 1:
            step.narrow(torch.arange(step.positions.numel()) % 2 == 0)
        last = step
    assert sizes[:2] == [list(range(8))] * 2 and sizes[2:] == [[0, 2, 4, 6]] * 2
    # A sample's walk does not depend on the rest of the batch (eval mode).
    assert last is not None
    torch.testing.assert_close(last.inputs, full[-1].inputs[::2], rtol=0, atol=0)


def test_narrowing_everyone_ends_the_walk() -> None:
    model = tiny_model().eval()
    images, labels = blob_images(4)
    seen = []
    for step in IFGSM(eps=0.1, steps=5).iterates(model, images, labels):
        seen.append(step.index)
        step.narrow(torch.zeros(step.positions.numel(), dtype=torch.bool))
    assert seen == [0]


def test_a_given_start_gradient_costs_no_pass_and_changes_nothing() -> None:
    model = tiny_model().eval()
    images, labels = blob_images(6)
    attack = IFGSM(eps=8 / 255, steps=3)
    first = next(attack.iterates(model, images, labels))
    calls = []
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    walk = list(attack.iterates(model, images, labels, start_gradient=(first.logits, first.grad)))
    hook.remove()
    assert len(calls) == 2  # steps 1 and 2; the start was given, the last point is not judged
    assert not walk[0].grad_computed and walk[1].grad_computed
    assert torch.equal(walk[-1].inputs, attack(model, images, labels))


def test_the_model_is_guarded_during_the_walk_and_restored_when_it_is_closed() -> None:
    model = tiny_model().train()
    images, labels = blob_images(4)
    walk = PGD(eps=0.1, steps=3).iterates(model, images, labels, generator=torch.Generator())
    next(walk)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    walk.close()
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())


def test_bad_walks_are_clear_errors() -> None:
    model = tiny_model().eval()
    images, labels = blob_images(4)
    with pytest.raises(ValueError, match="inputs must lie inside bounds"):
        next(IFGSM(eps=0.1, steps=2).iterates(model, images + 2, labels))
    with pytest.raises(ValueError, match="labels must be < the number of classes 4, got maximum 9"):
        next(IFGSM(eps=0.1, steps=2).iterates(model, images, torch.full((4,), 9)))
    with pytest.raises(ValueError, match="PGD cannot start from a given gradient"):
        start = (torch.zeros(4, 4), torch.zeros_like(images))
        next(PGD(eps=0.1, steps=2).iterates(model, images, labels, start_gradient=start))


def test_step_records_are_small_objects() -> None:
    step = Step(0, torch.arange(2), torch.zeros(2, 3), torch.zeros(2), None, None, None, False)
    assert step.last and step.keep is None
    step.narrow(torch.tensor([True, False]))
    assert step.keep is not None and step.keep.tolist() == [True, False]


def test_composites_answer_for_themselves() -> None:
    fgsm, ifgsm = FGSM(eps=0.1), IFGSM(eps=0.1, steps=3)
    worst = WorstCase([fgsm, ifgsm])
    assert fgsm.iterate_count() == 2 and ifgsm.iterate_count() == 4
    assert worst.iterate_count() == 6 and worst.members() == (fgsm, ifgsm)
    surrogate = nn.Flatten()
    transfer = Transfer(surrogate, ifgsm)
    assert transfer.members() == (ifgsm,) and transfer.surrogates() == (surrogate,)
    assert transfer.iterate_count() == 2 and fgsm.members() == () and fgsm.surrogates() == ()
    eps = torch.tensor([0.1, 0.2, 0.3])
    restricted = WorstCase([FGSM(eps=eps)]).restrict(torch.tensor([0, 2]), 3)
    assert isinstance(restricted, WorstCase)
    assert restricted.members()[0].eps.tolist() == pytest.approx([0.1, 0.3])


def test_following_the_walk_is_run_and_observes_every_step() -> None:
    model = tiny_model().eval()
    images, labels = blob_images(8)
    attack = MIFGSM(eps=8 / 255, steps=3)
    seen: list[int] = []
    result = attack.iterates(model, images, labels).follow(observe=lambda s: seen.append(s.index))
    expected = attack.run(model, images, labels)
    assert seen == [0, 1, 2, 3]
    assert torch.equal(result.adversarial, expected.adversarial)
    assert torch.equal(result.success_step, expected.success_step)
    assert (result.grad_calls, result.grad_samples) == (expected.grad_calls, expected.grad_samples)


def test_a_step_toward_another_ball_is_the_attacks_own_step() -> None:
    model = tiny_model().eval()
    images, labels = blob_images(6)
    attack = IFGSM(eps=8 / 255, steps=3, alpha=1 / 255)
    walk = list(attack.iterates(model, images, labels))
    everyone = torch.ones(6, dtype=torch.bool)
    same = walk[1].toward(torch.full((6,), 8 / 255), everyone)
    assert torch.equal(same, walk[2].inputs)  # its own ball: the walk's next point
    some = torch.tensor([True, False, True, False, False, True])
    smaller = walk[1].toward(torch.full((3,), 1.5 / 255), some)
    assert float((smaller - images[some]).abs().max()) <= 1.5 / 255 + 1e-7
    with pytest.raises(ValueError, match="last point of a walk has no next step"):
        walk[-1].toward(torch.full((6,), 0.1), everyone)


class _NoisyStartIFGSM(IFGSM):
    """Starts at a fixed offset: its walk does not start at the clean input."""

    starts_at_center = False

    def _start(self, ball, generator):  # type: ignore[no-untyped-def]
        return ball.project(ball.center + ball.eps / 2)


def test_the_attack_says_whether_its_walks_are_shared() -> None:
    assert IFGSM(eps=0.1, steps=2).shares_walks() and FGSM(eps=0.1).shares_walks()
    assert PGD(eps=0.1, steps=2, random_start=False).shares_walks()
    assert not PGD(eps=0.1, steps=2).shares_walks()
    assert not IFGSM(eps=0.1, steps=2, model_mode="train").shares_walks()
    attack = _NoisyStartIFGSM(eps=0.1, steps=2)
    assert not attack.shares_walks()
    model = tiny_model().eval()
    images, labels = blob_images(4)
    with pytest.raises(ValueError, match="_NoisyStartIFGSM cannot start from a given gradient"):
        start = (torch.zeros(4, 4), torch.zeros_like(images))
        next(attack.iterates(model, images, labels, start_gradient=start))
