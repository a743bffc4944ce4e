"""APGD's rules element for element against the paper, re-implemented plainly in this file.

Croce and Hein, ICML 2020, Algorithm 1 and Sec. 3 (with the whole-iteration checkpoint rule of
their reference code ``autopgd_base.py``): the DLR losses (Eqs. 4, 5), the checkpoint schedule,
both halving conditions, the restart from the best point and the momentum step. The attack runs
from a start point given by the test (no randomness); a spy model records every point it
differentiates at, and the whole trajectory must equal the one computed here.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import advkit.attacks.apgd as apgd_module
from advkit.attacks import APGD, APGDT, dlr_loss, targeted_dlr_loss
from advkit.attacks.apgd_rules import checkpoint_schedule, should_halve

# -- the losses --------------------------------------------------------------------------------


def paper_dlr(z: Tensor, y: Tensor) -> Tensor:
    """Eq. (4): -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3), pi sorting decreasingly."""
    rows = torch.arange(z.shape[0])
    ordered = z.sort(dim=1, descending=True).values
    others = z.clone()
    others[rows, y] = -math.inf
    return -(z[rows, y] - others.max(dim=1).values) / (ordered[:, 0] - ordered[:, 2] + 1e-12)


def paper_targeted_dlr(z: Tensor, y: Tensor, t: Tensor) -> Tensor:
    """Eq. (5): -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)."""
    rows = torch.arange(z.shape[0])
    ordered = z.sort(dim=1, descending=True).values
    scale = ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3]) + 1e-12
    return -(z[rows, y] - z[rows, t]) / scale


def test_dlr_losses_equal_the_paper_formulas() -> None:
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(64, 7, generator=gen, dtype=torch.float64)
    z[:8, 1] = z[:8, 0]  # ties at the top
    y = torch.randint(0, 7, (64,), generator=gen)
    y[:8] = 0
    t = (y + torch.randint(1, 7, (64,), generator=gen)) % 7
    torch.testing.assert_close(dlr_loss(z, y), paper_dlr(z, y), rtol=0, atol=1e-12)
    torch.testing.assert_close(
        targeted_dlr_loss(z, y, t), paper_targeted_dlr(z, y, t), rtol=0, atol=1e-12
    )
    # Positive exactly when misclassified; invariant to shift and positive scale.
    assert torch.equal(dlr_loss(z, y) > 0, z.argmax(dim=1) != y)
    torch.testing.assert_close(dlr_loss(3 * z + 5, y), dlr_loss(z, y))
    torch.testing.assert_close(targeted_dlr_loss(3 * z - 1, y, t), targeted_dlr_loss(z, y, t))


def test_dlr_losses_reject_too_few_classes() -> None:
    with pytest.raises(ValueError, match="at least 3 classes"):
        dlr_loss(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 4 classes"):
        targeted_dlr_loss(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.ones(2).long())
    with pytest.raises(ValueError, match=r"targets must have shape \[2\]"):
        targeted_dlr_loss(torch.zeros(2, 5), torch.zeros(2).long(), torch.ones(3).long())


# -- the checkpoint schedule and the halving condition -----------------------------------------


def paper_checkpoints(steps: int) -> list[int]:
    """w_j = ceil(p_j N), p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
    p = [0.0, 0.22]
    while p[-1] <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return [math.ceil(round(value * steps, 9)) for value in p[1:] if value <= 1]


def counter_checkpoints(steps: int) -> list[int]:
    """The reference's counters: a check when counter3 reaches k, then k shrinks."""
    k = max(int(0.22 * steps), 1)
    n_iter_min, size_decr = max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    counter3, points = 0, []
    for i in range(steps):
        counter3 += 1
        if counter3 == k:
            points.append(i + 1)
            k, counter3 = max(k - size_decr, n_iter_min), 0
    return points


def test_checkpoint_schedule_is_the_papers_for_100_steps() -> None:
    assert checkpoint_schedule(100) == paper_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoint_schedule(1000)[:4] == paper_checkpoints(1000)[:4] == [220, 410, 570, 700]


