"""AttackResult: success, logits, the first fooling iterate, and early stopping."""

from __future__ import annotations

import pytest
import torch
from attack_cases import ATTACK_FACTORIES

from advkit import IFGSM, PGD


@pytest.mark.parametrize("name", sorted(ATTACK_FACTORIES))
def test_run_agrees_with_call_and_reports_final_logits(trained_model_and_data, name: str) -> None:
    model, images, labels = trained_model_and_data
    attack = ATTACK_FACTORIES[name](8 / 255)
    gen = torch.Generator().manual_seed(0)
    result = attack.run(model, images, labels, generator=gen)
    assert torch.equal(
        result.adversarial, attack(model, images, labels, generator=gen.manual_seed(0))
    )
    with torch.no_grad():
        logits = model(result.adversarial)
    torch.testing.assert_close(result.logits, logits)
    assert torch.equal(result.success, logits.argmax(dim=1) != labels)
    # The last iterate fooling the model means some iterate did.
    assert torch.all(result.fooled[result.success])


def test_success_step_is_the_first_fooling_iterate(trained_model_and_data) -> None:
    model, images, labels = trained_model_and_data
    steps = 6
    result = IFGSM(eps=8 / 255, steps=steps).run(model, images, labels)
    # Recompute every iterate by hand: x_t is IFGSM with t steps at the same alpha.
    alpha = float(torch.tensor(8 / 255) / steps)
    first = torch.full_like(labels, -1)
    for t in range(steps + 1):
        x_t = images if t == 0 else IFGSM(eps=8 / 255, steps=t, alpha=alpha)(model, images, labels)
        with torch.no_grad():
            fooled = model(x_t).argmax(dim=1) != labels
        first = torch.where((first < 0) & fooled, t, first)
    assert torch.equal(result.success_step, first)
    assert result.grad_calls == steps and result.grad_samples == steps * len(labels)


@pytest.mark.parametrize("name", sorted(ATTACK_FACTORIES))
def test_early_stop_fools_exactly_the_same_samples(trained_model_and_data, name: str) -> None:
    model, images, labels = trained_model_and_data
    attack = ATTACK_FACTORIES[name](4 / 255)
    full = attack.run(model, images, labels, generator=torch.Generator().manual_seed(0))
    early = attack.run(
        model, images, labels, generator=torch.Generator().manual_seed(0), early_stop=True
    )
    assert torch.equal(early.success_step, full.success_step)
    assert torch.equal(early.fooled, early.success)  # the kept iterate is the fooling one
    assert early.grad_samples <= full.grad_samples
    # Samples never fooled ran every step and end where the full run ends.
    robust = ~full.fooled
    torch.testing.assert_close(early.adversarial[robust], full.adversarial[robust])
    assert (early.adversarial - images).abs().max() <= 4 / 255 + 2**-23


def test_early_stop_saves_work_on_an_easy_target(trained_model_and_data) -> None:
    model, images, labels = trained_model_and_data
    early = PGD(eps=0.3, steps=10).run(model, images, labels, early_stop=True)
    assert early.fooled.all()
    assert early.grad_samples < 0.5 * 10 * len(labels)
