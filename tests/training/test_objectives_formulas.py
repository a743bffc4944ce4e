"""Each objective against its authors' code, written out here from trades.py, mart.py,
free_train.py and utils_awp.py, on fixed batches and a fixed inner-attack start."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import TensorDataset
from training_helpers import loader, one_thread  # noqa: F401

from advkit import PGD
from advkit.training import AWP, MART, TRADES, FreeAT, MixedCE, Trainer, TrainingModel
from advkit.training.objectives.awp import awp_parameters
from conftest import blob_images, tiny_model

EPS, ALPHA, STEPS, BETA = 8 / 255, 2 / 255, 3, 6.0


@pytest.fixture
def case() -> tuple[nn.Module, Tensor, Tensor]:
    """A tiny model with non-trivial BatchNorm statistics and 16 blob images inside the box."""
    images, labels = blob_images(16, seed=5)
    images = 0.1 + 0.8 * images  # 0.001 N(0, 1) starts never leave [0, 1]
    return tiny_model(seed=1), images, labels


# -- the authors' code, written out -------------------------------------------------------------


def trades_inner(model: nn.Module, x: Tensor, eps: float, alpha: float, steps: int) -> Tensor:
    """trades.py, L-inf branch (model.eval(), KLDivLoss(size_average=False))."""
    model.eval()
    x_adv = x.detach() + 0.001 * torch.randn(x.shape).detach()
    for _ in range(steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = nn.KLDivLoss(reduction="sum")(
                F.log_softmax(model(x_adv), dim=1), F.softmax(model(x), dim=1)
            )
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + alpha * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    return x_adv


def trades_inner_l2(model: nn.Module, x: Tensor, eps: float, steps: int) -> Tensor:
    """trades.py, L2 branch (SGD on delta with lr = 2 eps / steps, clamp, renorm)."""
    model.eval()
    n = len(x)
    delta = (0.001 * torch.randn(x.shape)).detach().requires_grad_(True)
    opt = torch.optim.SGD([delta], lr=eps / steps * 2)
    for _ in range(steps):
        opt.zero_grad()
        with torch.enable_grad():
            loss = -nn.KLDivLoss(reduction="sum")(
                F.log_softmax(model(x + delta), dim=1), F.softmax(model(x), dim=1)
            )
        loss.backward()
        norms = delta.grad.view(n, -1).norm(p=2, dim=1)
        delta.grad.div_(norms.view(-1, 1, 1, 1))
        opt.step()
        delta.data.add_(x)
        delta.data.clamp_(0, 1).sub_(x)
        delta.data.renorm_(p=2, dim=0, maxnorm=eps)
    return (x + delta).detach()


def trades_outer(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, beta: float) -> Tensor:
    """trades.py's outer loss (model.train(); model(x) runs twice, as there)."""
    model.train()
    logits = model(x)
    loss_natural = F.cross_entropy(logits, y)
    loss_robust = (1.0 / len(x)) * nn.KLDivLoss(reduction="sum")(
        F.log_softmax(model(x_adv), dim=1), F.softmax(model(x), dim=1)
    )
    return loss_natural + beta * loss_robust


