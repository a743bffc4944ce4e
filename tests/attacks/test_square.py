"""Square: the paper's schedule, agreement with torchattacks, invariants, exact query counts."""

from __future__ import annotations

import copy

import pytest
import torch
import torchattacks
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from advkit import PGD, Square
from advkit.attacks import SquareResult
from advkit.attacks.square import p_selection
from conftest import blob_images, tiny_model


def test_p_selection_is_the_papers_schedule() -> None:
    """Andriushchenko et al. (2020), Sec. 3 and the authors' code: p_init halved at iterations
    10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10000, rescaled to other budgets."""
    p = 0.8
    expected = {
        0: p, 10: p, 11: p / 2, 50: p / 2, 51: p / 4, 200: p / 4, 201: p / 8, 500: p / 8,
        501: p / 16, 1000: p / 16, 1001: p / 32, 2000: p / 32, 2001: p / 64, 4000: p / 64,
        4001: p / 128, 6000: p / 128, 6001: p / 256, 8000: p / 256, 8001: p / 512, 9999: p / 512,
    }  # fmt: skip
    for iteration, value in expected.items():
        assert p_selection(p, iteration, 10000) == value
    # With 1000 queries iteration i stands for int(i / 1000 * 10000) = 10 i.
    assert [p_selection(0.5, i, 1000) for i in (1, 2, 5, 6, 801)] == [
        0.5,
        0.25,
        0.25,
        0.125,
        0.5 / 512,
    ]


@pytest.mark.parametrize(("norm", "eps"), [("Linf", 4 / 255), ("L2", 0.3)])
def test_not_weaker_than_torchattacks(trained_model_and_data, norm: str, eps: float) -> None:
    """Robust accuracy on 200 samples, equal budgets (1000 queries, where both have converged
    on this model to within a few samples over seeds): ours at most 1 sample higher."""
    model, images, labels = trained_model_and_data
    x, y = images[:200], labels[:200]
    gen = torch.Generator().manual_seed(0)
    ours = Square(eps=eps, norm=norm, n_queries=1000).run(model, x, y, generator=gen)
    # torchattacks may leave its model in train mode: give it a copy, not the shared model.
    reference = copy.deepcopy(model)
    theirs = torchattacks.Square(reference, norm=norm, eps=eps, n_queries=1000, seed=0)(x, y)
    with torch.no_grad():
        theirs_robust = int((model(theirs).argmax(1) == y).sum())
    ours_robust = int((~ours.fooled).sum())
    assert ours_robust <= theirs_robust + 1
    assert 0 < ours_robust < 200  # a meaningful comparison: some fooled, some not


@settings(max_examples=8)
@given(
    norm=st.sampled_from(["Linf", "L2"]),
    eps=st.one_of(st.just(0.0), st.floats(1e-3, 0.5)),
    seed=st.integers(0, 2**16),
    n_restarts=st.integers(1, 2),
)
def test_invariants_and_exact_query_counts(
    norm: str, eps: float, seed: int, n_restarts: int
) -> None:
    model = tiny_model(seed=1).eval()
    x, y = blob_images(8, seed=seed % 7)
    n_queries = 10
    attack = Square(eps=eps, norm=norm, n_queries=n_queries, n_restarts=n_restarts)
    result = attack.run(model, x, y, generator=torch.Generator().manual_seed(seed))
    assert isinstance(result, SquareResult)
    adv = result.adversarial
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert bool((adv >= 0).all() and (adv <= 1).all())
    assert bool((attack.threat_model.distance(adv, x) <= eps * (1 + 1e-5) + 1e-6).all())
    with torch.no_grad():
        logits = model(adv)
        clean_fooled = model(x).argmax(1) != y
    torch.testing.assert_close(result.logits, logits)
    assert torch.equal(result.success, logits.argmax(1) != y)
    assert torch.equal(result.success, result.fooled)
    assert result.grad_calls == 0 and result.grad_samples == 0
    # Point 0 is the clean input; a fooled sample stops at the point that fooled it, so it
    # made exactly success_step + 1 queries; a robust one spent the whole budget.
    assert torch.equal(result.success_step == 0, clean_fooled)
    fooled = result.fooled
    assert torch.equal(result.queries[fooled], result.success_step[fooled] + 1)
    budget = 1 if eps == 0 else 1 + n_restarts * (n_queries + 1)
    assert bool((result.queries[~fooled] == budget).all())
    if eps == 0:
        assert torch.equal(fooled, clean_fooled)
        assert torch.equal(adv, x)


