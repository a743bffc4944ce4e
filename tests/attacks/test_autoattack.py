"""AutoAttack: side by side with torchattacks, its ensemble semantics, checks and bad input."""

from __future__ import annotations

import types
import warnings
from typing import Any

import pytest
import torch
import torchattacks
from autoattack_cases import EPS, digits, trained
from torch import Tensor, nn

from advkit.attacks import (
    APGD,
    APGDT,
    FAB,
    FGSM,
    PGD,
    Attack,
    AttackResult,
    AutoAttack,
    AutoAttackResult,
    GradientMaskingWarning,
    Square,
)
from advkit.attacks.autoattack import VERSIONS
from conftest import blob_images, tiny_model, train_tiny

STEPS, QUERIES = 20, 300  # budgets of the side-by-side runs (the same on both sides)


def _quiet_run(attack: Attack, model: nn.Module, x: Tensor, y: Tensor, **kw: Any) -> AttackResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientMaskingWarning)
        return attack.run(model, x, y, **kw)


def _reduced(eps: float) -> AutoAttack:
    """The standard members with reduced budgets."""
    return AutoAttack(
        eps=eps,
        version="custom",
        attacks=[
            APGD(eps=eps, steps=STEPS),
            APGDT(eps=eps, steps=STEPS),
            FAB(eps=eps, steps=STEPS),
            Square(eps=eps, n_queries=QUERIES),
        ],
    )


def _torchattacks_reduced(model: nn.Module, eps: float) -> torchattacks.MultiAttack:
    return torchattacks.MultiAttack(
        [
            torchattacks.APGD(model, eps=eps, steps=STEPS, seed=0, loss="ce"),
            torchattacks.APGDT(model, eps=eps, steps=STEPS, seed=0, n_classes=10),
            torchattacks.FAB(
                model, eps=eps, steps=STEPS, seed=0, multi_targeted=True, n_classes=10
            ),
            torchattacks.Square(model, eps=eps, n_queries=QUERIES, seed=0),
        ]
    )


@pytest.fixture(scope="module")
def test_digits() -> tuple[Tensor, Tensor]:
    _, _, images, labels = digits()
    return images[:200], labels[:200]


def _robust(model: nn.Module, adversarial: Tensor, labels: Tensor) -> int:
    with torch.no_grad():
        return int((model(adversarial).argmax(1) == labels).sum())


@pytest.mark.parametrize("kind", ["standard", "pgd", "masked"])
def test_never_weaker_than_torchattacks_on_200_digits(
    kind: str, test_digits: tuple[Tensor, Tensor]
) -> None:
    model = trained(kind)
    x, y = test_digits
    ours = _quiet_run(_reduced(EPS), model, x, y)
    theirs = _robust(model, _torchattacks_reduced(model, EPS)(x, y), y)
    assert int((~ours.fooled).sum()) <= theirs + 1
    assert _robust(model, ours.adversarial, y) == int((~ours.fooled).sum())


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["standard", "pgd", "masked"])
def test_standard_version_never_weaker_than_torchattacks(
    kind: str, test_digits: tuple[Tensor, Tensor]
) -> None:
    model = trained(kind)
    x, y = test_digits
    ours = _quiet_run(AutoAttack(eps=EPS), model, x, y)
    reference = torchattacks.AutoAttack(model, eps=EPS, version="standard", n_classes=10, seed=0)
    assert int((~ours.fooled).sum()) <= _robust(model, reference(x, y), y) + 1


def test_on_the_masking_model_the_checks_fire_and_square_beats_pgd(
    test_digits: tuple[Tensor, Tensor],
) -> None:
    model = trained("masked")
    x, y = test_digits
    pgd = PGD(eps=EPS, steps=STEPS).run(model, x, y, generator=torch.Generator().manual_seed(0))
    with pytest.warns(GradientMaskingWarning) as caught:
        result = _reduced(EPS).run(model, x, y)
    assert isinstance(result, AutoAttackResult)
    failed = {check.name for check in result.checks if check.passed is False}
    assert {"zero_gradients", "black_box"} <= failed
    assert {name for name in failed} == {
        str(w.message).split("'")[1] for w in caught if w.category is GradientMaskingWarning
    }
    robust, robust_pgd = int((~result.fooled).sum()), int((~pgd.fooled).sum())
    assert robust <= robust_pgd - 20  # far lower: at least 10 points of 200
    square = result.member_names.index("square")
    assert int((result.member == square).sum()) == result.masking.black_box_fooled > 0


