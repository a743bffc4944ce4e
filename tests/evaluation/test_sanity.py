"""The sanity checks pass on a sound evaluation and fire on every planted fault."""

from __future__ import annotations

import warnings

import pytest
import torch
from evaluation_cases import (
    EscapingIFGSM,
    Loader,
    NoisyModel,
    OutOfBoxIFGSM,
    ShrinkingIFGSM,
    make_loader,
)
from torch import Tensor, nn

from advkit.attacks import IFGSM, PGD, Attack, AttackResult, CheckOutcome, L2Ball, LinfBall
from advkit.evaluation import (
    GridResult,
    RobustAccuracy,
    SanityWarning,
    evaluate_grid,
    robust_accuracy,
    transfer_matrix,
)
from advkit.evaluation.sanity import (
    MonotoneTally,
    Neighbours,
    ThreatModelCheck,
    check_monotone,
    check_zero_eps,
    sign_test_p,
)
from conftest import tiny_model

EPS = [0.0, 2 / 255, 8 / 255]


@pytest.fixture(scope="module")
def model(trained_model_and_data: tuple[nn.Module, Tensor, Tensor]) -> nn.Module:
    return trained_model_and_data[0]


@pytest.fixture(scope="module")
def loader(trained_model_and_data: tuple[nn.Module, Tensor, Tensor]) -> Loader:
    _, images, labels = trained_model_and_data
    return make_loader(images[:64], labels[:64], 32)


def by_name(result: GridResult | RobustAccuracy) -> dict[str, CheckOutcome]:
    return {check.name: check for check in result.checks}


def train_mode_copy(model: nn.Module) -> nn.Module:
    copy = tiny_model()
    copy.load_state_dict(model.state_dict())
    return copy.train()


def test_a_sound_evaluation_passes_every_check_without_warning(
    model: nn.Module, loader: Loader
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", SanityWarning)
        grid = evaluate_grid(model, loader, IFGSM, eps=EPS, steps=[1, 4], progress=False)
    checks = by_name(grid)
    assert list(checks) == [
        "eval_mode",
        "zero_eps",
        "monotone_eps",
        "monotone_steps",
        "in_bounds",
        "in_ball",
    ]
    assert all(check.passed for check in checks.values())
    assert grid.passed


def test_batchnorm_left_in_train_mode_is_flagged_and_evaluated_in_eval_mode(
    model: nn.Module, loader: Loader
) -> None:
    handed_in = train_mode_copy(model)
    state = {k: v.clone() for k, v in handed_in.state_dict().items()}
    with pytest.warns(SanityWarning, match=r"eval_mode.*model\.1, model\.4"):
        grid = evaluate_grid(handed_in, loader, IFGSM, eps=EPS, steps=[2], progress=False)
    assert by_name(grid)["eval_mode"].passed is False
    assert not grid.passed
    # The numbers are those of eval mode, and the caller's model is untouched.
    reference = evaluate_grid(model, loader, IFGSM, eps=EPS, steps=[2], progress=False)
    assert grid.robust == reference.robust and grid.clean == reference.clean
    assert all(m.training for m in handed_in.modules())
    assert all(torch.equal(v, state[k]) for k, v in handed_in.state_dict().items())


def test_dropout_in_train_mode_is_flagged_by_robust_accuracy(loader: Loader) -> None:
    model = nn.Sequential(tiny_model(), nn.Dropout(0.5)).train()
    model[0].eval()
    with pytest.warns(SanityWarning, match=r"model\.1"):
        result = robust_accuracy(model, loader, IFGSM(eps=0.01, steps=2), progress=False)
    assert by_name(result)["eval_mode"].passed is False
    assert model.training and model[1].training and not model[0].training


def test_train_mode_without_mode_dependent_layers_is_harmless(loader: Loader) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 4)).train()
    result = robust_accuracy(model, loader, IFGSM(eps=0.01, steps=2), progress=False)
    assert by_name(result)["eval_mode"].passed is True


def test_an_attack_that_runs_the_model_in_train_mode_is_flagged(
    model: nn.Module, loader: Loader
) -> None:
    with pytest.warns(SanityWarning, match="attacks run the model in train mode"):
        result = robust_accuracy(
            model, loader, PGD(eps=0.01, steps=2, model_mode="train"), progress=False
        )
    assert by_name(result)["eval_mode"].passed is False


def test_an_attack_that_escapes_the_ball_is_flagged(model: nn.Module, loader: Loader) -> None:
    with pytest.warns(SanityWarning, match="leave the eps-ball, by up to 0.05"):
        grid = evaluate_grid(model, loader, EscapingIFGSM, eps=EPS, steps=[2], progress=False)
    checks = by_name(grid)
    assert checks["in_ball"].passed is False
    assert checks["in_bounds"].passed is True
    with pytest.warns(SanityWarning, match="in_ball"):
        result = robust_accuracy(model, loader, EscapingIFGSM(eps=0.01, steps=2), progress=False)
    assert by_name(result)["in_ball"].passed is False