@pytest.mark.parametrize("steps", [1, 2, 5, 10, 17, 30, 99, 100, 250])
def test_checkpoint_schedule_is_the_references_counter_rule(steps: int) -> None:
    assert checkpoint_schedule(steps) == counter_checkpoints(steps)


def test_should_halve_is_either_condition() -> None:
    window, rho = 8, 0.75  # condition 1: at most 6 increases
    increases = torch.tensor([6, 7, 7, 7, 2])
    halved_before = torch.tensor([False, False, True, False, True])
    best_before = torch.tensor([1.0, 2.0, 2.0, 1.0, 0.0])
    best_now = torch.tensor([3.0, 2.0, 2.0, 1.5, 5.0])
    expected = [
        int(increases[i]) <= rho * window
        or (not bool(halved_before[i]) and float(best_before[i]) >= float(best_now[i]))
        for i in range(5)
    ]
    got = should_halve(increases, window, rho, halved_before, best_before, best_now)
    assert got.tolist() == expected == [True, True, False, False, True]


# -- the whole loop ----------------------------------------------------------------------------


class Spy(nn.Module):
    """Records every input the attack differentiates at."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        if x.requires_grad:
            self.seen.append(x.detach().clone())
        return self.inner(x)


def paper_apgd(model, x0, y, start, eps, steps, rho, loss_fn, norm):
    """Algorithm 1 of the paper, one run from ``start``, plainly, sample by sample masks."""
    eps = torch.as_tensor(eps, dtype=x0.dtype).view(-1, 1, 1, 1).expand(x0.shape[0], 1, 1, 1)

    def project(x):
        if norm == "Linf":
            return torch.clamp(torch.min(torch.max(x, x0 - eps), x0 + eps), 0.0, 1.0)
        delta = x - x0
        size = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        return torch.clamp(x0 + delta * torch.clamp(eps / size, max=1.0), 0.0, 1.0)

    def direction(g):
        if norm == "Linf":
            return g.sign()
        return g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)

    def loss_and_grad(x):
        x = x.clone().requires_grad_(True)
        logits = model(x)
        loss = loss_fn(logits, y)
        (grad,) = torch.autograd.grad(loss.sum(), x)
        return logits.detach(), loss.detach(), grad

    visited, halvings = [start], {"oscillation": 0, "stall": 0}
    x = start.clone()
    logits, loss, grad = loss_and_grad(x)
    losses = [loss]  # f(x^(0)), f(x^(1)), ...
    fooled_at = torch.where(logits.argmax(1) != y, 0, -1)
    adv, adv_loss = x.clone(), torch.where(fooled_at == 0, loss, -math.inf)
    x_best, grad_best, loss_best = x.clone(), grad.clone(), loss.clone()
    step_size = 2 * eps.clone()
    x_old = x.clone()
    k, counter3 = max(int(0.22 * steps), 1), 0
    n_iter_min, size_decr = max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    loss_best_last_check, reduced_last_check = loss_best.clone(), torch.ones_like(loss, dtype=bool)
    for i in range(steps):
        momentum = x - x_old
        x_old = x.clone()
        a = 0.75 if i > 0 else 1.0
        z = project(x + step_size * direction(grad))
        x = project(x + (z - x) * a + momentum * (1 - a))
        visited.append(x)
        logits, loss, grad = loss_and_grad(x)
        losses.append(loss)
        fooled = logits.argmax(1) != y
        fooled_at = torch.where(fooled & (fooled_at < 0), i + 1, fooled_at)
        better_adv = fooled & (loss > adv_loss)
        adv[better_adv], adv_loss[better_adv] = x[better_adv], loss[better_adv]
        improved = loss > loss_best
        x_best[improved], grad_best[improved] = x[improved], grad[improved]
        loss_best[improved] = loss[improved]
        counter3 += 1
        if counter3 == k:
            increases = sum((losses[i + 1 - c] > losses[i - c]).long() for c in range(k))
            oscillation = increases <= rho * k
            stall = ~reduced_last_check & (loss_best_last_check >= loss_best)
            halve = oscillation | stall
            halvings["oscillation"] += int(oscillation.sum())
            halvings["stall"] += int((stall & ~oscillation).sum())
            reduced_last_check, loss_best_last_check = halve.clone(), loss_best.clone()
            step_size[halve] /= 2
            x = x.clone()
            x[halve], grad[halve] = x_best[halve], grad_best[halve]
            k, counter3 = max(k - size_decr, n_iter_min), 0
    returned = torch.where((fooled_at >= 0).view(-1, 1, 1, 1), adv, x_best)
    return visited, fooled_at, returned, halvings


CASES = {
    "ce-Linf": (lambda: APGD(eps=4 / 255, steps=30, loss="ce"), "Linf", 4 / 255),
    "dlr-Linf": (lambda: APGD(eps=4 / 255, steps=30, loss="dlr"), "Linf", 4 / 255),
    "ce-L2": (lambda: APGD(eps=0.15, norm="L2", steps=30, loss="ce"), "L2", 0.15),
    "dlr-L2": (lambda: APGD(eps=0.15, norm="L2", steps=30, loss="dlr"), "L2", 0.15),
    "targeted-Linf": (lambda: APGDT(eps=4 / 255, steps=30, n_target_classes=1), "Linf", 4 / 255),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_trajectory_equals_the_paper_from_a_given_start(
    name, trained_model_and_data, monkeypatch
) -> None:
    model, images, _ = trained_model_and_data
    make, norm, eps = CASES[name]
    x0 = images[:48]
    if norm == "L2":
        # The L2 step rounds differently from the formula here (a fused multiply-add); in
        # float64 the trajectories still agree to 1e-8 (eps is 0.15).
        model, x0 = copy.deepcopy(model).double(), x0.double()
    with torch.no_grad():
        clean_logits = model(x0)
    y = clean_logits.argmax(1)  # every sample is attacked (none fooled at the clean input)
    gen = torch.Generator().manual_seed(1)
    noise = 2 * torch.rand(x0.shape, generator=gen, dtype=x0.dtype) - 1
    if norm == "L2":
        noise = noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    start = torch.clamp(x0 + eps * noise, 0, 1)
    monkeypatch.setattr(apgd_module, "reference_start", lambda ball, generator: start)

    attack = make()
    if isinstance(attack, APGDT):
        target = clean_logits.sort(dim=1)[1][:, -2]

        def loss_fn(z, labels):
            return paper_targeted_dlr(z, labels, target)

    else:
        loss_fn = {"ce": lambda z, t: F.cross_entropy(z, t, reduction="none"), "dlr": paper_dlr}[
            attack.loss
        ]
    spy = Spy(model)
    result = attack.run(spy, x0, y)
    visited, fooled_at, returned, halvings = paper_apgd(
        model, x0, y, start, eps, 30, 0.75, loss_fn, norm
    )

    # Linf: the same operations in the same order, so the same floats.
    tolerance = {"rtol": 0, "atol": 0} if norm == "Linf" else {"rtol": 0, "atol": 1e-8}
    assert len(spy.seen) == len(visited) == 31
    for ours, theirs in zip(spy.seen, visited, strict=True):
        torch.testing.assert_close(ours, theirs, **tolerance)
    expected_step = torch.where(fooled_at >= 0, 1 + fooled_at, -1)
    assert torch.equal(result.success_step, expected_step)
    torch.testing.assert_close(result.adversarial, returned, **tolerance)
    assert result.grad_calls == 31 and result.grad_samples == 31 * 48
    # The case exercises the rules it checks: halvings happened and samples stayed robust.
    assert halvings["oscillation"] > 0
    assert 0 < int((fooled_at < 0).sum()) < 48


def test_both_halving_conditions_fire_in_some_case(trained_model_and_data) -> None:
    """Condition 2 (no improvement, step not halved before) alone halves some samples."""
    model, images, _ = trained_model_and_data
    x0 = images[:48]
    with torch.no_grad():
        y = model(x0).argmax(1)
    start = torch.clamp(
        x0 + 4 / 255 * (2 * torch.rand(x0.shape, generator=torch.Generator().manual_seed(1)) - 1),
        0,
        1,
    )
    _, _, _, halvings = paper_apgd(model, x0, y, start, 4 / 255, 30, 0.75, paper_dlr, "Linf")
    assert halvings["oscillation"] > 0 and halvings["stall"] > 0
