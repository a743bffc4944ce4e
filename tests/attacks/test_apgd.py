"""APGD and APGD-T: invariants, exact counts, reproducibility, no side effects, bad input."""

from __future__ import annotations

import pytest
import torch
from attack_cases import ball_slack
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn

from advkit.attacks import APGD, APGDT, Attack
from conftest import blob_images, tiny_model

KINDS = ["ce", "dlr", "targeted"]


def make(kind: str, eps: float | Tensor, norm: str = "Linf", **settings) -> Attack:
    settings.setdefault("steps", 5)
    if kind == "targeted":
        return APGDT(eps=eps, norm=norm, n_target_classes=3, **settings)
    return APGD(eps=eps, norm=norm, loss=kind, **settings)


def distances(adversarial: Tensor, images: Tensor, norm: str) -> Tensor:
    flat = (adversarial - images).flatten(1)
    return flat.abs().amax(dim=1) if norm == "Linf" else flat.norm(dim=1)


def inside(adversarial: Tensor, images: Tensor, eps: Tensor, norm: str) -> bool:
    slack = ball_slack(eps, images, l2=norm == "L2")
    in_box = bool(adversarial.min() >= 0.0) and bool(adversarial.max() <= 1.0)
    return in_box and bool((distances(adversarial, images, norm) <= slack).all())


# -- invariants --------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["Linf", "L2"])
@pytest.mark.parametrize("kind", KINDS)
@given(fractions=st.lists(st.floats(0.0, 1.0), min_size=6, max_size=6), seed=st.integers(0, 2**16))
def test_inside_ball_and_box(norm: str, kind: str, fractions: list[float], seed: int) -> None:
    model = tiny_model().eval()
    images, labels = blob_images(6, seed=seed)
    eps = torch.tensor(fractions) * (0.5 if norm == "Linf" else 3.0)
    result = make(kind, eps, norm).run(model, images, labels)
    assert inside(result.adversarial, images, eps, norm)
    assert result.adversarial.dtype == images.dtype and result.adversarial.shape == images.shape
    called = make(kind, float(eps[0]), norm)(model, images, labels)
    assert inside(called, images, eps[:1].expand(6), norm)


@pytest.mark.parametrize("norm", ["Linf", "L2"])
@pytest.mark.parametrize("kind", KINDS)
def test_zero_eps_returns_input_exactly(norm: str, kind: str, model, batch) -> None:
    images, labels = batch
    result = make(kind, 0.0, norm).run(model, images, labels)
    assert torch.equal(result.adversarial, images)
    assert result.grad_calls == 0  # nothing can move: no run at all
    with torch.no_grad():
        misclassified = model(images).argmax(dim=1) != labels
    assert torch.equal(result.success_step, torch.where(misclassified, 0, -1))


@pytest.mark.parametrize("norm", ["Linf", "L2"])
@pytest.mark.parametrize("kind", KINDS)
def test_per_sample_eps_equals_separate_runs(norm: str, kind: str) -> None:
    """One batch with eps per sample equals runs with each eps alone (same batch: same draws)."""
    model = tiny_model().eval()
    images, labels = blob_images(8)
    scale = 1 / 8 if norm == "Linf" else 1.0
    eps = torch.tensor([0.0, 0.1, 0.3, 1.0] * 2) * scale
    together = make(kind, eps, norm).run(model, images, labels)
    for value in eps.unique():
        rows = eps == value
        alone = make(kind, float(value), norm).run(model, images, labels)
        torch.testing.assert_close(together.adversarial[rows], alone.adversarial[rows])
        assert torch.equal(together.success_step[rows], alone.success_step[rows])


