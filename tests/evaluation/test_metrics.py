"""Wilson intervals, accuracy estimates and clean accuracy over a loader."""

from __future__ import annotations

import pytest
import torch
from evaluation_cases import make_loader
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn

from advkit.evaluation import AccuracyEstimate, accuracy, wilson_interval
from conftest import tiny_model

# Newcombe (1998), Statistics in Medicine 17:857-872, Table I, method 3 (Wilson, no continuity
# correction), 95% intervals, to four decimals.
NEWCOMBE = [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
]


@pytest.mark.parametrize(("k", "n", "low", "high"), NEWCOMBE)
def test_wilson_matches_newcombe(k: int, n: int, low: float, high: float) -> None:
    got = wilson_interval(k, n)
    assert got == pytest.approx((low, high), abs=5e-5)


def test_wilson_by_hand_for_8_of_10() -> None:
    # z = 1.959964; p = 0.8; z^2/n = 0.384146; centre = (0.8 + 0.192073) / 1.384146 = 0.716740;
    # half = 1.959964 * sqrt(0.016 + 0.0096036) / 1.384146 = 0.226578.
    assert wilson_interval(8, 10) == pytest.approx((0.490162, 0.943318), abs=2e-6)


def test_wilson_other_confidence_uses_the_matching_quantile() -> None:
    # 99%: z = 2.575829; for 0 of 10 the upper bound is z^2 / (n + z^2).
    z2 = 2.5758293035489004**2
    assert wilson_interval(0, 10, confidence=0.99) == pytest.approx((0.0, z2 / (10 + z2)))


@given(n=st.integers(1, 10_000), data=st.data())
def test_wilson_contains_the_estimate_and_stays_in_unit_interval(
    n: int, data: st.DataObject
) -> None:
    k = data.draw(st.integers(0, n))
    low, high = wilson_interval(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0
    # Symmetry: successes and failures swap the interval around 1/2.
    mirrored = wilson_interval(n - k, n)
    assert mirrored == pytest.approx((1 - high, 1 - low), abs=1e-12)


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((1, 0), ValueError, "total must be >= 1"),
        ((3, 2), ValueError, r"successes must be in \[0, total=2\]"),
        ((-1, 2), ValueError, "successes must be in"),
        ((1.0, 2), TypeError, "successes must be an int"),
        ((1, True), TypeError, "total must be an int"),
        ((1, 2, 1.0), ValueError, r"confidence must be in \(0, 1\)"),
        ((1, 2, 0.0), ValueError, r"confidence must be in \(0, 1\)"),
        ((1, 2, "95%"), TypeError, "confidence must be a float"),
    ],
)
def test_wilson_rejects_bad_input(args: tuple, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        wilson_interval(*args)


def test_accuracy_estimate_value_format_and_round_trip() -> None:
    estimate = AccuracyEstimate(8, 10)
    assert float(estimate) == estimate.value == 0.8
    assert estimate.interval == wilson_interval(8, 10)
    assert estimate.format() == "80.0 [49.0, 94.3]"
    assert estimate.format(ci=False) == "80.0"
    assert str(estimate) == "80.0 [49.0, 94.3] % (n=10)"
    assert AccuracyEstimate.from_dict(estimate.to_dict()) == estimate


def test_accuracy_estimate_validates_its_counts() -> None:
    with pytest.raises(ValueError, match="successes must be in"):
        AccuracyEstimate(11, 10)


def test_accuracy_counts_correct_predictions_over_all_batches(
    trained_model_and_data: tuple[nn.Module, Tensor, Tensor],
) -> None:
    model, images, labels = trained_model_and_data
    x, y = images[:100], labels[:100]
    y = torch.where(torch.arange(100) % 7 == 0, (y + 1) % 4, y)  # plant some wrong labels
    with torch.no_grad():
        expected = int((model(x).argmax(1) == y).sum())
    got = accuracy(model, make_loader(x, y, 32), progress=False)
    assert (got.correct, got.total) == (expected, 100)
    assert expected < 100


def test_accuracy_runs_in_eval_mode_and_restores_flags(
    trained_model_and_data: tuple[nn.Module, Tensor, Tensor],
) -> None:
    trained, images, labels = trained_model_and_data
    model = tiny_model()
    model.load_state_dict(trained.state_dict())
    model.train()
    model[4].eval()
    flags = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    loader = make_loader(images[:64], labels[:64], 16)
    got = accuracy(model, loader, progress=False)
    assert got == accuracy(trained, loader, progress=False)
    assert [m.training for m in model.modules()] == flags
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    ("loader", "error", "match"),
    [
        ([], ValueError, "loader yielded no batches"),
        (torch.zeros(4, 3), TypeError, "loader must be an iterable"),
        (42, TypeError, "loader must be an iterable"),
        ([torch.zeros(2, 3, 8, 8)], TypeError, r"\(inputs, labels\) pairs"),
        ([(torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long), 0)], TypeError, "length 3"),
        ([(torch.zeros(2, 3, 8, 8), [0, 1])], TypeError, r"tensors, got \(Tensor, list\)"),
        ([(torch.zeros(0, 3, 8, 8), torch.zeros(0, dtype=torch.long))], ValueError, "empty"),
        (
            [(torch.zeros(2, 3, 8, 8), torch.zeros(3, dtype=torch.long))],
            ValueError,
            r"\[2, 3, 8, 8\] and \[3\]",
        ),
        (
            [(torch.zeros(2, 3, 8, 8), torch.zeros(2))],
            TypeError,
            "must yield integer labels, got dtype torch.float32",
        ),
        ([(torch.zeros(2, 3, 8, 8), torch.full((2,), 9))], ValueError, "number of classes"),
    ],
)
def test_accuracy_rejects_bad_loaders(loader: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        accuracy(tiny_model().eval(), loader, progress=False)  # type: ignore[arg-type]


def test_accuracy_rejects_a_non_module() -> None:
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        accuracy(lambda x: x, [], progress=False)  # type: ignore[arg-type]


def test_accuracy_takes_a_torch_data_loader(
    trained_model_and_data: tuple[nn.Module, Tensor, Tensor],
) -> None:
    from torch.utils.data import DataLoader, TensorDataset

    model, images, labels = trained_model_and_data
    data_loader = DataLoader(TensorDataset(images[:50], labels[:50]), batch_size=16)
    assert accuracy(model, data_loader, progress=False) == accuracy(
        model, make_loader(images[:50], labels[:50], 50), progress=False
    )
