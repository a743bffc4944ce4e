"""Objectives inside the Trainer: exact resume for each, the guard, and bad settings."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset
from training_helpers import loader, one_thread, split_blobs  # noqa: F401

from advkit import PGD
from advkit.training import (
    AWP,
    MART,
    TRADES,
    FastAT,
    FreeAT,
    InnerPGDObjective,
    MixedCE,
    Objective,
    ObjectiveOutput,
    OverfittingGuard,
    Trainer,
    TrainingModel,
)
from advkit.training.metrics import RunningSums
from conftest import blob_images, tiny_model, train_tiny

EPS = 8 / 255
EPOCHS = 2

OBJECTIVES = {
    "mixed": lambda: MixedCE(PGD(eps=EPS, steps=2), adv_weight=0.5),
    "trades": lambda: TRADES(eps=EPS, steps=2),
    "trades_l2": lambda: TRADES(eps=0.3, steps=2, norm="L2"),
    "mart": lambda: MART(eps=EPS, steps=2),
    "fast": lambda: FastAT(eps=EPS),
    "free": lambda: FreeAT(eps=EPS, replays=2),
    "awp_trades": lambda: AWP(TRADES(eps=EPS, steps=2), gamma=0.01),
    "awp_pgd": lambda: AWP(MixedCE(PGD(eps=EPS, steps=2), adv_weight=1.0), gamma=0.01),
}


def _trainer(
    name: str, checkpoint_dir: Path | None = None, generator: torch.Generator | None = None
) -> Trainer:
    return Trainer(
        tiny_model(seed=0),
        lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4),
        objective=OBJECTIVES[name](),
        eps_warmup_epochs=1.5,
        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.8),
        checkpoint_dir=checkpoint_dir,
        device="cpu",
        progress=False,
        generator=generator,
    )


def _generator(seeded: bool, seed: int = 0) -> torch.Generator | None:
    return torch.Generator().manual_seed(seed) if seeded else None


def _loaders() -> tuple:
    train, val = split_blobs(48, 16)
    return loader(train, batch_size=16, shuffle=True, seed=7), loader(val, batch_size=16)


def _seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


@pytest.mark.parametrize("seeded", [False, True], ids=["global_rng", "generator"])
@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_resumed_run_is_bit_identical_for_every_objective(
    tmp_path: Path, name: str, seeded: bool
) -> None:
    """With the global RNG (restored from the checkpoint) and with the Trainer's generator
    (its state restored: the resumed trainer's own is seeded differently)."""
    _seed(0)
    straight = _trainer(name, generator=_generator(seeded))
    history = straight.fit(*_loaders(), epochs=EPOCHS)

    _seed(0)
    _trainer(name, tmp_path, _generator(seeded)).fit(*_loaders(), epochs=EPOCHS // 2)
    _seed(999)  # a new process
    resumed = _trainer(name, tmp_path, _generator(seeded, seed=999))
    resumed_history = resumed.fit(*_loaders(), epochs=EPOCHS, resume_from=tmp_path / "last.pt")

    for key, tensor in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], tensor), key
    assert resumed_history.epochs == history.epochs
    assert resumed.global_step == straight.global_step
    if seeded:
        assert torch.equal(resumed.generator.get_state(), straight.generator.get_state())
    if name == "free":
        assert torch.equal(resumed.objective.delta, straight.objective.delta)
        assert straight.objective.delta.abs().max() > 0
    assert "train_adv_accuracy" in history.last and "train_accuracy" in history.last


def test_free_at_without_its_saved_perturbation_resumes_differently(tmp_path: Path) -> None:
    """The control: the carried perturbation is state that matters."""
    _seed(0)
    straight = _trainer("free")
    straight.fit(*_loaders(), epochs=EPOCHS)
    _seed(0)
    _trainer("free", tmp_path).fit(*_loaders(), epochs=1)
    resumed = _trainer("free", tmp_path)
    resumed.objective.load_state_dict = lambda state: None  # drop the saved delta
    resumed.fit(*_loaders(), epochs=EPOCHS, resume_from=tmp_path / "last.pt")
    assert not all(
        torch.equal(resumed.model.state_dict()[k], v)
        for k, v in straight.model.state_dict().items()
    )


