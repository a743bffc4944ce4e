"""The gradient-masking checks on models built to show (or not show) each symptom."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from advkit.attacks import (
    CheckOutcome,
    GradientMaskingWarning,
    MaskingEvidence,
    check_gradient_masking,
)
from conftest import blob_images, tiny_model


class Softmaxed(nn.Module):
    """A classifier that returns probabilities instead of logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).softmax(dim=1)


class Quantized(nn.Module):
    """Input quantization ``round(x * k) / k``: zero gradient almost everywhere."""

    def __init__(self, model: nn.Module, levels: int = 4) -> None:
        super().__init__()
        self.model, self.levels = model, levels

    def forward(self, x: Tensor) -> Tensor:
        return self.model(torch.round(x * self.levels) / self.levels)


class Noisy(nn.Module):
    """A randomized defense: Gaussian noise on the input at every call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x + 0.05 * torch.randn_like(x))


def _by_name(checks: tuple[CheckOutcome, ...]) -> dict[str, bool | None]:
    return {check.name: check.passed for check in checks}


def test_a_plain_model_passes_every_model_side_check() -> None:
    x, y = blob_images(16)
    found = _by_name(check_gradient_masking(tiny_model().eval(), x, y))
    assert found == {
        "logits": True,
        "zero_gradients": True,
        "randomized": True,
        "black_box": None,
        "large_eps": None,
    }


@pytest.mark.parametrize(
    ("wrap", "name", "hint"),
    [
        (Softmaxed, "logits", "probabilities"),
        (Quantized, "zero_gradients", "gradient masking"),
        (Noisy, "randomized", "version='rand'"),
    ],
)
def test_each_symptom_fails_its_check_and_warns_what_it_suggests(
    wrap: type[nn.Module], name: str, hint: str
) -> None:
    x, y = blob_images(16)
    model = wrap(tiny_model()).eval()
    with pytest.warns(GradientMaskingWarning, match=hint):
        found = _by_name(check_gradient_masking(model, x, y))
    assert found[name] is False
    assert [n for n, passed in found.items() if passed is False] == [name]


def test_no_gradient_at_all_counts_as_zero_gradient_and_leaves_no_trace() -> None:
    class Detached(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = tiny_model()

        def forward(self, x: Tensor) -> Tensor:
            return self.model(x.detach()).detach()

    x, y = blob_images(8)
    model = Detached().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(GradientMaskingWarning, match="8 of 8 samples have a zero input"):
        check_gradient_masking(model, x, y)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_evidence_adds_up_and_round_trips() -> None:
    a = MaskingEvidence(rows=4, gradients=4, zero_gradients=1, attacked=4, large_eps=0.5)
    b = MaskingEvidence(rows=6, gradients=6, zero_gradients=0, attacked=6, black_box_fooled=1)
    total = a + b
    assert (total.rows, total.zero_gradients, total.black_box_fooled) == (10, 1, 1)
    assert total.large_eps == 0.5
    assert MaskingEvidence.from_dict(total.to_dict()) == total
    check = total.checks()[3]
    assert check.name == "black_box" and check.passed is False  # 1 > 0.002 * 10
    assert check.kind == "gradient_masking"
    assert CheckOutcome.from_dict(check.to_dict()) == check


def test_thresholds_follow_the_reference() -> None:
    # Square: fails above 0.2% of the attacked samples (AutoAttack's check_square_sr alpha).
    assert MaskingEvidence(attacked=1000, black_box_fooled=2)._black_box().passed is True
    assert MaskingEvidence(attacked=1000, black_box_fooled=3)._black_box().passed is False
    # Zero gradients: more than 10% of the samples; any non-finite gradient.
    assert MaskingEvidence(gradients=100, zero_gradients=10)._gradients().passed is True
    assert MaskingEvidence(gradients=100, zero_gradients=11)._gradients().passed is False
    assert MaskingEvidence(gradients=100, nonfinite_gradients=1)._gradients().passed is False
    # Large eps: more than 1% of the attacked samples survive.
    big = {"attacked": 100, "large_eps": 0.5, "large_eps_attacked": 10}
    assert MaskingEvidence(**big, large_eps_robust=1)._large_eps().passed is True
    assert MaskingEvidence(**big, large_eps_robust=2)._large_eps().passed is False
    # A randomized model is expected by the EOT version.
    rand = MaskingEvidence(repeated=5, randomized=5, expects_randomness=True)
    assert rand._randomized().passed is None


def test_bad_arguments() -> None:
    x, y = blob_images(4)
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        check_gradient_masking(lambda t: t, x, y)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"logits of shape \[N, C\]"):
        check_gradient_masking(nn.Flatten(0), x, y)
