"""The smoothing objectives against their authors' code, written out here from Cohen et al.'s
train.py, Salman et al.'s attacks.py/train_pgd.py and Jeong and Shin's consistency.py; exact
resume in the Trainer; bad input."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from advkit.training import Consistency, GaussianAugmentation, SmoothAdv, Trainer, TrainingModel
from advkit.training.objectives import consistency_loss
from conftest import blob_images, tiny_model

SIGMA = 0.25


@pytest.fixture
def case() -> tuple[nn.Module, Tensor, Tensor]:
    """A tiny model with BatchNorm and 12 images kept away from the box's faces."""
    images, labels = blob_images(12, seed=5)
    return tiny_model(seed=1), 0.3 + 0.4 * images, labels


# -- the authors' code, written out -------------------------------------------------------------


def salman_attack(
    model: nn.Module, x: Tensor, y: Tensor, noise: Tensor, eps: float, steps: int
) -> Tensor:
    """attacks.py, PGD_L2._attack_mutlinoise: delta per input, the m noisy copies of input i at
    rows i*m..i*m+m-1, NLL of the log of the mean softmax, SGD on delta (lr 2 eps / steps) along
    the normalized gradient, clamp to [0, 1], renorm to the ball."""
    m = noise.shape[0] // x.shape[0]
    inputs = x.repeat((1, m, 1, 1)).view(noise.shape)
    delta = torch.zeros_like(x, requires_grad=True)
    optimizer = torch.optim.SGD([delta], lr=eps / steps * 2)
    for _ in range(steps):
        adv = inputs + delta.repeat(1, m, 1, 1).view_as(inputs) + noise
        softmax = F.softmax(model(adv), dim=1)
        average = softmax.reshape(-1, m, softmax.shape[-1]).mean(1, keepdim=True).squeeze(1)
        loss = -F.nll_loss(torch.log(average.clamp(min=1e-20)), y)
        optimizer.zero_grad()
        loss.backward()
        norms = delta.grad.view(x.shape[0], -1).norm(p=2, dim=1)
        delta.grad.div_(norms.view(-1, 1, 1, 1))
        optimizer.step()
        delta.data.add_(x)
        delta.data.clamp_(0, 1).sub_(x)
        delta.data.renorm_(p=2, dim=0, maxnorm=eps)
    return (x + delta).detach()


def jeong_consistency(logits: list[Tensor], lbd: float, eta: float) -> Tensor:
    """consistency.py, loss='default'."""
    m = len(logits)
    softmax = [F.softmax(logit, dim=1) for logit in logits]
    avg_softmax = sum(softmax) / m
    loss_kl = [
        F.kl_div(F.log_softmax(logit, dim=1), avg_softmax, reduction="none").sum(1)
        for logit in logits
    ]
    loss_kl = sum(loss_kl) / m
    entropy = (-avg_softmax * torch.log(avg_softmax.clamp(min=1e-20))).sum(1)
    return (lbd * loss_kl + eta * entropy).mean()


# -- the formulas ---------------------------------------------------------------------------------


def test_gaussian_augmentation_is_cross_entropy_on_noisy_inputs(case) -> None:
    model, x, y = case
    model.train()
    reference = copy.deepcopy(model)
    out = GaussianAugmentation(sigma=SIGMA, generator=torch.Generator().manual_seed(0))(
        TrainingModel(model), x, y, 1.0
    )
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * SIGMA
    expected = F.cross_entropy(reference(x + noise), y)  # train.py: no clipping
    assert torch.allclose(out.loss, expected, atol=1e-6)