def test_default_objective_is_built_from_attack_and_adv_weight() -> None:
    attack = PGD(eps=EPS, steps=2)
    trainer = Trainer(
        tiny_model(),
        lambda p: torch.optim.SGD(p, lr=0.1),
        attack=attack,
        adv_weight=0.25,
        device="cpu",
        progress=False,
    )
    assert isinstance(trainer.objective, MixedCE)
    assert trainer.objective.attack is attack and trainer.objective.adv_weight == 0.25


def test_free_at_counts_an_optimizer_step_per_replay_and_divides_epochs() -> None:
    objective = FreeAT(eps=EPS, replays=3)
    trainer = Trainer(
        tiny_model(),
        lambda p: torch.optim.SGD(p, lr=0.1),
        objective=objective,
        scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, 1, 0.5),
        scheduler_interval="step",
        device="cpu",
        progress=False,
    )
    train, _ = split_blobs(48, 0)
    trainer.fit(loader(train, batch_size=16), epochs=1)
    assert trainer.global_step == 9
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**9)
    assert objective.epochs_for(10) == 4 and objective.epochs_for(12) == 4


class _Constant(Objective):
    """A user-written objective: cross-entropy, reporting one metric on some batches only."""

    metric_names = ("accuracy", "odd")

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, model: TrainingModel, inputs, labels, eps_scale) -> ObjectiveOutput:
        logits = model(inputs)
        self.calls += 1
        metrics = {"accuracy": (logits.argmax(1) == labels).float().mean()}
        if self.calls % 2:
            metrics["odd"] = torch.tensor(float(self.calls))
        return ObjectiveOutput(nn.functional.cross_entropy(logits, labels), metrics)


def test_a_user_objective_logs_its_metrics_over_the_batches_that_report_them() -> None:
    trainer = Trainer(
        tiny_model(),
        lambda p: torch.optim.SGD(p, lr=0.1),
        objective=_Constant(),
        device="cpu",
        progress=False,
    )
    train, _ = split_blobs(64, 0)
    history = trainer.fit(loader(train, batch_size=16), epochs=1)
    assert history.last["train_odd"] == pytest.approx((1 + 3) / 2)  # batches 1 and 3 of 4


def test_running_sums_leave_out_a_name_no_batch_reported() -> None:
    from advkit.training.distributed import resolve_context

    sums = RunningSums(("loss", "x"), torch.device("cpu"))
    sums.add_some(4, {"loss": torch.tensor(8.0)})
    means, count = sums.means(resolve_context("cpu", False))
    assert means == {"loss": 2.0} and count == 4


# -- the overfitting guard ----------------------------------------------------------------------


class _Collapse(Objective):
    """Plain training that turns destructive after a few steps: a stand-in for catastrophic
    overfitting (the guard only sees robust accuracy fall)."""

    metric_names = ()

    def __init__(self, after: int) -> None:
        self.after, self.calls = after, 0

    def __call__(self, model: TrainingModel, inputs, labels, eps_scale) -> ObjectiveOutput:
        self.calls += 1
        logits = model(inputs)
        loss = nn.functional.cross_entropy(logits, labels)
        return ObjectiveOutput(loss if self.calls <= self.after else -10 * loss)


@pytest.mark.parametrize("action", ["warn", "stop", "rollback"])
def test_guard_acts_on_a_collapse(action: str) -> None:
    images, labels = blob_images(160, seed=1)
    train = TensorDataset(images[:128], labels[:128])
    model = train_tiny(tiny_model(), images[:128], labels[:128], epochs=40)
    guard = OverfittingGuard(images[128:], labels[128:], PGD(eps=1 / 255, steps=2), action=action)
    trainer = Trainer(
        model,
        lambda p: torch.optim.Adam(p, lr=0.005),
        objective=_Collapse(after=8),  # the second epoch destroys the model
        callbacks=[guard],
        device="cpu",
        progress=False,
    )
    with pytest.warns(UserWarning, match="catastrophic overfitting"):
        trainer.fit(loader(train, batch_size=16), epochs=4)
    assert guard.collapsed_at == 16
    assert guard.history[0][1] > 0.5 and guard.history[1][1] < guard.history[0][1] - 0.2
    assert len(trainer.history) == (4 if action == "warn" else 2)
    if action == "rollback":
        assert guard.rolled_back
        assert guard.robust_accuracy(trainer) == guard.history[0][1]


