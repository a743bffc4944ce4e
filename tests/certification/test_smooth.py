"""Smooth.predict and Smooth.certify: bounds recomputed with scipy, abstain rules, the constant
classifier's radius, shared forward passes, no trace on the model or inputs, bad input."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch
from scipy import stats
from torch import Tensor, nn

from advkit.certification import ABSTAIN, Smooth, SoftSmooth

TOL = 1e-9


class Constant(nn.Module):
    """Always class ``label`` (logits, not probabilities); counts the rows it classifies."""

    def __init__(self, label: int = 1, classes: int = 3) -> None:
        super().__init__()
        self.label, self.classes = label, classes
        self.passes: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        self.passes.append(x.shape[0])
        logits = torch.zeros(x.shape[0], self.classes)
        logits[:, self.label] = 5.0
        return logits


class Threshold(nn.Module):
    """Class 1 where the mean pixel is above 0.5, else 0: a classifier with known p_A."""

    def forward(self, x: Tensor) -> Tensor:
        score = 50 * (x.flatten(1).mean(dim=1) - 0.5)
        return torch.stack([-score, score], dim=1)


def linear_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))


def images(n: int = 6, seed: int = 0) -> Tensor:
    return torch.rand(n, 3, 2, 2, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("sigma", [0.12, 0.5])
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_certify_bounds_and_radii_equal_scipys_from_the_counts(sigma: float, alpha: float) -> None:
    smooth = Smooth(linear_model(), sigma)
    n0, n = 20, 300
    out = smooth.certify(
        images(8), n0, n, alpha, batch_size=97, generator=torch.Generator().manual_seed(1)
    )
    assert out.selection_counts.sum(dim=1).tolist() == [n0] * 8
    assert out.counts.sum(dim=1).tolist() == [n] * 8
    for i in range(8):
        chosen = int(out.selection_counts[i].argmax())
        k = int(out.counts[i, chosen])
        p_lower = 0.0 if k == 0 else stats.beta.ppf(alpha, k, n - k + 1)
        assert float(out.lower_bound[i]) == pytest.approx(p_lower, abs=TOL)
        if p_lower < 0.5:
            assert int(out.prediction[i]) == ABSTAIN and float(out.radius[i]) == 0.0
        else:
            assert int(out.prediction[i]) == chosen
            assert float(out.radius[i]) == pytest.approx(sigma * stats.norm.ppf(p_lower), abs=TOL)


def test_predict_pvalues_equal_scipys_binomtest_and_abstain_above_alpha() -> None:
    smooth = Smooth(linear_model(2), 0.5)
    alpha = 0.05
    out = smooth.predict(images(10, seed=3), 40, alpha, generator=torch.Generator().manual_seed(0))
    assert out.counts.sum(dim=1).tolist() == [40] * 10
    for counts, pvalue, prediction in zip(out.counts, out.pvalue, out.prediction, strict=True):
        order = sorted(range(len(counts)), key=lambda c: (-int(counts[c]), c))
        top, second = int(counts[order[0]]), int(counts[order[1]])
        expected = stats.binomtest(top, top + second, 0.5).pvalue
        assert float(pvalue) == pytest.approx(expected, abs=TOL)
        assert int(prediction) == (order[0] if expected <= alpha else ABSTAIN)


def test_predict_abstains_on_a_tie_and_answers_a_clear_majority() -> None:
    smooth = Smooth(Threshold(), sigma=0.25)
    g = torch.Generator().manual_seed(0)
    tie = torch.full((1, 1, 4, 4), 0.5)  # p_A = 1/2 exactly
    clear = torch.full((1, 1, 4, 4), 0.9)
    assert int(smooth.predict(tie, 200, 0.001, generator=g).prediction[0]) == ABSTAIN
    assert int(smooth.predict(clear, 200, 0.001, generator=g).prediction[0]) == 1
    certificate = smooth.certify(tie, 10, 200, 0.001, generator=g)
    assert int(certificate.prediction[0]) == ABSTAIN and float(certificate.radius[0]) == 0.0


@pytest.mark.parametrize(
    ("n", "alpha", "sigma"), [(1, 0.5, 0.25), (100, 0.001, 0.25), (10_000, 0.001, 0.5)]
)
def test_radius_of_a_constant_classifier_is_sigma_phi_inv_alpha_to_one_over_n(
    n: int, alpha: float, sigma: float
) -> None:
    smooth = Smooth(Constant(label=2), sigma)
    out = smooth.certify(images(3), 5, n, alpha, batch_size=4096)
    expected = sigma * NormalDist().inv_cdf(alpha ** (1 / n)) if alpha ** (1 / n) >= 0.5 else 0.0
    assert out.radius.tolist() == [expected] * 3  # exactly
    assert expected == pytest.approx(
        sigma * stats.norm.ppf(alpha ** (1 / n)) if expected else 0.0, abs=1e-12
    )
    assert out.prediction.tolist() == ([2] * 3 if alpha ** (1 / n) >= 0.5 else [ABSTAIN] * 3)


def test_inputs_share_full_forward_passes() -> None:
    model = Constant()
    smooth = Smooth(model, 0.25)
    smooth.certify(images(7), 3, 50, 0.01, batch_size=64)
    rows = 7 * 53
    assert model.passes == [64] * (rows // 64) + [rows % 64]


def test_seeded_generator_reproduces_and_global_rng_is_untouched() -> None:
    smooth = Smooth(linear_model(), 0.25)
    state = torch.get_rng_state()
    first = smooth.certify(images(), 10, 100, 0.01, generator=torch.Generator().manual_seed(5))
    second = smooth.certify(images(), 10, 100, 0.01, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first.counts, second.counts) and torch.equal(first.radius, second.radius)
    assert torch.equal(torch.get_rng_state(), state)


def test_model_and_inputs_are_left_as_they_were() -> None:
    model = linear_model()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = images()
    x_before = x.clone()
    Smooth(model, 0.25).certify(x, 5, 20, 0.01)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN stats kept
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert torch.equal(x, x_before)


class Softmaxed(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(linear_model()(x), dim=1)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: Smooth(linear_model(), 0.0),
            ValueError,
            r"sigma must be finite and > 0, got 0\.0",
        ),
        (lambda: Smooth(linear_model(), -1.0), ValueError, "sigma must be finite and > 0"),
        (lambda: Smooth(linear_model(), math.nan), ValueError, "sigma must be finite"),
        (lambda: Smooth(lambda x: x, 0.25), TypeError, "model must be a torch.nn.Module"),
        (
            lambda: Smooth(linear_model(), 0.25, num_classes=1),
            ValueError,
            "num_classes must be >= 2",
        ),
        (
            lambda: Smooth(linear_model(), 0.25).certify(images(), 0, 10, 0.01),
            ValueError,
            "n0 must be >= 1, got 0",
        ),
        (
            lambda: Smooth(linear_model(), 0.25).certify(images(), 5, 0, 0.01),
            ValueError,
            "n must be >= 1, got 0",
        ),
        (
            lambda: Smooth(linear_model(), 0.25).predict(images(), 0, 0.01),
            ValueError,
            "n must be >= 1, got 0",
        ),
        (
            lambda: Smooth(linear_model(), 0.25).certify(images(), 5, 10, 0.0),
            ValueError,
            r"alpha must be in \(0, 1\)",
        ),
        (
            lambda: Smooth(linear_model(), 0.25).predict(images(), 5, 1.0),
            ValueError,
            r"alpha must be in \(0, 1\)",
        ),
        (
            lambda: Smooth(linear_model(), 0.25).certify(images() * 255, 5, 10, 0.01),
            ValueError,
            r"inputs must lie inside bounds \(0\.0, 1\.0\)",
        ),
        (
            lambda: Smooth(linear_model(), 0.25).certify(images() * math.nan, 5, 10, 0.01),
            ValueError,
            "inputs contain NaN",
        ),
        (
            lambda: Smooth(linear_model(), 0.25).certify(images().long(), 5, 10, 0.01),
            TypeError,
            "inputs must be floating point",
        ),
        (
            lambda: Smooth(Softmaxed(), 0.25).certify(images(), 5, 10, 0.01),
            ValueError,
            "seems to return probabilities",
        ),
        (
            lambda: Smooth(linear_model(), 0.25, num_classes=5).certify(images(), 5, 10, 0.01),
            ValueError,
            "num_classes=5",
        ),
        (
            lambda: Smooth(linear_model(), 0.25).certify(images(), 5, 10, 0.01, batch_size=0),
            ValueError,
            "batch_size must be >= 1",
        ),
        (  # an AttributeError from inside before the one generator check served it too
            lambda: Smooth(linear_model(), 0.25).certify(images(), 5, 10, 0.01, generator=3),
            TypeError,
            "generator must be a torch.Generator or None, got int",
        ),
    ],
)
def test_bad_input_is_a_clear_error(call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()


def test_a_rejected_call_changes_nothing() -> None:
    model = linear_model()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = images() * 255
    x_before = x.clone()
    state = torch.get_rng_state()
    with pytest.raises(ValueError, match="inside bounds"):
        Smooth(model, 0.25).certify(x, 5, 10, 0.01)
    assert model.training and torch.equal(x, x_before)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), state)


def test_non_finite_logits_are_an_error() -> None:
    model = linear_model()
    with torch.no_grad():
        model[1].weight[0, 0] = math.nan
    with pytest.raises(ValueError, match="non-finite logits"):
        Smooth(model, 0.25).certify(images(), 5, 10, 0.01)


def test_soft_smooth_is_the_log_of_the_mean_softmax_over_its_noise() -> None:
    model = linear_model().eval()
    x = images(4)
    noise = 0.25 * torch.randn(4, 5, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    out = SoftSmooth(model, 0.25, 5, noise=noise)(x)
    expected = torch.stack(
        [torch.softmax(model(x[i] + noise[i]), dim=1).mean(dim=0) for i in range(4)]
    ).log()
    assert torch.allclose(out, expected, atol=1e-6)
    fresh = SoftSmooth(model, 0.25, 5, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(fresh(x), out, atol=1e-6)  # the same draw, shaped [N, m, ...]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: SoftSmooth(linear_model(), 0.0, 2), ValueError, "sigma must be finite and > 0"),
        (lambda: SoftSmooth(linear_model(), 0.25, 0), ValueError, "samples must be >= 1"),
        (
            lambda: SoftSmooth(linear_model(), 0.25, 2, noise=torch.zeros(4, 3, 3, 2, 2)),
            ValueError,
            r"noise must have shape \[N, m=2, \.\.\.\]",
        ),
        (
            lambda: SoftSmooth(linear_model(), 0.25, 2, noise=torch.zeros(3, 2, 3, 2, 2))(
                images(4)
            ),
            ValueError,
            "does not fit inputs",
        ),
    ],
)
def test_soft_smooth_bad_input_is_a_clear_error(call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_certify_on_cuda_matches_the_counts_rules() -> None:
    model = linear_model().cuda()
    generator = torch.Generator(device="cuda").manual_seed(0)
    out = Smooth(model, 0.25).certify(images().cuda(), 10, 200, 0.01, generator=generator)
    assert out.counts.sum(dim=1).tolist() == [200] * 6
    with pytest.raises(ValueError, match="generator is on cpu"):
        Smooth(model, 0.25).certify(images().cuda(), 10, 20, 0.01, generator=torch.Generator())