@pytest.mark.parametrize("kind", KINDS)
def test_seeded_runs_are_reproducible_and_leave_the_global_rng(kind: str, model, batch) -> None:
    images, labels = batch
    state = torch.get_rng_state()
    first = make(kind, 0.1, n_restarts=2).run(model, images, labels)
    again = make(kind, 0.1, n_restarts=2).run(model, images, labels)
    assert torch.equal(first.adversarial, again.adversarial)
    assert torch.equal(first.success_step, again.success_step)
    other = make(kind, 0.1, n_restarts=2, seed=1).run(model, images, labels)
    assert not torch.equal(first.adversarial, other.adversarial)
    with_generator = [
        make(kind, 0.1).run(model, images, labels, generator=torch.Generator().manual_seed(7))
        for _ in range(2)
    ]
    assert torch.equal(with_generator[0].adversarial, with_generator[1].adversarial)
    assert torch.equal(torch.get_rng_state(), state)
    # seed=None draws from the global RNG, so manual_seed reproduces it.
    torch.manual_seed(3)
    unseeded = make(kind, 0.1, seed=None).run(model, images, labels)
    torch.manual_seed(3)
    assert torch.equal(make(kind, 0.1, seed=None)(model, images, labels), unseeded.adversarial)


@pytest.mark.parametrize("kind", KINDS)
def test_model_and_inputs_left_untouched(kind: str) -> None:
    model = tiny_model().train()
    model[0].weight.requires_grad_(False)
    model[3].eval()
    flags = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    buffers = [b.clone() for b in model.buffers()]
    images, labels = blob_images(6)
    before = images.clone()
    make(kind, 0.1, n_restarts=2).run(model, images, labels)
    make(kind, 0.1, model_mode="train")(model, images, labels)
    assert all(m.training == flag for m, flag in flags)
    assert all(p.requires_grad == flag and p.grad is None for p, flag in grads)
    assert all(torch.equal(b, c) for b, c in zip(model.buffers(), buffers, strict=True))
    assert torch.equal(images, before)


# -- counts and semantics ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_restarts_run_only_on_survivors_with_exact_counts(
    kind: str, trained_model_and_data
) -> None:
    model, images, labels = trained_model_and_data
    images, labels = images[:32], labels[:32]
    steps, restarts = 4, 3
    attack = make(kind, 12 / 255, steps=steps, n_restarts=restarts)
    result = attack.run(model, images, labels)
    per_run = steps + 1
    runs = attack.iterate_count() // per_run
    assert attack.iterate_count() == 1 + runs * per_run
    assert runs == restarts * (3 if kind == "targeted" else 1)
    step = result.success_step
    # A sample takes part in run r if no earlier point fooled it: not clean-fooled (step 0),
    # and robust or fooled no earlier than run r's first point.
    attacked = [int(((step == -1) | (step >= 1 + r * per_run)).sum()) for r in range(runs)]
    assert result.grad_calls == sum(per_run for n in attacked if n > 0)
    assert result.grad_samples == per_run * sum(attacked)
    assert int(step.max()) < attack.iterate_count()
    # The case has robust samples and samples first fooled by a later run.
    assert int(step.max()) > per_run and bool((step == -1).any())


@pytest.mark.parametrize("kind", KINDS)
def test_early_stop_fools_the_same_samples_with_less_work(
    kind: str, trained_model_and_data
) -> None:
    model, images, labels = trained_model_and_data
    images, labels = images[:32], labels[:32]
    full = make(kind, 12 / 255, n_restarts=2).run(model, images, labels)
    early = make(kind, 12 / 255, n_restarts=2).run(model, images, labels, early_stop=True)
    assert torch.equal(full.success_step, early.success_step)
    assert torch.equal(early.success, early.fooled)
    assert early.grad_samples < full.grad_samples


def test_clean_misclassified_samples_are_not_attacked(model, batch) -> None:
    images, labels = batch
    with torch.no_grad():
        wrong = model(images).argmax(dim=1) != labels
    assert 0 < int(wrong.sum()) < 16
    result = APGD(eps=0.05, steps=3).run(model, images, labels)
    assert torch.equal(result.adversarial[wrong], images[wrong])
    assert bool((result.success_step[wrong] == 0).all())
    assert result.grad_samples == 4 * int((~wrong).sum())


def test_targeted_ce_moves_towards_the_target(trained_model_and_data) -> None:
    model, images, labels = trained_model_and_data
    images, targets = images[:32], (labels[:32] + 1) % 4
    result = APGD(eps=12 / 255, steps=10, targeted=True).run(model, images, targets)
    with torch.no_grad():
        hits = model(result.adversarial).argmax(dim=1) == targets
    assert torch.equal(result.success, hits)
    assert int(hits.sum()) > int((model(images).argmax(dim=1) == targets).sum())