def test_an_attack_that_leaves_the_box_is_flagged(model: nn.Module, loader: Loader) -> None:
    with pytest.warns(SanityWarning, match="leave the bounds"):
        result = robust_accuracy(model, loader, OutOfBoxIFGSM(eps=0.02, steps=1), progress=False)
    assert by_name(result)["in_bounds"].passed is False
    assert by_name(result)["in_ball"].passed is True


def test_accuracy_rising_with_eps_is_flagged(model: nn.Module, loader: Loader) -> None:
    with pytest.warns(SanityWarning, match="robust accuracy rises with eps"):
        grid = evaluate_grid(
            model, loader, ShrinkingIFGSM, eps=[0.03, 0.06, 0.1], steps=[2], progress=False
        )
    assert by_name(grid)["monotone_eps"].passed is False


def test_accuracy_rising_with_steps_is_flagged(model: nn.Module, loader: Loader) -> None:
    class FadingIFGSM(IFGSM):
        """Travels eps / steps in total: more steps, weaker attack."""

        def _default_alpha(self, eps: Tensor) -> Tensor:
            return eps / self.steps**2

    with pytest.warns(SanityWarning, match="robust accuracy rises with steps"):
        grid = evaluate_grid(model, loader, FadingIFGSM, eps=[0.05], steps=[1, 8], progress=False)
    assert by_name(grid)["monotone_steps"].passed is False


def test_a_random_model_fails_the_zero_eps_check(model: nn.Module, loader: Loader) -> None:
    torch.manual_seed(0)
    noisy = NoisyModel(model)
    with pytest.warns(SanityWarning, match="at eps = 0 the robust count must equal"):
        grid = evaluate_grid(noisy, loader, IFGSM, eps=EPS, steps=[1], progress=False)
    assert by_name(grid)["zero_eps"].passed is False
    with pytest.warns(SanityWarning, match="zero_eps"):
        result = robust_accuracy(noisy, loader, IFGSM(eps=0.0, steps=2), progress=False)
    assert by_name(result)["zero_eps"].passed is False


def test_checks_that_do_not_apply_say_so(model: nn.Module, loader: Loader) -> None:
    grid = evaluate_grid(model, loader, IFGSM, eps=[4 / 255], steps=[3], progress=False)
    checks = by_name(grid)
    for name in ("zero_eps", "monotone_eps", "monotone_steps"):
        assert checks[name].passed is None
        assert checks[name].detail.startswith("not applicable")
    assert grid.passed


def test_a_surrogate_in_train_mode_is_flagged_by_the_transfer_matrix(
    model: nn.Module, loader: Loader
) -> None:
    surrogate = train_mode_copy(model)
    with pytest.warns(SanityWarning, match=r"surrogate 'a'\.1"):
        matrix = transfer_matrix({"a": surrogate}, {"b": model}, loader, IFGSM(eps=0.01, steps=1))
    assert not matrix.passed
    assert all(m.training for m in surrogate.modules())


def test_threat_model_check_allows_the_border_and_rounding_only() -> None:
    x = 0.5 * torch.rand(5, 3, 4, 4)  # far from 1: nothing below is clamped
    eps = torch.tensor([0.0, 0.01, 0.02, 0.03, 0.1])
    ball = IFGSM(eps=eps, steps=1)
    border = torch.clamp(x + eps.view(-1, 1, 1, 1), 0, 1)  # every sample on its border
    assert torch.equal(border, torch.clamp(border, 0, 1))
    check = ThreatModelCheck(ball)
    check.update(x, border, eps)
    assert [c.passed for c in check.results()] == [True, True]
    check.update(x, torch.clamp(border + 1e-4, 0, 1), eps)
    in_bounds, in_ball = check.results()
    assert in_bounds.passed is True and in_ball.passed is False
    assert in_ball.detail.startswith("5 of 10 adversarial examples leave the eps-ball")


def test_sign_test_by_hand() -> None:
    # 5 rises, 0 falls: P(X >= 5 | Bin(5, 1/2)) = 1/32; 2 rises, 1 fall: (3 + 1) / 8.
    assert sign_test_p(5, 0) == pytest.approx(1 / 32)
    assert sign_test_p(2, 1) == pytest.approx(0.5)
    assert sign_test_p(0, 4) == 1.0
    assert sign_test_p(20, 0) == pytest.approx(2.0**-20)
    assert sign_test_p(600, 400) < 1e-9  # large counts stay finite


