"""LinfBall: its single clamp and its steps equal the textbook formulas element for element."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from advkit.attacks import LinfBall

BOUNDS = (0.0, 1.0)


@st.composite
def balls(draw: st.DrawFn) -> tuple[LinfBall, torch.Tensor]:
    """A ball of per-sample radii (zero and past the box included) and a gradient with zeros."""
    seed = draw(st.integers(0, 2**31 - 1))
    batch = draw(st.integers(1, 6))
    gen = torch.Generator().manual_seed(seed)
    center = torch.rand(batch, 3, 4, 4, generator=gen)
    center[0, 0, 0] = torch.tensor([0.0, 1.0, 0.5, 1e-8])  # the box's edges, and near them
    radii = draw(st.lists(st.sampled_from([0.0, 1e-7, 1 / 255, 8 / 255, 0.3, 2.0]),
                          min_size=batch, max_size=batch))  # fmt: skip
    eps = torch.tensor(radii).view(-1, 1, 1, 1)
    grad = torch.randn(batch, 3, 4, 4, generator=gen)
    grad[grad.abs() < 0.3] = 0.0
    return LinfBall(center, eps, BOUNDS), grad


@given(balls())
def test_project_is_the_double_clamp(case: tuple[LinfBall, torch.Tensor]) -> None:
    ball, grad = case
    x = ball.center + 3 * grad
    expected = torch.clamp(torch.clamp(x, ball.center - ball.eps, ball.center + ball.eps), *BOUNDS)
    assert torch.equal(ball.project(x), expected)


@given(balls(), st.sampled_from([0.5 / 255, 2 / 255, 0.25]))
def test_step_is_project_of_x_plus_alpha_sign(case, alpha: float) -> None:
    ball, grad = case
    x = ball.random_point(torch.Generator().manual_seed(1))
    alpha_t = torch.full_like(ball.eps, alpha)
    expected = ball.project(x + alpha_t * grad.sign())
    assert torch.equal(ball.step(x, grad, alpha_t), expected)
    assert torch.equal(ball.step(x, grad, alpha), expected)


@given(balls())
def test_step_from_center_equals_the_full_step(case: tuple[LinfBall, torch.Tensor]) -> None:
    ball, grad = case
    fast = LinfBall(ball.center, ball.eps, BOUNDS).step_from_center(grad)
    assert torch.equal(fast, ball.step(ball.center, grad, ball.eps))


def test_step_from_center_builds_no_bounds() -> None:
    ball = LinfBall(torch.rand(2, 3), torch.full((2, 1), 0.1), BOUNDS)
    ball.step_from_center(torch.randn(2, 3))
    assert "lower" not in vars(ball) and "upper" not in vars(ball)


@given(balls())
def test_subset_is_the_ball_of_the_kept_samples(case: tuple[LinfBall, torch.Tensor]) -> None:
    ball, grad = case
    keep = torch.arange(ball.center.shape[0]) % 2 == 0
    x = ball.center + grad
    expected = LinfBall(ball.center[keep], ball.eps[keep], BOUNDS).project(x[keep])
    fresh = ball.subset(keep)  # bounds not built yet
    assert torch.equal(fresh.project(x[keep]), expected)
    ball.project(x)  # now built, and carried over by the next subset
    assert torch.equal(ball.subset(keep).project(x[keep]), expected)
    assert "lower" in vars(ball.subset(keep))