def test_the_ensemble_runs_each_member_on_the_survivors_only() -> None:
    seen: list[int] = []

    class Recorder(FGSM):
        def _run(self, model: nn.Module, inputs: Tensor, *args: Any) -> Any:
            seen.append(inputs.shape[0])
            return super()._run(model, inputs, *args)

    model, (x, y) = tiny_model().eval(), blob_images(32)
    first = FGSM(eps=2 / 255).run(model, x, y)
    attack = AutoAttack(
        eps=8 / 255, version="custom", attacks=[FGSM(eps=0), Recorder(eps=0)], check_large_eps=False
    )
    result = _quiet_run(attack, model, x, y)
    assert isinstance(result, AutoAttackResult)
    assert result.member_names == ("FGSM", "Recorder")
    # Both members take the ensemble's eps; the second sees only the first one's survivors.
    assert torch.equal(result.member == 0, FGSM(eps=8 / 255).run(model, x, y).fooled)
    assert seen == [int((result.member != 0).sum())]
    assert torch.equal(result.fooled, result.member >= 0)
    assert result.robust_after[-1] == int((~result.fooled).sum())
    assert list(result.robust_after) == sorted(result.robust_after, reverse=True)
    assert first.fooled.sum() <= result.fooled.sum()


def test_standard_version_on_a_few_samples_is_reproducible_and_leaves_no_trace() -> None:
    images, labels = blob_images(128)
    model = train_tiny(tiny_model(), images, labels, epochs=40)
    x, y = images[:4], labels[:4]
    attack = AutoAttack(eps=4 / 255)
    rng = torch.get_rng_state()
    first = _quiet_run(attack, model, x, y)
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is never reseeded
    again = _quiet_run(attack, model, x, y)
    assert isinstance(first, AutoAttackResult) and isinstance(again, AutoAttackResult)
    assert first.member_names == VERSIONS["standard"]
    assert torch.equal(first.adversarial, again.adversarial)
    assert torch.equal(first.member, again.member)
    assert (first.adversarial - x).abs().max() <= 4 / 255 + 1e-6
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert [check.passed for check in first.checks[:3]] == [True, True, True]


def test_versions_have_the_reference_settings() -> None:
    standard = dict(AutoAttack(eps=0.1).named_members)
    assert isinstance(standard["apgd-ce"], APGD) and standard["apgd-ce"].n_restarts == 1
    assert standard["apgd-t"].n_target_classes == 9  # type: ignore[attr-defined]
    assert standard["fab-t"].n_target_classes == 9  # type: ignore[attr-defined]
    assert standard["square"].n_queries == 5000  # type: ignore[attr-defined]
    assert standard["square"].p_init == 0.8  # type: ignore[attr-defined]
    plus = dict(AutoAttack(eps=0.5, norm="L2", version="plus").named_members)
    assert tuple(plus) == VERSIONS["plus"]
    assert plus["apgd-ce"].n_restarts == 5 and plus["apgd-dlr"].loss == "dlr"  # type: ignore[attr-defined]
    assert plus["fab"].n_restarts == 5 and plus["square"].norm == "L2"  # type: ignore[attr-defined]
    assert plus["fab"].n_target_classes is None  # type: ignore[attr-defined]
    rand = dict(AutoAttack(eps=0.1, version="rand").named_members)
    assert tuple(rand) == ("apgd-ce", "apgd-dlr")
    assert all(type(a) is APGD and a.eot_iter == 20 for a in rand.values())  # type: ignore[attr-defined]
    replaced = AutoAttack(eps=0.1).replace(eps=0.2)
    assert all(member.eps == 0.2 for member in replaced.attacks)  # type: ignore[attr-defined]


def test_eot_averages_gradients_over_draws() -> None:
    model, (x, y) = tiny_model().eval(), blob_images(8)
    plain = APGD(eps=4 / 255, steps=4).run(model, x, y, generator=torch.Generator().manual_seed(0))
    eot = APGD(eps=4 / 255, steps=4, eot_iter=3).run(
        model, x, y, generator=torch.Generator().manual_seed(0)
    )
    # A deterministic model: the mean of 3 equal gradients is the gradient, at 3x the work.
    torch.testing.assert_close(eot.adversarial, plain.adversarial)
    assert eot.grad_calls == 3 * plain.grad_calls
    # APGDT inherits it; a count below 1 is an error.
    assert APGDT(eps=1.0, eot_iter=5).eot_iter == 5
    with pytest.raises(ValueError, match="eot_iter must be >= 1, got 0"):
        APGD(eps=1.0, eot_iter=0)