def test_guard_checks_every_n_steps_and_its_state_survives_a_checkpoint(tmp_path: Path) -> None:
    held_out = blob_images(16, seed=9)
    guard = OverfittingGuard(*held_out, PGD(eps=1 / 255, steps=1), every_n_steps=2)
    trainer = Trainer(
        tiny_model(),
        lambda p: torch.optim.SGD(p, lr=0.05),
        objective=FastAT(eps=EPS),
        callbacks=[guard],
        checkpoint_dir=tmp_path,
        device="cpu",
        progress=False,
    )
    train, _ = split_blobs(64, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(loader(train, batch_size=16), epochs=1)
    assert [step for step, _ in guard.history] == [2, 4]
    other = OverfittingGuard(*held_out, PGD(eps=1 / 255, steps=1), every_n_steps=2)
    Trainer(
        tiny_model(),
        lambda p: torch.optim.SGD(p, lr=0.05),
        objective=FastAT(eps=EPS),
        callbacks=[other],
        device="cpu",
        progress=False,
    ).load(tmp_path / "last.pt")
    assert other.history == guard.history


def test_guard_every_n_steps_counts_every_replay_of_free_at() -> None:
    """With m replays a batch takes m optimizer steps: the guard checks at the end of every
    batch in which an n-th step falls (n=3, m=2: steps 3-4 and 5-6), not only where a batch
    ends on a multiple of n (which with n=3, m=2 would check every 6 steps)."""
    held_out = blob_images(16, seed=9)
    guard = OverfittingGuard(*held_out, PGD(eps=1 / 255, steps=1), every_n_steps=3)
    trainer = Trainer(
        tiny_model(),
        lambda p: torch.optim.SGD(p, lr=0.05),
        objective=FreeAT(eps=EPS, replays=2),
        callbacks=[guard],
        device="cpu",
        progress=False,
    )
    train, _ = split_blobs(64, 0)
    trainer.fit(loader(train, batch_size=16), epochs=1)  # 4 batches: steps 2, 4, 6, 8
    assert [step for step, _ in guard.history] == [4, 6]


# -- bad settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: TRADES(eps=EPS, beta=-1.0), ValueError, "beta must be finite and >= 0, got -1"),
        (lambda: MART(eps=EPS, beta=-0.5), ValueError, "beta must be finite and >= 0"),
        (lambda: TRADES(eps=-0.1), ValueError, "eps must be finite and >= 0, got -0.1"),
        (lambda: TRADES(eps=EPS, steps=0), ValueError, "steps must be >= 1, got 0"),
        (lambda: TRADES(eps=EPS, alpha=0.0), ValueError, r"alpha must be finite and > 0, got 0\.0"),
        (lambda: TRADES(eps=EPS, norm="L1"), ValueError, "norm must be one of"),
        (lambda: MART(eps=EPS, bounds=(1.0, 0.0)), ValueError, "lo < hi"),
        (lambda: FreeAT(eps=EPS, replays=0), ValueError, "replays must be >= 1, got 0"),
        (lambda: FreeAT(eps=EPS, replays=2.0), TypeError, "replays must be an int, got float"),
        (lambda: FastAT(eps=0.0), ValueError, "eps must be > 0"),
        (lambda: AWP(TRADES(eps=EPS), gamma=-0.1), ValueError, "gamma must be finite and >= 0"),
        (lambda: AWP(MixedCE()), ValueError, "AWP needs an objective with an adversarial pass"),
        (lambda: AWP(FreeAT(eps=EPS)), TypeError, "base must be an adversarial objective"),
        (lambda: MixedCE("pgd"), TypeError, "attack must be an advkit Attack"),
        (lambda: MixedCE(PGD(eps=EPS, steps=1), adv_weight=2.0), ValueError, "adv_weight"),
    ],
)
def test_bad_objective_settings_are_clear_errors(build, error, match) -> None:
    with pytest.raises(error, match=match):
        build()