@pytest.mark.parametrize(("steps", "samples"), [(1, 1), (3, 2), (2, 4)])
def test_smoothadv_equals_salmans_attack_and_loss(case, steps: int, samples: int) -> None:
    model, x, y = case
    eps = 0.2
    model.train()
    reference = copy.deepcopy(model)
    objective = SmoothAdv(
        sigma=SIGMA,
        eps=eps,
        steps=steps,
        samples=samples,
        generator=torch.Generator().manual_seed(3),
    )
    out = objective(TrainingModel(model), x, y, 1.0)

    noise = torch.randn(
        (x.shape[0] * samples, *x.shape[1:]), generator=torch.Generator().manual_seed(3)
    )
    noise = noise * SIGMA
    reference.eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    adv = salman_attack(reference, x, y, noise, eps, steps)
    reference.train()
    for p in reference.parameters():
        p.requires_grad_(True)
    inputs = adv.repeat((1, samples, 1, 1)).view(noise.shape)
    expected = F.cross_entropy(reference(inputs + noise), y.repeat_interleave(samples))
    assert torch.allclose(out.loss, expected, atol=1e-6)
    assert not torch.allclose(adv, x)  # the attack moved the inputs
    # the model's BatchNorm statistics moved only with the training pass, as the reference's
    for a, b in zip(model.buffers(), reference.buffers(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)


def test_smoothadv_at_eps_scale_zero_is_gaussian_training_on_m_copies(case) -> None:
    model, x, y = case
    out = SmoothAdv(sigma=SIGMA, eps=0.5, samples=2, generator=torch.Generator().manual_seed(0))(
        TrainingModel(model), x, y, 0.0
    )
    noise = torch.randn((12, 2, *x.shape[1:]), generator=torch.Generator().manual_seed(0)) * SIGMA
    expected = F.cross_entropy(model((x[:, None] + noise).flatten(0, 1)), y.repeat_interleave(2))
    assert torch.allclose(out.loss, expected, atol=1e-6)


@pytest.mark.parametrize(("samples", "lbd", "eta"), [(2, 10.0, 0.5), (4, 20.0, 0.0), (3, 0.0, 1.0)])
def test_consistency_equals_jeong_and_shins_loss(
    case, samples: int, lbd: float, eta: float
) -> None:
    model, x, y = case
    model.train()
    reference = copy.deepcopy(model)
    objective = Consistency(sigma=SIGMA, samples=samples, lbd=lbd, eta=eta,
                            generator=torch.Generator().manual_seed(4))  # fmt: skip
    out = objective(TrainingModel(model), x, y, 1.0)
    noise = torch.randn((12, samples, *x.shape[1:]), generator=torch.Generator().manual_seed(4))
    noise = noise * SIGMA
    # train_consistency.py: torch.cat([inputs + noise for noise in noises]), one forward pass
    inputs_c = torch.cat([x + noise[:, j] for j in range(samples)], dim=0)
    logits = reference(inputs_c)
    loss_xent = F.cross_entropy(logits, y.repeat(samples))
    loss_con = jeong_consistency(list(torch.chunk(logits, samples, dim=0)), lbd, eta)
    assert torch.allclose(out.loss, loss_xent + loss_con, atol=1e-5)
    assert torch.allclose(out.metrics["consistency"], loss_con, atol=1e-5)


def test_consistency_loss_is_zero_kl_for_identical_copies() -> None:
    logits = torch.randn(5, 1, 3).expand(5, 4, 3)
    p = F.softmax(logits[:, 0], dim=1)
    expected = 0.5 * (-(p * p.log()).sum(1)).mean()
    assert torch.allclose(consistency_loss(logits, 10.0, 0.5), expected, atol=1e-6)


# -- in the Trainer: exact resume -----------------------------------------------------------------

OBJECTIVES = {
    "gaussian": lambda g: GaussianAugmentation(sigma=SIGMA, generator=g),
    "smoothadv": lambda g: SmoothAdv(sigma=SIGMA, eps=0.3, steps=2, samples=2, generator=g),
    "consistency": lambda g: Consistency(sigma=SIGMA, samples=2, generator=g),
}


def _trainer(name: str, seeded: bool, checkpoint_dir: Path | None = None) -> Trainer:
    generator = torch.Generator().manual_seed(11) if seeded else None
    return Trainer(
        tiny_model(seed=0),
        lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
        objective=OBJECTIVES[name](generator),
        eps_warmup_epochs=1.5,
        checkpoint_dir=checkpoint_dir,
        device="cpu",
        progress=False,
    )


def _loader() -> DataLoader:
    images, labels = blob_images(32, seed=2)
    return DataLoader(
        TensorDataset(images, labels), batch_size=8, shuffle=True,
        generator=torch.Generator().manual_seed(7),
    )  # fmt: skip


def _seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


@pytest.mark.parametrize("seeded", [False, True])
@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_resumed_run_is_bit_identical(tmp_path: Path, name: str, seeded: bool) -> None:
    _seed(0)
    straight = _trainer(name, seeded)
    history = straight.fit(_loader(), epochs=2)
    _seed(0)
    _trainer(name, seeded, tmp_path).fit(_loader(), epochs=1)
    _seed(999)  # a new process
    resumed = _trainer(name, seeded, tmp_path)
    resumed_history = resumed.fit(_loader(), epochs=2, resume_from=tmp_path / "last.pt")
    for key, tensor in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], tensor), key
    assert resumed_history.epochs == history.epochs
    assert "train_noisy_accuracy" in history.last


def test_without_the_saved_generator_state_the_run_differs(tmp_path: Path) -> None:
    """The control: the generator's state is state that matters."""
    _seed(0)
    straight = _trainer("gaussian", True)
    straight.fit(_loader(), epochs=2)
    _seed(0)
    _trainer("gaussian", True, tmp_path).fit(_loader(), epochs=1)
    resumed = _trainer("gaussian", True, tmp_path)
    resumed.objective.load_state_dict = lambda state: None
    resumed.fit(_loader(), epochs=2, resume_from=tmp_path / "last.pt")
    assert not all(
        torch.equal(resumed.model.state_dict()[k], v)
        for k, v in straight.model.state_dict().items()
    )


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: GaussianAugmentation(sigma=0.0), ValueError, "sigma must be finite and > 0"),
        (lambda: SmoothAdv(sigma=-1.0, eps=0.5), ValueError, "sigma must be finite and > 0"),
        (lambda: SmoothAdv(sigma=0.25, eps=-0.5), ValueError, "eps must be finite and >= 0"),
        (lambda: SmoothAdv(sigma=0.25, eps=0.5, steps=0), ValueError, "steps must be >= 1"),
        (lambda: SmoothAdv(sigma=0.25, eps=0.5, samples=0), ValueError, "samples must be >= 1"),
        (lambda: Consistency(sigma=0.25, samples=1), ValueError, "samples must be >= 2"),
        (lambda: Consistency(sigma=0.25, lbd=-1.0), ValueError, "lbd must be finite and >= 0"),
        (lambda: Consistency(sigma=0.25, eta=float("nan")), ValueError, "eta must be finite"),
        (lambda: GaussianAugmentation(sigma=0.25, generator=3), TypeError, "generator must be"),
    ],
)
def test_bad_settings_are_clear_errors(build, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        build()


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_inputs_outside_the_bounds_are_refused(case, name: str) -> None:
    model, x, y = case
    before = copy.deepcopy(model.state_dict())
    objective = OBJECTIVES[name](None)
    with pytest.raises(ValueError, match=r"inputs must lie inside bounds \(0\.0, 1\.0\)"):
        objective(TrainingModel(model), x * 255, y, 1.0)
    with pytest.raises(ValueError, match="labels must be integers"):
        objective(TrainingModel(model), x, y.float(), 1.0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
