"""certified_accuracy: counts equal certify's, Wilson intervals, the empirical bound and its
check, JSON/Markdown/plot, torchrun sharding, and bad input."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import pytest
import torch
from cert_worker import certify
from torch import Tensor, nn

from advkit.certification import ABSTAIN, CertifiedAccuracy, Smooth, certified_accuracy
from advkit.evaluation import wilson_interval
from conftest import blob_images, launch_two_ranks, tiny_model

RADII = (0.0, 0.1, 0.2, 0.4)


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    images, labels = blob_images(64, seed=1)
    return _fit(images, labels)


def _fit(images: Tensor, labels: Tensor) -> nn.Module:
    torch.manual_seed(0)
    model = tiny_model(seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(60):
        noisy = images + 0.1 * torch.randn_like(images)
        loss = nn.functional.cross_entropy(model(noisy), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def batches(n: int = 24, size: int = 8, seed: int = 5) -> list[tuple[Tensor, Tensor]]:
    images, labels = blob_images(n, seed=seed)
    return [(images[i : i + size], labels[i : i + size]) for i in range(0, n, size)]


def test_counts_equal_certify_on_each_batch(trained: nn.Module) -> None:
    smooth = Smooth(trained, 0.1)
    torch.manual_seed(0)
    result = certified_accuracy(
        smooth, batches(), radii=RADII, n0=10, n=200, alpha=0.01, progress=False
    )
    torch.manual_seed(0)
    certified = [0] * len(RADII)
    abstained = 0
    for inputs, labels in batches():
        cert = smooth.certify(inputs, 10, 200, 0.01)
        abstained += int((cert.prediction == ABSTAIN).sum())
        for i, r in enumerate(RADII):
            certified[i] += int(((cert.prediction == labels) & (cert.radius >= r)).sum())
    assert list(result.certified) == certified
    assert result.abstained == abstained and result.total == 24
    assert result.certified[0] > 0 and result.certified[-1] < result.certified[0]
    for count, estimate in zip(result.certified, result.accuracy, strict=True):
        assert estimate.interval == wilson_interval(count, 24, 0.95)
    assert result.abstain_rate.correct == abstained
    assert result.at(0.1) == result.accuracy[1]
    assert result.forward_rows == 24 * 210 and result.grad_rows == 0
    assert result.checks[0].passed is None


def test_empirical_bound_lies_above_the_certified_curve(trained: nn.Module) -> None:
    result = certified_accuracy(
        Smooth(trained, 0.1),
        batches(),
        radii=RADII,
        n0=10,
        n=200,
        alpha=0.01,
        attack_steps=3,
        attack_samples=4,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    assert result.empirical is not None and result.violations == (0,) * len(RADII)
    assert result.empirical[0] == result.certified[0]
    assert all(c <= e for c, e in zip(result.certified, result.empirical, strict=True))
    assert result.empirical[-1] < result.empirical[0]  # the attack breaks something
    assert result.passed and result.checks[0].passed is True
    assert result.grad_rows == 24 * 4 * 3 * 3  # samples x noise x steps x radii > 0


def test_empirical_bound_with_radii_above_zero(trained: nn.Module) -> None:
    # Regression: the empirical counts were checked against certified[0] as if it were the
    # clean count, so radii not starting at 0 raised "empirical must be <= certified[0]".
    def run(radii: tuple[float, ...]) -> CertifiedAccuracy:
        return certified_accuracy(
            Smooth(trained, 0.1), batches(), radii=radii, n0=10, n=200, alpha=0.01,
            attack_steps=3, attack_samples=4, generator=torch.Generator().manual_seed(0),
            progress=False,
        )  # fmt: skip

    full, upper = run(RADII), run(RADII[1:])
    assert upper.certified == full.certified[1:] and upper.empirical == full.empirical[1:]
    assert upper.empirical is not None and upper.empirical[0] > upper.certified[0]
    assert CertifiedAccuracy.from_json(upper.to_json()) == upper


def test_empirical_counts_are_bounded_by_the_answered_samples() -> None:
    with pytest.raises(ValueError, match=r"empirical must be <= total - abstained = 9"):
        CertifiedAccuracy(
            0.25, 10, 100, 0.001, (0.5,), (3,), 1, 10, empirical=(10,), violations=(0,)
        )
    with pytest.raises(ValueError, match=r"empirical must be <= certified\[0\]"):
        CertifiedAccuracy(
            0.25, 10, 100, 0.001, (0.0, 0.5), (5, 3), 1, 10, empirical=(5, 6), violations=(0, 0)
        )


def test_a_contradiction_fails_the_check() -> None:
    result = CertifiedAccuracy(
        0.25, 10, 100, 0.001, (0.0, 0.5), (5, 3), 1, 10, empirical=(5, 2), violations=(0, 1)
    )
    assert not result.passed and "1 at r=0.5" in result.checks[0].detail


def test_seeded_result_is_reproducible_and_round_trips(trained: nn.Module) -> None:
    def run() -> CertifiedAccuracy:
        return certified_accuracy(
            Smooth(trained, 0.1), batches(), radii=RADII, n0=5, n=50, alpha=0.05,
            generator=torch.Generator().manual_seed(1), progress=False,
        )  # fmt: skip

    first = run()
    assert run() == first
    assert CertifiedAccuracy.from_json(first.to_json()) == first
    text = first.to_markdown()
    assert "| 0.1 |" in text and "abstained" in text and "sigma=0.1" in text
    figure = first.plot()
    assert len(figure.axes[0].lines) == 1


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"certified": [3, 4]}, "must not grow with the radius"),
        ({"certified": [11, 1]}, "certified counts must be <= total=10"),
        ({"abstained": 8}, r"certified\[0\] \+ abstained must be <= total"),
        ({"radii": [0.5, 0.0]}, "strictly increasing"),
        ({"radii": [0.0, math.nan]}, "finite"),
        ({"kind": "RobustAccuracy"}, "expected a serialized CertifiedAccuracy"),
        ({"empirical": [5, 3]}, "both be given"),
        ({"empirical": [5, 1], "violations": [0, 0]}, "certified - violations <= empirical"),
        ({"alpha": 1.5}, r"alpha must be in \(0, 1\)"),
        ({"total": 0}, "total must be >= 1"),
    ],
)
def test_from_dict_rejects_contradictions(change: dict, match: str) -> None:
    data = CertifiedAccuracy(0.25, 10, 100, 0.001, (0.0, 0.5), (5, 3), 1, 10).to_dict()
    data.update(change)
    with pytest.raises(ValueError, match=match):
        CertifiedAccuracy.from_dict(data)


def test_from_dict_rejects_coerced_types() -> None:
    data = CertifiedAccuracy(0.25, 10, 100, 0.001, (0.0, 0.5), (5, 3), 1, 10).to_dict()
    data["certified"] = [5.0, "3"]
    with pytest.raises(TypeError, match="certified must be an int"):
        CertifiedAccuracy.from_dict(data)


@pytest.mark.parametrize("field", ["certified", "radii"])
def test_from_dict_rejects_a_missing_list(field: str) -> None:
    data = CertifiedAccuracy(0.25, 10, 100, 0.001, (0.0, 0.5), (5, 3), 1, 10).to_dict()
    data[field] = None
    with pytest.raises(TypeError, match=f"{field} must be a list, got NoneType"):
        CertifiedAccuracy.from_dict(data)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"radii": (0.5, 0.25)}, ValueError, "increasing"),
        ({"radii": (-0.1,)}, ValueError, "radius must be finite and >= 0"),
        ({"n0": 0}, ValueError, "n0 must be >= 1"),
        ({"n": 0}, ValueError, "n must be >= 1"),
        ({"alpha": 0.0}, ValueError, r"alpha must be in \(0, 1\)"),
        ({"attack_steps": -1}, ValueError, "attack_steps must be >= 0"),
        ({"confidence": 1.0}, ValueError, "confidence"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        certified_accuracy(Smooth(tiny_model(), 0.25), batches(), progress=False, **kwargs)


def test_bad_smooth_and_bad_batches_are_clear_errors() -> None:
    with pytest.raises(TypeError, match="smooth must be a Smooth"):
        certified_accuracy(tiny_model(), batches(), progress=False)  # type: ignore[arg-type]
    images, labels = blob_images(4)
    model = tiny_model()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="inside bounds"):
        certified_accuracy(Smooth(model, 0.25), [(images * 255, labels)], n0=2, n=4, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_two_processes_return_the_single_process_result(tmp_path: Path) -> None:
    ranks = launch_two_ranks(Path(__file__).with_name("cert_worker.py"), tmp_path, timeout=240)
    single = certify(False)
    assert ranks[0]["certified"] == single and ranks[1]["certified"] == single
    for rank in ranks:  # through the one evaluation loop: the processes' weights are compared
        assert re.match(r"ValueError: certified_accuracy.*differ in the models' weights",
                        rank["other_weights"], re.DOTALL), rank["other_weights"]  # fmt: skip
    for name, first in ranks[0]["training"].items():  # the smoothing objectives under DDP
        second = ranks[1]["training"][name]
        assert first["record"] == second["record"], name
        for key, tensor in first["state"].items():
            assert torch.equal(second["state"][key], tensor), (name, key)