def mart_inner(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, steps: int):
    """mart.py's PGD."""
    model.eval()
    x_adv = x.detach() + 0.001 * torch.randn(x.shape).detach()
    for _ in range(steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_ce = F.cross_entropy(model(x_adv), y)
        grad = torch.autograd.grad(loss_ce, [x_adv])[0]
        x_adv = x_adv.detach() + alpha * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    return torch.clamp(x_adv, 0.0, 1.0)


def mart_outer(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, beta: float) -> Tensor:
    """mart.py's mart_loss after the attack."""
    kl = nn.KLDivLoss(reduction="none")
    model.train()
    logits = model(x)
    logits_adv = model(x_adv)
    adv_probs = F.softmax(logits_adv, dim=1)
    tmp1 = torch.argsort(adv_probs, dim=1)[:, -2:]
    new_y = torch.where(tmp1[:, -1] == y, tmp1[:, -2], tmp1[:, -1])
    loss_adv = F.cross_entropy(logits_adv, y) + F.nll_loss(
        torch.log(1.0001 - adv_probs + 1e-12), new_y
    )
    nat_probs = F.softmax(logits, dim=1)
    true_probs = torch.gather(nat_probs, 1, (y.unsqueeze(1)).long()).squeeze()
    loss_robust = (1.0 / len(x)) * torch.sum(
        torch.sum(kl(torch.log(adv_probs + 1e-12), nat_probs), dim=1) * (1.0000001 - true_probs)
    )
    return loss_adv + float(beta) * loss_robust


def awp_diff(model: nn.Module, loss_of, gamma: float, lr: float = 0.01) -> dict[str, Tensor]:
    """utils_awp.py: one SGD step of a proxy on -loss, then diff_in_weights times gamma."""
    proxy = copy.deepcopy(model)
    proxy.train()
    proxy_optim = torch.optim.SGD(proxy.parameters(), lr=lr)
    loss = -1.0 * loss_of(proxy)
    proxy_optim.zero_grad()
    loss.backward()
    proxy_optim.step()
    diff = {}
    for (old_k, old_w), (_, new_w) in zip(
        model.state_dict().items(), proxy.state_dict().items(), strict=True
    ):
        if len(old_w.size()) <= 1:
            continue
        if "weight" in old_k:
            diff_w = new_w - old_w
            diff[old_k] = gamma * old_w.norm() / (diff_w.norm() + 1e-20) * diff_w
    return diff


def _grads(model: nn.Module, loss: Tensor) -> list[Tensor]:
    return list(torch.autograd.grad(loss, list(model.parameters())))


# -- TRADES -------------------------------------------------------------------------------------


def test_trades_inner_maximization_is_trades_py(case) -> None:
    model, x, y = case
    torch.manual_seed(11)
    expected = trades_inner(copy.deepcopy(model), x, EPS, ALPHA, STEPS)
    torch.manual_seed(11)
    adv = TRADES(eps=EPS, steps=STEPS, alpha=ALPHA).perturb(model.train(), x, y, 1.0)
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-6)
    assert model.training  # the model's mode is given back
    assert (adv - x).abs().max() <= EPS + 1e-6 and (adv - x).abs().max() > EPS / 2


def test_trades_l2_step_agrees_with_trades_py_where_the_box_does_not_clip(case) -> None:
    model, x, y = case
    eps = 0.05  # small enough that neither the start nor a step leaves [0.1 - eps, 0.9 + eps]
    torch.manual_seed(12)
    expected = trades_inner_l2(copy.deepcopy(model), x, eps, STEPS)
    torch.manual_seed(12)
    objective = TRADES(eps=eps, steps=STEPS, alpha=2 * eps / STEPS, norm="L2")
    adv = objective.perturb(model, x, y, 1.0)
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-6)
    norms = (adv - x).flatten(1).norm(dim=1)
    assert torch.all(norms <= eps * (1 + 1e-5))


