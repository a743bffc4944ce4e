"""The L2 threat model and the L2 attacks: textbook formulas, torchattacks, and the ball's laws."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
import torchattacks
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn

from advkit import FGSM, IFGSM, MIFGSM, PGD
from advkit.attacks import L2Ball, LinfBall, threat_model

BOUNDS = (0.0, 1.0)
TOL = 1e-5  # relative: eps / ||delta|| * delta rounds each element


@st.composite
def balls(draw: st.DrawFn) -> tuple[L2Ball, Tensor]:
    """A ball of per-sample radii (zero and past the box included) and a far-away point."""
    seed = draw(st.integers(0, 2**31 - 1))
    batch = draw(st.integers(1, 5))
    gen = torch.Generator().manual_seed(seed)
    center = torch.rand(batch, 3, 4, 4, generator=gen, dtype=torch.float64)
    center[0, 0, 0] = torch.tensor([0.0, 1.0, 0.5, 1e-8])  # the box's edges, and near them
    radii = draw(st.lists(st.sampled_from([0.0, 1e-6, 0.1, 0.5, 2.0, 10.0]),
                          min_size=batch, max_size=batch))  # fmt: skip
    eps = torch.tensor(radii, dtype=torch.float64).view(-1, 1, 1, 1)
    scale = draw(st.sampled_from([0.0, 0.01, 1.0, 5.0]))
    point = center + scale * torch.randn(center.shape, generator=gen, dtype=torch.float64)
    return L2Ball(center, eps, BOUNDS), point


def _norms(values: Tensor) -> Tensor:
    return values.flatten(1).norm(dim=1)


@given(balls())
def test_projection_lands_in_the_ball_and_the_box(case: tuple[L2Ball, Tensor]) -> None:
    ball, point = case
    projected = ball.project(point)
    assert projected.min() >= 0 and projected.max() <= 1
    assert torch.all(_norms(projected - ball.center) <= ball.eps.flatten() * (1 + TOL) + 1e-12)


@given(balls())
def test_projection_is_idempotent_and_keeps_points_of_the_set(case: tuple[L2Ball, Tensor]) -> None:
    ball, point = case
    once = ball.project(point)
    torch.testing.assert_close(ball.project(once), once, rtol=0, atol=1e-12)


@given(balls())
def test_projection_is_the_scale_then_clip_formula(case: tuple[L2Ball, Tensor]) -> None:
    """torchattacks' PGDL2 and Madry et al.: delta * min(1, eps / ||delta||), then the box."""
    ball, point = case
    delta = point - ball.center
    norms = _norms(delta).view(-1, 1, 1, 1)
    factor = torch.minimum(ball.eps / norms, torch.ones_like(norms)).nan_to_num(1.0)
    expected = torch.clamp(ball.center + delta * factor, *BOUNDS)
    torch.testing.assert_close(ball.project(point), expected, rtol=0, atol=1e-12)


@given(balls(), st.sampled_from([0.01, 0.3, 1.0]))
def test_step_follows_the_unit_gradient(case: tuple[L2Ball, Tensor], alpha: float) -> None:
    ball, point = case
    grad = point - 0.5  # any direction, zero rows included where point == 0.5
    unit = grad / _norms(grad).view(-1, 1, 1, 1)
    expected = ball.project(ball.center + alpha * unit.nan_to_num(0.0))
    torch.testing.assert_close(ball.step(ball.center, grad, alpha), expected, rtol=0, atol=1e-12)


def test_zero_gradient_gives_no_step() -> None:
    ball = L2Ball(torch.rand(2, 3, 4, 4), torch.full((2, 1, 1, 1), 0.5), BOUNDS)
    direction = L2Ball.direction(torch.zeros(2, 3, 4, 4))
    assert torch.equal(direction, torch.zeros(2, 3, 4, 4))
    assert torch.equal(ball.step(ball.center, torch.zeros(2, 3, 4, 4), 0.1), ball.center)


@given(balls())
def test_subset_is_the_ball_of_the_kept_samples(case: tuple[L2Ball, Tensor]) -> None:
    ball, point = case
    keep = torch.arange(ball.center.shape[0]) % 2 == 0
    expected = L2Ball(ball.center[keep], ball.eps[keep], BOUNDS).project(point[keep])
    assert torch.equal(ball.subset(keep).project(point[keep]), expected)


