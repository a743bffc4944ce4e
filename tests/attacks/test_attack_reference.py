"""The attacks agree element for element with the papers' formulas and with torchattacks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advkit import BIM, FGSM, IFGSM, MIFGSM, PGD


def _grad(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return g


def _reference_ifgsm(model: nn.Module, x0: Tensor, y: Tensor, eps: float, alpha: float, steps: int):
    x = x0.clone()
    for _ in range(steps):
        x = torch.clamp(x + alpha * _grad(model, x, y).sign(), x0 - eps, x0 + eps).clamp(0, 1)
    return x


def _reference_mifgsm(model, x0, y, eps: float, alpha: float, steps: int, decay: float):
    """Dong et al. 2018, Algorithm 1, with the L1 norm taken per sample."""
    x, g = x0.clone(), torch.zeros_like(x0)
    for _ in range(steps):
        grad = _grad(model, x, y)
        l1 = grad.abs().flatten(1).sum(dim=1).view(-1, 1, 1, 1)
        g = decay * g + grad / l1
        x = torch.clamp(x + alpha * g.sign(), x0 - eps, x0 + eps).clamp(0, 1)
    return x


def test_fgsm_is_the_plain_formula(reference_case) -> None:
    model, x, y = reference_case
    eps = 8 / 255
    expected = torch.clamp(x + eps * _grad(model, x, y).sign(), 0, 1)
    assert torch.equal(FGSM(eps=eps)(model, x, y), expected)


@pytest.mark.parametrize("steps", [1, 5, 10])
def test_ifgsm_is_the_plain_formula(reference_case, steps: int) -> None:
    model, x, y = reference_case
    eps, alpha = 8 / 255, 2 / 255
    expected = _reference_ifgsm(model, x, y, eps, alpha, steps)
    assert torch.equal(IFGSM(eps=eps, steps=steps, alpha=alpha)(model, x, y), expected)


def test_ifgsm_default_alpha_is_eps_over_steps(reference_case) -> None:
    model, x, y = reference_case
    eps = torch.full((x.shape[0],), 8 / 255)  # tensor arithmetic, as the attack does it
    alpha = float((eps / 4)[0])
    expected = _reference_ifgsm(model, x, y, float(eps[0]), alpha, 4)
    assert torch.equal(IFGSM(eps=float(eps[0]), steps=4)(model, x, y), expected)
    assert BIM is IFGSM


def test_pgd_without_random_start_is_ifgsm_with_its_alpha(reference_case) -> None:
    model, x, y = reference_case
    pgd = PGD(eps=0.03, steps=5, random_start=False)
    ifgsm = IFGSM(eps=0.03, steps=5, alpha=float(torch.tensor(2.5 * 0.03) / 5))
    torch.testing.assert_close(pgd(model, x, y), ifgsm(model, x, y), rtol=0, atol=1e-7)


def test_pgd_random_start_is_reproducible_with_a_generator(reference_case) -> None:
    model, x, y = reference_case
    attack = PGD(eps=0.03, steps=2)
    first = attack(model, x, y, generator=torch.Generator().manual_seed(1))
    again = attack(model, x, y, generator=torch.Generator().manual_seed(1))
    other = attack(model, x, y, generator=torch.Generator().manual_seed(2))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_pgd_start_is_uniform_in_the_ball() -> None:
    """With a zero-gradient model, one tiny step reveals the start: spread over the ball."""
    x = torch.full((4000, 1, 1, 1), 0.5)
    y = torch.zeros(4000, dtype=torch.long)

    class Constant(nn.Module):
        def forward(self, inputs: Tensor) -> Tensor:
            return torch.zeros(inputs.shape[0], 2) + 0 * inputs.flatten(1)[:, :1]

    adversarial = PGD(eps=0.1, steps=1, alpha=1e-6)(
        Constant(), x, y, generator=torch.Generator().manual_seed(0)
    )
    delta = (adversarial - x).flatten()
    assert delta.abs().max() <= 0.1 + 1e-6
    assert abs(delta.mean().item()) < 0.005  # uniform: mean 0, std eps / sqrt(3)
    assert abs(delta.std().item() - 0.1 / 3**0.5) < 0.003


@pytest.mark.parametrize("decay", [0.0, 0.5, 1.0])
def test_mifgsm_is_the_papers_rule(reference_case, decay: float) -> None:
    model, x, y = reference_case
    eps, alpha, steps = 8 / 255, 1 / 255, 6
    expected = _reference_mifgsm(model, x, y, eps, alpha, steps, decay)
    got = MIFGSM(eps=eps, steps=steps, alpha=alpha, decay=decay)(model, x, y)
    # mean |g| instead of sum |g| is a constant factor per sample: only rounding can differ.
    assert (got != expected).float().mean() < 1e-3
    torch.testing.assert_close(got, expected, rtol=0, atol=alpha * 2 + 1e-6)


def test_mifgsm_zero_gradient_gives_no_nan() -> None:
    x, y = torch.rand(3, 1, 2, 2), torch.zeros(3, dtype=torch.long)

    class Flat(nn.Module):
        def forward(self, inputs: Tensor) -> Tensor:
            return 0 * inputs.flatten(1)[:, :2]

    adversarial = MIFGSM(eps=0.1, steps=3)(Flat(), x, y)
    assert torch.equal(adversarial, x)