class _NoisyLinear(nn.Module):
    """``x -> W (x + s * noise)``: a randomized model whose loss gradient differs per draw."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.tanh(x.flatten(1) + 0.5 * torch.randn_like(x.flatten(1))))


def test_eot_gradient_is_the_mean_over_draws() -> None:
    torch.manual_seed(0)
    model, x, y = _NoisyLinear().eval(), torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 3])
    attack = APGD(eps=0.1, steps=1, eot_iter=4)
    # The gradient of APGD's first step, recomputed by hand from the same four draws.
    torch.manual_seed(1)
    grads = []
    for _ in range(4):
        point = x.clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(point), y, reduction="none").sum()
        grads.append(torch.autograd.grad(loss, point)[0])
    torch.manual_seed(1)
    evaluate = attack._evaluator(model, types.SimpleNamespace(grad_calls=0, grad_samples=0))
    _, _, grad = evaluate(x, y, None)
    torch.testing.assert_close(grad, torch.stack(grads).mean(0), rtol=1e-6, atol=1e-7)


def test_target_counts_are_lowered_to_the_classes_available() -> None:
    model, (x, y) = tiny_model(num_classes=4).eval(), blob_images(4)
    attack = AutoAttack(
        eps=2 / 255,
        version="custom",
        attacks=[APGDT(eps=1, steps=2), FAB(eps=1, steps=2)],
        check_large_eps=False,
    )
    result = _quiet_run(attack, model, x, y)  # 9 targets > 3 other classes: no error
    assert result.fooled.shape == (4,)


class Probabilities(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = tiny_model()

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).softmax(dim=1)


class NoGradient(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = tiny_model()

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.model(x)


@pytest.mark.filterwarnings("ignore:gradient-masking check 'large_eps'")  # also expected here
def test_a_model_returning_probabilities_is_warned_about() -> None:
    x, y = blob_images(8)
    attack = AutoAttack(eps=2 / 255, version="custom", attacks=[APGD(eps=1, steps=2)])
    with pytest.warns(GradientMaskingWarning, match="probabilities, not logits"):
        attack.run(Probabilities().eval(), x, y)


@pytest.mark.filterwarnings("ignore:gradient-masking check 'large_eps'")  # also expected here
@pytest.mark.filterwarnings("ignore:gradient-masking check 'zero_gradients'")
def test_a_model_without_gradient_is_attacked_by_square_only() -> None:
    x, y = blob_images(8)
    model = NoGradient().eval()
    attack = AutoAttack(
        eps=8 / 255, version="custom", attacks=["apgd-ce", Square(eps=1, n_queries=20)]
    )
    with pytest.warns(GradientMaskingWarning, match=r"members \['apgd-ce'\] were skipped") as w:
        result = attack.run(model, x, y)
    with pytest.warns(GradientMaskingWarning, match=r"members \['apgd-ce'\] were skipped") as w2:
        attack(model, x, y)
    # Every warning (the skipped members and the failed checks) points at the user's line.
    assert {warning.filename for warning in [*w, *w2]} == {__file__}
    assert isinstance(result, AutoAttackResult)
    assert not bool((result.member == 0).any())
    only_gradients = AutoAttack(eps=8 / 255, version="custom", attacks=["apgd-ce"])
    with pytest.raises(ValueError, match="no black-box member"):
        only_gradients.run(model, x, y)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"eps": 8}, ValueError, r"eps=8 is larger than the width 1 .* eps=8 / 255"),
        ({"eps": -0.1}, ValueError, "eps must be finite and >= 0"),
        ({"eps": 0.1, "version": "fastest"}, ValueError, "version must be one of"),
        ({"eps": 0.1, "norm": "L1"}, ValueError, "norm must be one of"),
        ({"eps": 0.1, "version": "custom"}, ValueError, "version='custom' needs attacks"),
        ({"eps": 0.1, "version": "custom", "attacks": []}, ValueError, "at least one attack"),
        ({"eps": 0.1, "version": "custom", "attacks": ["pgd"]}, ValueError, "unknown AutoAttack"),
        ({"eps": 0.1, "attacks": ["apgd-ce"]}, ValueError, "only apply to version='custom'"),
        ({"eps": 0.1, "seed": 1.5}, TypeError, "seed must be an int"),
        ({"eps": 0.1, "progress": 1}, TypeError, "progress must be a bool"),
    ],
)
def test_bad_settings(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        AutoAttack(**kwargs)