def test_monotone_check_tolerates_noise_and_fails_on_a_real_rise() -> None:
    noise = [Neighbours("eps=0.01 -> 0.02", rises=2, falls=1)]
    passed = check_monotone("monotone_eps", "eps", noise)
    assert passed.passed is True and "within noise" in passed.detail
    real = [Neighbours("eps=0.01 -> 0.02", rises=12, falls=1), Neighbours("x", 0, 3)]
    failed = check_monotone("monotone_eps", "eps", real)
    assert failed.passed is False
    assert "eps=0.01 -> 0.02: +11 samples (p=0.0017)" in failed.detail
    assert check_monotone("monotone_eps", "eps", [Neighbours("x", 0, 5)]).passed is True
    assert check_monotone("monotone_steps", "steps", []).passed is None


def test_monotone_tally_counts_per_sample_changes() -> None:
    tally = MonotoneTally([0.0, 0.1], [1, 2])
    # steps x eps x samples; sample 0 survives the larger eps at steps 1 but not the smaller.
    robust = torch.tensor([[[False, True], [True, True]], [[False, True], [False, False]]])
    tally.update(robust)
    assert tally.eps_rises.tolist() == [[1], [0]] and tally.eps_falls.tolist() == [[0], [1]]
    assert tally.steps_rises.tolist() == [[0, 0]] and tally.steps_falls.tolist() == [[0, 2]]
    eps_check, steps_check = tally.results()
    assert eps_check.passed is True and "steps=1: eps=0 -> 0.1: +1 samples" in eps_check.detail
    assert steps_check.passed is True and steps_check.detail == (
        "robust accuracy never rises with steps"
    )


def test_zero_eps_check_on_planted_counts() -> None:
    assert check_zero_eps(10, {"steps=1": 10, "steps=3": 9}).passed is False
    assert check_zero_eps(10, {"steps=1": 10}).passed is True
    assert check_zero_eps(10, None).passed is None


class SpreadL2(Attack):
    """A user-written L2 attack that spreads ``spread`` over every pixel: far outside its L2
    ball (``spread * sqrt(d)``) while staying inside the L-inf ball of the same eps."""

    spread = 0.05

    def __init__(self, eps: float) -> None:
        super().__init__(eps=eps, norm="L2")

    def _run(self, model, inputs, labels, generator, early_stop, track):  # type: ignore[no-untyped-def]
        adversarial = (inputs + self.spread).clamp(0, 1)
        if not track:
            return adversarial, None
        with torch.no_grad():
            logits = model(adversarial)
        success = logits.argmax(dim=1) != labels
        return adversarial, AttackResult(
            adversarial=adversarial,
            success=success,
            logits=logits,
            success_step=torch.where(success, 1, -1),
            grad_calls=0,
            grad_samples=0,
        )


def test_an_l2_attack_is_checked_in_its_own_norm(model: nn.Module, loader: Loader) -> None:
    attack = SpreadL2(eps=0.5)
    x = next(iter(loader))[0]
    moved = (x + SpreadL2.spread).clamp(0, 1)
    assert float(LinfBall.distance(moved, x).max()) <= 0.5 + 1e-6  # inside the L-inf ball
    assert float(L2Ball.distance(moved, x).min()) > 0.5  # outside the L2 one
    with pytest.warns(SanityWarning, match=r"leave the eps-ball, by up to .* in L2 norm"):
        result = robust_accuracy(model, loader, attack, progress=False)
    assert by_name(result)["in_ball"].passed is False
    with pytest.warns(SanityWarning, match="in L2 norm"):
        matrix = transfer_matrix([model], [model], loader, attack, progress=False)
    assert by_name(matrix)["in_ball"].passed is False  # type: ignore[arg-type]


def test_an_l2_attack_inside_its_ball_passes(model: nn.Module, loader: Loader) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", SanityWarning)
        result = robust_accuracy(
            model, loader, PGD(eps=0.5, norm="L2", steps=3, alpha=0.3), progress=False
        )
    assert by_name(result)["in_ball"].passed is True
    assert "L2 eps-ball" in by_name(result)["in_ball"].detail


def test_distance_measures_each_norm_per_sample() -> None:
    x = torch.zeros(2, 1, 2, 2)
    x_adv = torch.stack([torch.full((1, 2, 2), 0.5), torch.tensor([[[0.3, 0.0], [0.0, -0.4]]])])
    assert LinfBall.distance(x_adv, x).tolist() == pytest.approx([0.5, 0.4])
    assert L2Ball.distance(x_adv, x).tolist() == pytest.approx([1.0, 0.5])
    ball = L2Ball(x, torch.ones(2, 1, 1, 1), (0.0, 1.0))
    assert ball.distance(x_adv, ball.center).tolist() == pytest.approx([1.0, 0.5])


def test_distance_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"one shape \[N, \.\.\.\], got \[2, 3\] and \[2, 4\]"):
        L2Ball.distance(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(TypeError, match="two tensors, got list and Tensor"):
        LinfBall.distance([0.0], torch.zeros(1, 1))  # type: ignore[arg-type]


def test_threat_model_check_bad_input_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="needs the attack whose examples it checks, got tuple"):
        ThreatModelCheck((0.0, 1.0))  # type: ignore[arg-type]