def test_seeded_reproducible_and_global_rng_untouched(trained_model_and_data) -> None:
    model, images, labels = trained_model_and_data
    x, y = images[:32], labels[:32]
    for norm, eps in (("Linf", 4 / 255), ("L2", 0.3)):
        attack = Square(eps=eps, norm=norm, n_queries=60, n_restarts=2)
        state = torch.random.get_rng_state()
        first = attack.run(model, x, y, generator=torch.Generator().manual_seed(5))
        assert torch.equal(torch.random.get_rng_state(), state)
        second = attack.run(model, x, y, generator=torch.Generator().manual_seed(5))
        assert torch.equal(first.adversarial, second.adversarial)
        assert torch.equal(first.success_step, second.success_step)
        assert torch.equal(first.queries, second.queries)


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_per_sample_eps_equals_separate_runs(trained_model_and_data, norm: str) -> None:
    """Each sample's randomness is drawn for the whole batch, so a sample's run is the same
    whichever eps the others have: per-sample eps equals one scalar-eps run per value."""
    model, images, labels = trained_model_and_data
    x, y = images[:24], labels[:24]
    values = (2 / 255, 6 / 255) if norm == "Linf" else (0.1, 0.4)
    eps = torch.tensor([values[i % 2] for i in range(24)])
    attack = Square(eps=eps, norm=norm, n_queries=40)
    mixed = attack.run(model, x, y, generator=torch.Generator().manual_seed(3))
    for k, value in enumerate(values):
        alone = attack.replace(eps=value).run(
            model, x, y, generator=torch.Generator().manual_seed(3)
        )
        rows = torch.arange(24) % 2 == k
        assert torch.equal(mixed.adversarial[rows], alone.adversarial[rows])
        assert torch.equal(mixed.success_step[rows], alone.success_step[rows])
        assert torch.equal(mixed.queries[rows], alone.queries[rows])


def test_forward_passes_only_and_no_trace(batch) -> None:
    """Square never asks for a gradient, and leaves the model and inputs as they were."""
    x, y = batch
    base = tiny_model(seed=2)
    base.train()  # the caller's mode must come back; BatchNorm statistics must not move
    buffers = [b.clone() for b in base.buffers()]
    flags = [p.requires_grad for p in base.parameters()]
    grad_seen = []

    class Spy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = base

        def forward(self, inputs: Tensor) -> Tensor:
            grad_seen.append(torch.is_grad_enabled())
            return self.inner(inputs)

    spy = Spy().train()
    before = x.clone()
    for norm in ("Linf", "L2"):
        Square(eps=0.1, norm=norm, n_queries=10)(spy, x, y, generator=torch.Generator())
    assert grad_seen and not any(grad_seen)
    assert torch.equal(x, before)
    assert spy.training and all(m.training for m in base.modules())
    assert all(torch.equal(b, c) for b, c in zip(base.buffers(), buffers, strict=True))
    assert [p.requires_grad for p in base.parameters()] == flags
    assert all(p.grad is None for p in base.parameters())


def test_targeted_success_means_the_target(batch) -> None:
    x, y = batch
    model = tiny_model(seed=4).eval()
    targets = (y + 1) % 4
    result = Square(eps=0.3, n_queries=50, targeted=True).run(
        model, x, targets, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        predicted = model(result.adversarial).argmax(1)
    assert torch.equal(result.fooled, predicted == targets)


def test_catches_gradient_masking(trained_model_and_data) -> None:
    """A quantized input (zero gradient almost everywhere) stops PGD, not the black box."""
    model, images, labels = trained_model_and_data
    x, y = images[:64], labels[:64]

    class Quantize(nn.Module):
        def forward(self, inputs: Tensor) -> Tensor:
            return (inputs * 16).round() / 16

    masked = nn.Sequential(Quantize(), copy.deepcopy(model)).eval()
    eps = 8 / 255
    pgd = PGD(eps=eps, steps=10).run(masked, x, y, generator=torch.Generator().manual_seed(0))
    square = Square(eps=eps, n_queries=300).run(
        masked, x, y, generator=torch.Generator().manual_seed(0)
    )
    assert int(square.fooled.sum()) > int(pgd.fooled.sum()) + 10


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_queries": 0}, ValueError, "n_queries must be >= 1, got 0"),
        ({"n_queries": 0.5}, TypeError, "n_queries must be an int"),
        ({"n_restarts": 0}, ValueError, "n_restarts must be >= 1, got 0"),
        ({"p_init": 0.0}, ValueError, r"p_init must be in \(0, 1\], got 0.0"),
        ({"p_init": 1.5}, ValueError, r"p_init must be in \(0, 1\], got 1.5"),
        ({"norm": "L1"}, ValueError, "norm must be one of"),
        ({"loss": "dlr"}, ValueError, "loss must be 'margin' or 'ce', got 'dlr'"),
        ({"eps": -0.1}, ValueError, "eps must be finite and >= 0"),
    ],
)
def test_bad_settings(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        Square(**{"eps": 0.1, **kwargs})


def test_bad_inputs() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with pytest.raises(ValueError, match=r"Square attacks images \[N, C, H, W\], got"):
        Square(eps=0.1, n_queries=5)(model, torch.rand(4, 12), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must be < the number of classes 3"):
        Square(eps=0.1, n_queries=5)(model, torch.rand(4, 3, 2, 2), torch.full((4,), 3))