def test_trainer_refuses_an_objective_together_with_attack_or_adv_weight() -> None:
    def make(**kwargs):
        return Trainer(
            tiny_model(),
            lambda p: torch.optim.SGD(p, lr=0.1),
            device="cpu",
            progress=False,
            **kwargs,
        )

    with pytest.raises(ValueError, match="give either objective= or attack="):
        make(objective=TRADES(eps=EPS), attack=PGD(eps=EPS, steps=1))
    with pytest.raises(ValueError, match="give either objective= or attack="):
        make(objective=TRADES(eps=EPS), adv_weight=1.0)
    with pytest.raises(TypeError, match="objective must be an advkit Objective"):
        make(objective="trades")


def test_an_objective_returning_a_non_scalar_loss_is_a_clear_error() -> None:
    class _Bad(_Constant):
        def __call__(self, model, inputs, labels, eps_scale) -> ObjectiveOutput:
            return ObjectiveOutput(
                nn.functional.cross_entropy(model(inputs), labels, reduction="none")
            )

    trainer = Trainer(
        tiny_model(),
        lambda p: torch.optim.SGD(p, lr=0.1),
        objective=_Bad(),
        device="cpu",
        progress=False,
    )
    train, _ = split_blobs(16, 0)
    with pytest.raises(ValueError, match="_Bad must return a scalar loss tensor, got \\[16\\]"):
        trainer.fit(loader(train), epochs=1)


def test_guard_bad_settings() -> None:
    x, y = blob_images(4)
    attack = PGD(eps=EPS, steps=1)
    with pytest.raises(ValueError, match="drop must be in"):
        OverfittingGuard(x, y, attack, drop=0.0)
    with pytest.raises(ValueError, match="action must be"):
        OverfittingGuard(x, y, attack, action="explode")
    with pytest.raises(ValueError, match="every_n_steps"):
        OverfittingGuard(x, y, attack, every_n_steps=0)
    with pytest.raises(ValueError, match="same number"):
        OverfittingGuard(x, y[:2], attack)
    with pytest.raises(TypeError, match="attack must be an advkit Attack"):
        OverfittingGuard(x, y, "pgd")


def test_an_inner_pgd_objective_of_ones_own_runs_its_loss_through_the_inner_attack() -> None:
    """InnerPGDObjective is the one home of TRADES's and MART's inner attack: a subclass that
    gives another inner loss gets exactly PGD from ``x + 0.001 N(0, 1)`` on that loss, at the
    warm-up's radius and step, and the inputs unchanged at radius 0."""

    def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        true = logits.gather(1, labels[:, None]).squeeze(1)
        other = logits.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
        return (other - true).sum()

    class MarginAT(InnerPGDObjective):
        metric_names = ("accuracy",)

        def inner_loss(self, model, inputs, labels):  # type: ignore[no-untyped-def]
            return margin

        def outer(self, forward, inputs, adv_inputs, labels):  # type: ignore[no-untyped-def]
            logits = forward(adv_inputs)
            return ObjectiveOutput(nn.functional.cross_entropy(logits, labels))

    model = tiny_model().eval()
    x, y = blob_images(8)
    objective = MarginAT(eps=8 / 255, steps=3)
    ours = objective.perturb(model, x, y, 0.5, generator=torch.Generator().manual_seed(1))
    reference = PGD(eps=4 / 255, steps=3, alpha=2.5 * 4 / 255 / 3, start_std=0.001, loss=margin)
    theirs = reference(model, x, y, generator=torch.Generator().manual_seed(1))
    assert torch.equal(ours, theirs)
    assert torch.equal(objective.perturb(model, x, y, 0.0), x)
    assert objective.step_size(0.5) == pytest.approx(2.5 * 4 / 255 / 3)