def test_trades_outer_loss_and_gradient_are_trades_py(case) -> None:
    model, x, y = case
    x_adv = (x + EPS * torch.sign(torch.randn_like(x))).clamp(0, 1)
    reference = copy.deepcopy(model)
    expected = trades_outer(reference, x, x_adv, y, BETA)
    model.train()
    out = TRADES(eps=EPS, steps=STEPS, beta=BETA).outer(TrainingModel(model), x, x_adv, y)
    torch.testing.assert_close(out.loss, expected, rtol=0, atol=1e-6)
    for got, want in zip(_grads(model, out.loss), _grads(reference, expected), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert out.metrics["robust_loss"] > 0


def test_trades_loss_is_the_art_trainers_on_the_same_adversarial_inputs(case) -> None:
    """ART's AdversarialTrainerTRADESPyTorch (its inner attack is a CE PGD, so the outer loss is
    compared on the same x'; ART clamps p(x) at 1e-8, a difference far below the tolerance)."""
    art = pytest.importorskip("art")
    from art.attacks.evasion import ProjectedGradientDescent
    from art.defences.trainer import AdversarialTrainerTRADESPyTorch
    from art.estimators.classification import PyTorchClassifier

    del art
    model, x, y = case
    x_adv = (x + EPS * torch.sign(torch.randn_like(x))).clamp(0, 1)
    art_model = _Whole(copy.deepcopy(model))  # ART reads the accuracy from its first output
    classifier = PyTorchClassifier(
        art_model,
        loss=nn.CrossEntropyLoss(),
        optimizer=torch.optim.SGD(art_model.parameters(), lr=0.0),
        input_shape=tuple(x.shape[1:]),
        nb_classes=4,
        clip_values=(0.0, 1.0),
    )
    attack = ProjectedGradientDescent(
        classifier, eps=EPS, eps_step=ALPHA, max_iter=1, verbose=False
    )
    trainer = AdversarialTrainerTRADESPyTorch(classifier, attack, beta=BETA)
    attack.generate = lambda inputs, y=None, **_: x_adv.numpy()  # the same x' for both
    art_loss, _, n = trainer._batch_process(x.numpy(), y.numpy())
    model.train()
    out = TRADES(eps=EPS, beta=BETA).outer(TrainingModel(model), x, x_adv, y)
    assert art_loss / n == pytest.approx(float(out.loss.detach()), rel=1e-6, abs=1e-6)


class _Whole(nn.Module):
    """The model as one module, so ART's wrapper returns only its logits."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, inputs: Tensor) -> Tensor:
        return self.inner(inputs)


def test_trades_inner_attack_is_torchattacks_tpgd(case) -> None:
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = case
    model.eval()
    torch.manual_seed(13)
    expected = torchattacks.TPGD(model, eps=EPS, alpha=ALPHA, steps=STEPS)(x, y)
    torch.manual_seed(13)
    adv = TRADES(eps=EPS, steps=STEPS, alpha=ALPHA).perturb(model, x, y, 1.0)
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-6)


# -- MART ---------------------------------------------------------------------------------------


def test_mart_inner_attack_is_mart_py(case) -> None:
    model, x, y = case
    torch.manual_seed(21)
    expected = mart_inner(copy.deepcopy(model), x, y, EPS, ALPHA, STEPS)
    torch.manual_seed(21)
    adv = MART(eps=EPS, steps=STEPS, alpha=ALPHA).perturb(model, x, y, 1.0)
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-6)


def test_mart_loss_and_gradient_are_mart_py(case) -> None:
    model, x, y = case
    x_adv = (x + EPS * torch.sign(torch.randn_like(x))).clamp(0, 1)
    reference = copy.deepcopy(model)
    expected = mart_outer(reference, x, x_adv, y, BETA)
    model.train()
    out = MART(eps=EPS, beta=BETA).outer(TrainingModel(model), x, x_adv, y)
    torch.testing.assert_close(out.loss, expected, rtol=0, atol=1e-6)
    for got, want in zip(_grads(model, out.loss), _grads(reference, expected), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


# -- free AT ------------------------------------------------------------------------------------


def test_free_at_is_free_train_py(case) -> None:
    """Two batches, m = 3 replays, through the Trainer, against free_train.py's loop."""
    model, x, y = case
    m, lr = 3, 0.05
    reference = copy.deepcopy(model).train()
    opt = torch.optim.SGD(reference.parameters(), lr=lr)
    global_noise = torch.zeros(8, *x.shape[1:])
    for batch in (slice(0, 8), slice(8, 16)):
        inputs, target = x[batch], y[batch]
        for _ in range(m):
            noise = global_noise[: inputs.size(0)].clone().requires_grad_(True)
            in1 = (inputs + noise).clamp(0, 1.0)
            loss = F.cross_entropy(reference(in1), target)
            opt.zero_grad()
            loss.backward()
            global_noise[: inputs.size(0)] += EPS * torch.sign(noise.grad)
            global_noise.clamp_(-EPS, EPS)
            opt.step()

    objective = FreeAT(eps=EPS, replays=m)
    trainer = Trainer(
        model,
        lambda p: torch.optim.SGD(p, lr=lr),
        objective=objective,
        device="cpu",
        progress=False,
    )
    trainer.fit(loader(TensorDataset(x, y), batch_size=8), epochs=1)
    assert trainer.global_step == 2 * m
    torch.testing.assert_close(objective.delta, global_noise, rtol=0, atol=1e-6)
    for got, want in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


# -- AWP ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", ["trades", "pgd"])
def test_awp_weight_perturbation_is_utils_awp(case, base: str) -> None:
    model, x, y = case
    model.double()
    x, gamma = x.double(), 0.01
    x_adv = (x + EPS * torch.sign(torch.randn_like(x))).clamp(0, 1)
    if base == "trades":
        objective = TRADES(eps=EPS, beta=BETA)

        def loss_of(proxy: nn.Module) -> Tensor:  # TradesAWP.calc_awp
            loss_natural = F.cross_entropy(proxy(x), y)
            loss_robust = F.kl_div(
                F.log_softmax(proxy(x_adv), dim=1),
                F.softmax(proxy(x), dim=1),
                reduction="batchmean",
            )
            return loss_natural + BETA * loss_robust
    else:
        objective = MixedCE(PGD(eps=EPS, steps=2), adv_weight=1.0)

        def loss_of(proxy: nn.Module) -> Tensor:  # AdvWeightPerturb.calc_awp
            return F.cross_entropy(proxy(x_adv), y)

    expected = awp_diff(model, loss_of, gamma)
    buffers = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    awp = AWP(objective, gamma=gamma)
    perturbation = awp.weight_perturbation(model.eval(), x, x_adv, y)
    names = {id(p): name for name, p in awp_parameters(model)}
    got = {names[id(p)]: v for p, v in perturbation}
    assert sorted(got) == sorted(expected)
    for name, v in expected.items():
        torch.testing.assert_close(got[name], v, rtol=1e-6, atol=1e-12)
    assert not model.training  # mode given back
    for name, value in buffers.items():  # BatchNorm statistics untouched by the AWP pass
        assert torch.equal(model.state_dict()[name], value), name


def test_awp_step_applies_the_perturbed_gradient_to_the_restored_weights(case) -> None:
    """w <- w - lr * grad L(w + v), the paper's update, and with lr = 0 the weights come back
    bit for bit."""
    model, x, y = case
    lr, gamma = 0.1, 0.02
    data = loader(TensorDataset(x, y), batch_size=16)

    # By hand: x' from the same seed, v from utils_awp's formula, the gradient at w + v.
    reference = copy.deepcopy(model)
    torch.manual_seed(5)
    x_adv = trades_inner(copy.deepcopy(reference), x, EPS, 2.5 * EPS / 2, 2)
    v = awp_diff(
        reference,
        lambda proxy: TRADES(eps=EPS).outer(TrainingModel(proxy), x, x_adv, y).loss,
        gamma,
    )
    original = {k: p.detach().clone() for k, p in reference.named_parameters()}
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if name in v:
                p.add_(v[name])
    reference.train()
    loss = TRADES(eps=EPS).outer(TrainingModel(reference), x, x_adv, y).loss
    grads = dict(zip(original, _grads(reference, loss), strict=True))
    expected = {k: w - lr * grads[k] for k, w in original.items()}

    torch.manual_seed(5)
    awp_trainer = Trainer(
        model,
        lambda p: torch.optim.SGD(p, lr=lr),
        objective=AWP(TRADES(eps=EPS, steps=2), gamma=gamma),
        device="cpu",
        progress=False,
    )
    awp_trainer.fit(data, epochs=1)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[name], rtol=1e-5, atol=1e-6)

    frozen = tiny_model(seed=2)
    before = {k: p.detach().clone() for k, p in frozen.named_parameters()}
    Trainer(
        frozen,
        lambda p: torch.optim.SGD(p, lr=0.0),
        objective=AWP(TRADES(eps=EPS, steps=2), gamma=0.05),
        device="cpu",
        progress=False,
    ).fit(data, epochs=1)
    for name, p in frozen.named_parameters():
        assert torch.equal(p, before[name]), name


# -- the default objective ----------------------------------------------------------------------


def test_default_objective_is_the_mixed_loss(case) -> None:
    model, x, y = case
    attack = PGD(eps=EPS, steps=2)
    torch.manual_seed(3)
    adv = attack(model, x, y)
    reference = copy.deepcopy(model).train()
    expected = 0.3 * F.cross_entropy(reference(x), y) + 0.7 * F.cross_entropy(reference(adv), y)
    torch.manual_seed(3)
    out = MixedCE(attack, adv_weight=0.7)(TrainingModel(model.train()), x, y, 1.0)
    torch.testing.assert_close(out.loss, expected, rtol=0, atol=1e-6)
    assert set(out.metrics) == {"accuracy", "adv_accuracy", "clean_loss", "adv_loss"}