def test_random_start_is_uniform_in_the_ball() -> None:
    """In d dimensions, P(||delta|| <= r * eps) = r**d: the radius ** d is uniform on [0, 1]."""
    d, n, eps = 12, 4000, 0.2
    center = torch.full((n, 3, 2, 2), 0.5, dtype=torch.float64)  # eps is far from the box
    ball = L2Ball(center, torch.full((n, 1, 1, 1), eps, dtype=torch.float64), BOUNDS)
    delta = (ball.random_point(torch.Generator().manual_seed(0)) - center).flatten(1)
    radius = delta.norm(dim=1) / eps
    assert radius.max() <= 1 + 1e-12
    u = (radius**d).sort().values
    ks = (u - torch.arange(1, n + 1, dtype=torch.float64) / n).abs().max().item()
    assert ks < 1.63 / math.sqrt(n)  # Kolmogorov-Smirnov at the 1% level
    # ... and the direction is uniform on the sphere: every coordinate's mean is ~0.
    unit = delta / delta.norm(dim=1, keepdim=True)
    assert unit.mean(dim=0).abs().max() < 4 / math.sqrt(n)


def test_random_start_is_seeded_by_the_generator() -> None:
    ball = L2Ball(torch.rand(3, 3, 4, 4), torch.full((3, 1, 1, 1), 0.5), BOUNDS)
    first = ball.random_point(torch.Generator().manual_seed(5))
    assert torch.equal(first, ball.random_point(torch.Generator().manual_seed(5)))


def test_threat_model_by_norm() -> None:
    assert threat_model("Linf") is LinfBall and threat_model("L2") is L2Ball
    with pytest.raises(ValueError, match=r"norm must be one of \['L2', 'Linf'\], got 'L1'"):
        threat_model("L1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="norm must be one of"):
        PGD(eps=0.1, steps=2, norm="l2")  # type: ignore[arg-type]


def _grad(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return g


def _unit(g: Tensor) -> Tensor:
    return g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


def _project(x: Tensor, x0: Tensor, eps: float) -> Tensor:
    delta = x - x0
    factor = (eps / delta.flatten(1).norm(dim=1)).clamp(max=1).view(-1, 1, 1, 1)
    return (x0 + delta * factor).clamp(0, 1)


def test_fgsm_l2_is_one_step_of_size_eps(reference_case) -> None:
    model, x, y = reference_case
    expected = _project(x + 0.5 * _unit(_grad(model, x, y)), x, 0.5)
    torch.testing.assert_close(FGSM(eps=0.5, norm="L2")(model, x, y), expected, rtol=0, atol=1e-6)


def test_ifgsm_l2_is_the_plain_formula(reference_case) -> None:
    model, x0, y = reference_case
    eps, alpha, x = 0.5, 0.1, x0.clone()
    for _ in range(6):
        x = _project(x + alpha * _unit(_grad(model, x, y)), x0, eps)
    ours = IFGSM(eps=eps, steps=6, alpha=alpha, norm="L2")(model, x0, y)
    torch.testing.assert_close(ours, x, rtol=0, atol=1e-6)


def test_mifgsm_l2_normalizes_the_momentum_as_the_paper(reference_case) -> None:
    """Dong et al. 2018, the L2 version: g <- mu g + grad / ||grad||_1; x <- x + a g / ||g||_2."""
    model, x0, y = reference_case
    eps, alpha, decay = 0.5, 0.1, 0.8
    x, g = x0.clone(), torch.zeros_like(x0)
    for _ in range(5):
        grad = _grad(model, x, y)
        g = decay * g + grad / grad.abs().flatten(1).sum(dim=1).view(-1, 1, 1, 1)
        x = _project(x + alpha * _unit(g), x0, eps)
    ours = MIFGSM(eps=eps, steps=5, alpha=alpha, decay=decay, norm="L2")(model, x0, y)
    torch.testing.assert_close(ours, x, rtol=0, atol=1e-6)


def test_pgd_l2_equals_torchattacks_pgdl2(trained_model_and_data) -> None:
    """torchattacks adds 1e-10 to the gradient's norm: equal to float rounding."""
    model, images, labels = trained_model_and_data
    x, y = images[:64], labels[:64]
    ours = PGD(eps=0.5, steps=10, alpha=0.1, norm="L2", random_start=False)(model, x, y)
    # torchattacks leaves its model in train mode: give it a copy, not the shared model.
    reference = torchattacks.PGDL2(
        copy.deepcopy(model), eps=0.5, alpha=0.1, steps=10, random_start=False
    )
    reference.set_model_training_mode("eval")
    theirs = reference(x, y)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    fooled = (model(ours).argmax(1) != y).sum()
    assert 0 < fooled < 64  # a real comparison: some samples fall, some hold


def test_pgd_l2_random_start_stays_in_the_ball(trained_model_and_data) -> None:
    model, images, labels = trained_model_and_data
    eps = torch.linspace(0.0, 1.0, 16)
    result = PGD(eps=eps, steps=3, norm="L2").run(
        model, images[:16], labels[:16], generator=torch.Generator().manual_seed(0)
    )
    norms = (result.adversarial - images[:16]).flatten(1).norm(dim=1)
    assert torch.all(norms <= eps * (1 + TOL))
    assert result.adversarial.min() >= 0 and result.adversarial.max() <= 1