def test_settings_replace_and_repr() -> None:
    attack = APGD(eps=0.1, steps=7, loss="dlr", n_restarts=2)
    changed = attack.replace(eps=0.2)
    assert isinstance(changed, APGD) and changed.eps == 0.2 and changed.loss == "dlr"
    assert changed.steps == 7 and changed.iterate_count() == 1 + 2 * 8
    assert "loss='dlr'" in repr(attack)
    targeted = APGDT(eps=0.1, steps=3).replace(n_target_classes=2)
    assert targeted.iterate_count() == 1 + 2 * 4 and targeted.loss == "dlr-targeted"


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"steps": 0}, ValueError, "steps must be >= 1, got 0"),
        ({"steps": 2.5}, TypeError, "steps must be an int"),
        ({"rho": 0.0}, ValueError, r"rho must be in \(0, 1\], got 0.0"),
        ({"rho": 1.5}, ValueError, r"rho must be in \(0, 1\], got 1.5"),
        ({"rho": "high"}, TypeError, "rho must be a float, got str"),
        ({"loss": "hinge"}, ValueError, "loss must be 'ce', 'dlr' or a callable .* got 'hinge'"),
        ({"norm": "L1"}, ValueError, "norm must be one of"),
        ({"n_restarts": 0}, ValueError, "n_restarts must be >= 1, got 0"),
        ({"seed": 1.5}, TypeError, "seed must be an int, got float"),
        ({"eps": -0.1}, ValueError, "eps must be finite and >= 0"),
        ({"targeted": True, "loss": "dlr"}, ValueError, "targeted APGD needs loss='ce'"),
    ],
)
def test_bad_settings(settings: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        APGD(**{"eps": 0.1, **settings})


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"n_target_classes": 0}, ValueError, "n_target_classes must be >= 1, got 0"),
        ({"targeted": True}, ValueError, "APGDT chooses its own target classes"),
        ({"loss": "ce"}, TypeError, "APGDT always uses the targeted DLR loss"),
        ({"steps": 0}, ValueError, "steps must be >= 1"),
        ({"rho": 0}, ValueError, r"rho must be in \(0, 1\], got 0.0"),
    ],
)
def test_bad_targeted_settings(settings: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        APGDT(**{"eps": 0.1, **settings})


def test_too_many_target_classes_fails_at_call_time_with_nothing_changed() -> None:
    model = tiny_model().train()  # 4 classes
    images, labels = blob_images(4)
    attack = APGDT(eps=0.1, steps=2, n_target_classes=4)
    with pytest.raises(
        ValueError, match="n_target_classes must be < the number of classes 4, got 4"
    ):
        attack(model, images, labels)
    assert all(m.training for m in model.modules())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_too_few_classes_for_the_dlr_losses() -> None:
    images, labels = blob_images(4, num_classes=2)
    two = tiny_model(num_classes=2).eval()
    with pytest.raises(ValueError, match="loss='dlr' needs at least 3 classes, the model has 2"):
        APGD(eps=0.1, steps=2, loss="dlr")(two, images, labels)
    three = tiny_model(num_classes=3).eval()
    with pytest.raises(ValueError, match="APGDT needs at least 4 classes, the model has 3"):
        APGDT(eps=0.1, steps=2, n_target_classes=2)(three, images, labels)


def test_bad_call_inputs(model: nn.Module, batch) -> None:
    images, labels = batch
    with pytest.raises(ValueError, match="per-sample eps has 3 values but the batch has 16"):
        APGD(eps=torch.tensor([0.1, 0.2, 0.3]), steps=2)(model, images, labels)
    with pytest.raises(ValueError, match="labels must be < the number of classes 4"):
        APGD(eps=0.1, steps=2)(model, images, labels + 4)
    with pytest.raises(ValueError, match="inputs must lie inside bounds"):
        APGD(eps=0.1, steps=2)(model, images + 2, labels)
