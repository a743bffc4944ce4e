"""The opt-in ``autocast`` fast path: same contract as full precision, gradients in bf16/fp16."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from attack_cases import ATTACK_FACTORIES
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from advkit import FGSM, IFGSM, MIFGSM, PGD, Attack
from advkit.attacks._precision import autocast_context, gradient_scale
from conftest import blob_images, tiny_model

NAMES = sorted(ATTACK_FACTORIES)
# x0 + eps rounds to the nearest float: the distance may exceed eps by half an ulp of 1.0.
ULP = 2.0**-23


def _with_autocast(name: str, eps: float, dtype: torch.dtype) -> Attack:
    return ATTACK_FACTORIES[name](eps).replace(autocast=dtype)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=10)
@given(eps=st.floats(0.0, 0.2), seed=st.integers(0, 2**16))
def test_bf16_output_stays_in_the_box_and_ball(name: str, eps: float, seed: int) -> None:
    x, y = blob_images(8, seed=seed)
    model = tiny_model(seed=seed).eval()
    attack = _with_autocast(name, eps, torch.bfloat16)
    x_adv = attack(model, x, y, generator=torch.Generator().manual_seed(seed))
    assert x_adv.dtype == x.dtype and x_adv.shape == x.shape
    assert not x_adv.requires_grad
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert float((x_adv - x).abs().max()) <= eps + ULP


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_and_logits_dtype_follow_the_inputs(dtype: torch.dtype) -> None:
    x, y = blob_images(8)
    model = tiny_model().eval().to(dtype)
    result = IFGSM(eps=0.03, steps=2, autocast=torch.bfloat16).run(model, x.to(dtype), y)
    assert result.adversarial.dtype == dtype
    assert result.logits.dtype == dtype


def test_fgsm_equals_the_hand_written_autocast_step() -> None:
    x, y = blob_images(16, seed=5)
    model = tiny_model(seed=5).eval()
    eps = 4 / 255
    xg = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(xg)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits.float(), y), xg)
    expected = torch.clamp(x + eps * grad.sign(), 0, 1)
    assert torch.equal(FGSM(eps=eps, autocast=torch.bfloat16)(model, x, y), expected)


def test_bf16_gradient_signs_mostly_agree_and_the_attack_stays_strong(
    trained_model_and_data,
) -> None:
    model, x, y = trained_model_and_data
    # Wide bounds and a tiny eps: x_adv - x is eps * sign(grad) exactly, nothing is clipped.
    probe = FGSM(eps=2**-10, bounds=(-1.0, 2.0))
    sign32 = (probe(model, x, y) - x).sign()
    sign16 = (probe.replace(autocast=torch.bfloat16)(model, x, y) - x).sign()
    assert float((sign32 != sign16).float().mean()) < 0.1
    attack = IFGSM(eps=8 / 255, steps=5)
    fooled32 = attack.run(model, x, y).fooled.float().mean()
    fooled16 = attack.replace(autocast=torch.bfloat16).run(model, x, y).fooled.float().mean()
    assert abs(float(fooled32) - float(fooled16)) < 0.1


class _Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, inputs: Tensor) -> Tensor:
        return inputs * self.factor


def _small_gradient_model(num_features: int, num_classes: int = 4) -> nn.Module:
    """Linear logits scaled by 1e-4: the float16 backward sees gradients near its subnormals."""
    linear = nn.Linear(num_features, num_classes, bias=False)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        linear.weight.copy_(torch.randn(num_classes, num_features, generator=gen) * 1e-2)
    return nn.Sequential(nn.Flatten(), linear, _Scale(1e-4)).eval()


def test_fp16_scaling_keeps_small_gradients_from_underflowing() -> None:
    x, y = blob_images(64)
    model = _small_gradient_model(x[0].numel())
    probe = FGSM(eps=2**-10, bounds=(-1.0, 2.0))
    sign32 = (probe(model, x, y) - x).sign()
    assert bool((sign32 != 0).all())
    # The plain float16 backward of the mean loss flushes almost every input gradient to zero.
    xg = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.float16):
        logits = model(xg)
    (unscaled,) = torch.autograd.grad(F.cross_entropy(logits.float(), y), xg)
    assert float((unscaled == 0).float().mean()) > 0.9
    sign16 = (probe.replace(autocast=torch.float16)(model, x, y) - x).sign()
    assert float((sign16 != sign32).float().mean()) < 0.05


def test_fp16_overflow_gives_no_step_instead_of_nan() -> None:
    x, y = blob_images(8)
    model = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 4)).eval()
    with torch.no_grad():
        model[1].weight.fill_(1e4)  # logits ~ 1e6: inf in float16, a NaN loss and gradient
    for attack in (IFGSM(eps=0.05, steps=3), MIFGSM(eps=0.05, steps=3)):
        x_adv = attack.replace(autocast=torch.float16)(model, x, y)
        assert bool(torch.isfinite(x_adv).all())
        assert torch.equal(x_adv, x)


@pytest.mark.parametrize(("batch", "scale"), [(1, 1), (2, 2), (3, 4), (64, 64), (65, 128)])
def test_fp16_gradient_scale_is_the_power_of_two_at_least_the_batch(batch: int, scale: int) -> None:
    assert gradient_scale(torch.float16, batch) == scale
    assert gradient_scale(torch.bfloat16, batch) == 1
    assert gradient_scale(None, batch) == 1


def test_autocast_is_a_setting_replace_and_repr_keep() -> None:
    attack = PGD(eps=0.03, steps=3, autocast=torch.bfloat16)
    assert attack.autocast is torch.bfloat16
    assert "autocast=torch.bfloat16" in repr(attack)
    assert attack.replace(eps=0.01).autocast is torch.bfloat16
    assert attack.replace(autocast=None).autocast is None
    assert IFGSM(eps=0.03, steps=3).autocast is None


def test_default_is_full_precision_and_unchanged(model: nn.Module, batch: tuple) -> None:
    x, y = batch
    attack = IFGSM(eps=0.03, steps=3)
    assert torch.equal(attack(model, x, y), attack.replace(autocast=None)(model, x, y))


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ("bfloat16", TypeError, "autocast must be None, torch.bfloat16 or torch.float16, got str"),
        (True, TypeError, "got bool"),
        (
            torch.float32,
            ValueError,
            r"torch.bfloat16 or torch.float16 \(or None\), got torch.float32",
        ),
        (torch.int8, ValueError, "got torch.int8"),
    ],
)
def test_bad_autocast_is_rejected(value: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        IFGSM(eps=0.03, steps=2, autocast=value)
    with pytest.raises(error, match=match):
        FGSM(eps=0.03, autocast=value)


def test_autocast_needs_a_device_type_that_supports_it() -> None:
    with pytest.raises(ValueError, match=r"needs a device type with autocast support.*'meta'"):
        autocast_context(torch.bfloat16, torch.device("meta"))


def test_parameters_get_no_gradient_under_autocast(model: nn.Module, batch: tuple) -> None:
    x, y = batch
    flags = [p.requires_grad for p in model.parameters()]
    MIFGSM(eps=0.03, steps=2, autocast=torch.bfloat16)(model, x, y)
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags
