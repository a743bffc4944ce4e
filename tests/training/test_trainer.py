"""The Trainer learns, adversarial training buys robustness, and each step is the documented one."""

from __future__ import annotations

import copy
import math
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from training_helpers import (
    adam,
    loader,
    one_thread,  # noqa: F401  (autouse fixture)
    quiet_trainer,
    split_blobs,
    weights,
)

from advkit import IFGSM, PGD
from advkit.training import History, Trainer
from conftest import blob_images, tiny_model

EPS = 16 / 255


@pytest.fixture(scope="module")
def blobs() -> tuple:
    return split_blobs(512, 256)


def test_small_model_reaches_high_accuracy(blobs: tuple) -> None:
    train_set, val_set = blobs
    trainer = quiet_trainer(tiny_model())
    history = trainer.fit(
        loader(train_set, batch_size=64, shuffle=True), loader(val_set), epochs=12
    )
    assert isinstance(history, History) and len(history) == 12
    assert history["epoch"] == list(range(1, 13))
    assert history.last["val_accuracy"] >= 0.95, history.last
    assert history.last["train_accuracy"] >= 0.95, history.last
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert trainer.epoch == 12 and trainer.global_step == 12 * 8
    assert not trainer.model.training  # fit leaves the model in eval mode


def test_pgd_adversarial_training_is_more_robust_than_standard(blobs: tuple) -> None:
    train_set, val_set = blobs
    strong = PGD(eps=EPS, steps=20)
    robust = {}
    for name, attack in (("standard", None), ("adversarial", PGD(eps=EPS, steps=3))):
        trainer = quiet_trainer(tiny_model(), attack=attack, adv_weight=0.5)
        trainer.fit(loader(train_set, batch_size=64, shuffle=True), epochs=12)
        torch.manual_seed(0)  # the same random starts for both evaluations
        metrics = trainer.evaluate(loader(val_set, batch_size=128), attack=strong)
        robust[name] = metrics["robust_accuracy"]
        assert metrics["accuracy"] >= 0.9, (name, metrics)
    message = (
        f"robust accuracy under PGD-20 at eps={EPS:.4f}: standard {robust['standard']:.3f}, "
        f"PGD-3 adversarial training {robust['adversarial']:.3f}"
    )
    assert robust["adversarial"] >= robust["standard"] + 0.2, message


@pytest.mark.parametrize("adv_weight", [0.3, 1.0])
def test_step_uses_the_combined_loss(adv_weight: float) -> None:
    """One step equals a hand-written step on (1 - lam) * clean + lam * adversarial loss."""
    images, labels = blob_images(16)
    attack = IFGSM(eps=EPS, steps=3)  # deterministic
    reference = tiny_model()
    model = copy.deepcopy(reference)

    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    adversarial = attack(reference, images, labels)  # eval mode, the documented default
    reference.train()
    if adv_weight == 1:  # pure adversarial training skips the clean pass
        loss = F.cross_entropy(reference(adversarial), labels)
    else:  # clean pass first: BatchNorm's running statistics depend on the order
        clean_loss = F.cross_entropy(reference(images), labels)
        adv_loss = F.cross_entropy(reference(adversarial), labels)
        loss = (1 - adv_weight) * clean_loss + adv_weight * adv_loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

    trainer = quiet_trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), attack=attack, adv_weight=adv_weight
    )
    history = trainer.fit(
        loader(torch.utils.data.TensorDataset(images, labels), batch_size=16), epochs=1
    )
    for name, tensor in weights(reference).items():
        torch.testing.assert_close(model.state_dict()[name], tensor, msg=name)
    assert history.last["train_loss"] == pytest.approx(loss.item(), rel=1e-5)
    assert ("train_accuracy" in history.last) == (adv_weight < 1)
    assert "train_adv_accuracy" in history.last


def test_adv_weight_zero_is_standard_training() -> None:
    images, labels = blob_images(32)
    data = torch.utils.data.TensorDataset(images, labels)
    plain, with_attack = tiny_model(), tiny_model()
    quiet_trainer(plain).fit(loader(data, batch_size=8), epochs=2)
    with pytest.warns(UserWarning, match="attack is never run"):
        trainer = quiet_trainer(with_attack, attack=PGD(eps=EPS, steps=2), adv_weight=0.0)
    trainer.fit(loader(data, batch_size=8), epochs=2)
    for name, tensor in plain.state_dict().items():
        assert torch.equal(with_attack.state_dict()[name], tensor), name


class _ModeRecorder:
    """Records the ``training`` flag of every forward pass of a model."""

    def __init__(self, model: nn.Module) -> None:
        self.modes: list[bool] = []
        model.register_forward_pre_hook(lambda module, args: self.modes.append(module.training))


@pytest.mark.parametrize("model_mode", ["eval", "train"])
def test_attack_crafts_in_the_attack_model_mode(model_mode: str) -> None:
    images, labels = blob_images(8)
    model = tiny_model()
    recorder = _ModeRecorder(model)
    attack = IFGSM(eps=EPS, steps=3, model_mode=model_mode)
    trainer = quiet_trainer(model, attack=attack, adv_weight=0.5)
    trainer.fit(loader(torch.utils.data.TensorDataset(images, labels), batch_size=8), epochs=1)
    # Three attack steps in the attack's mode, then the clean and adversarial passes in train mode.
    assert recorder.modes == [model_mode == "train"] * 3 + [True, True]


def test_evaluate_runs_and_leaves_the_model_in_eval_mode(blobs: tuple) -> None:
    _, val_set = blobs
    model = tiny_model()
    model.train()
    recorder = _ModeRecorder(model)
    trainer = quiet_trainer(model)
    with pytest.warns(UserWarning, match="replaced by 'eval'"):
        trainer.evaluate(
            loader(val_set, batch_size=64), attack=PGD(eps=EPS, steps=2, model_mode="train")
        )
    assert recorder.modes and not any(recorder.modes)
    assert not any(module.training for module in model.modules())


def test_evaluate_matches_a_hand_computation(blobs: tuple) -> None:
    _, val_set = blobs
    model = tiny_model()
    trainer = quiet_trainer(model)
    trainer.fit(loader(val_set, batch_size=64), epochs=1)  # a half-trained model: mixed results
    attack = IFGSM(eps=4 / 255, steps=3)
    metrics = trainer.evaluate(loader(val_set, batch_size=100), attack=attack)

    images, labels = val_set.tensors
    model.eval()
    with torch.no_grad():
        logits = model(images)
    hit = logits.argmax(dim=1) == labels
    fooled = torch.cat([attack.run(model, x, y).fooled for x, y in loader(val_set, batch_size=100)])
    assert metrics["samples"] == 256
    assert metrics["accuracy"] == hit.sum().item() / 256
    assert metrics["robust_accuracy"] == (hit & ~fooled).sum().item() / 256
    assert metrics["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    assert metrics["robust_accuracy"] <= metrics["accuracy"]


class _EpsRecordingIFGSM(IFGSM):
    seen: ClassVar[list[tuple[float, float]]] = []

    def _run(self, model, inputs, labels, generator, early_stop, track):  # type: ignore[no-untyped-def]
        _EpsRecordingIFGSM.seen.append((self.eps, self.alpha))
        return super()._run(model, inputs, labels, generator, early_stop, track)


def test_eps_warmup_ramps_linearly_from_zero() -> None:
    images, labels = blob_images(32)
    _EpsRecordingIFGSM.seen = []
    attack = _EpsRecordingIFGSM(eps=0.04, steps=2, alpha=0.02)
    trainer = quiet_trainer(tiny_model(), attack=attack, eps_warmup_epochs=2)
    history = trainer.fit(
        loader(torch.utils.data.TensorDataset(images, labels), batch_size=8), epochs=3
    )
    # 4 batches per epoch, warm-up over 8 batches: eps = 0.04 * k / 8; k = 0 needs no attack.
    expected = [min(1.0, k / 8) for k in range(1, 12)]
    assert [eps for eps, _ in _EpsRecordingIFGSM.seen] == pytest.approx(
        [0.04 * f for f in expected]
    )
    assert [alpha for _, alpha in _EpsRecordingIFGSM.seen] == pytest.approx(
        [0.02 * f for f in expected]
    )
    assert history["train_eps"] == pytest.approx([0.04 * 3 / 8, 0.04 * 7 / 8, 0.04])
    assert attack.eps == 0.04  # the caller's attack is not changed


def test_scheduler_factory_steps_every_epoch() -> None:
    images, labels = blob_images(16)
    trainer = quiet_trainer(
        tiny_model(),
        lambda p: torch.optim.SGD(p, lr=0.1),
        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
    )
    history = trainer.fit(
        loader(torch.utils.data.TensorDataset(images, labels), batch_size=8), epochs=3
    )
    assert history["lr"] == pytest.approx([0.1, 0.05, 0.025])
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0125)


def test_optimizer_factory_receives_only_trainable_parameters() -> None:
    model = tiny_model()
    for param in model[:3].parameters():
        param.requires_grad_(False)
    received = []
    trainer = quiet_trainer(
        model, lambda p: received.extend(p) or torch.optim.SGD(received, lr=0.1)
    )
    assert {id(p) for p in received} == {id(p) for p in model[3:].parameters()}
    assert trainer.optimizer.param_groups[0]["params"] == received


def test_mixed_precision_path_and_full_precision_attacks(tmp_path) -> None:
    """The CUDA AMP code path, driven on the CPU (whose autocast also knows float16).

    ``amp=True`` is a no-op on the CPU, so the switches are set by hand here: training passes
    run under autocast with the GradScaler, attacks in float32, and the scaler is checkpointed.
    """
    images, labels = blob_images(16)
    data = loader(torch.utils.data.TensorDataset(images, labels), batch_size=8)

    def amp_trainer() -> Trainer:
        model = tiny_model()
        trainer = quiet_trainer(model, attack=IFGSM(eps=EPS, steps=2), checkpoint_dir=tmp_path)
        trainer.amp, trainer.amp_dtype = True, torch.float16
        trainer._scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        return trainer

    trainer = amp_trainer()
    dtypes: list[torch.dtype] = []
    trainer.model[-1].register_forward_hook(lambda m, args, out: dtypes.append(out.dtype))
    history = trainer.fit(data, epochs=1)
    # Per batch: two float32 attack steps, then the clean and adversarial passes in float16.
    per_batch = [torch.float32] * 2 + [torch.float16] * 2
    assert dtypes == per_batch * 2
    assert math.isfinite(history.last["train_loss"])

    saved_scale = trainer._scaler.get_scale()
    resumed = amp_trainer()
    resumed.load(tmp_path / "last.pt")
    assert resumed._scaler.get_scale() == saved_scale


@pytest.mark.parametrize("progress", [True, False])
def test_progress_bars_go_to_stderr_and_can_be_turned_off(capsys, progress: bool) -> None:
    images, labels = blob_images(16)
    data = loader(torch.utils.data.TensorDataset(images, labels), batch_size=8)
    trainer = Trainer(tiny_model(), adam(), device="cpu", progress=progress)
    trainer.fit(data, data, epochs=2)
    out, err = capsys.readouterr()
    assert out == ""  # library code never prints
    assert ("epochs" in err and "2/2" in err) == progress
    assert err == "" or progress


class _EpochRecordingSampler(torch.utils.data.SequentialSampler):
    """Records the epochs the trainer announces, as a DistributedSampler needs them."""

    def __init__(self, data_source, epochs: list[int]) -> None:
        super().__init__(data_source)
        self.epochs = epochs

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)


def test_sampler_set_epoch_is_called_every_epoch(tmp_path) -> None:
    data = torch.utils.data.TensorDataset(*blob_images(16))
    announced: list[int] = []
    sampled = torch.utils.data.DataLoader(
        data, batch_size=8, sampler=_EpochRecordingSampler(data, announced)
    )
    quiet_trainer(tiny_model(), checkpoint_dir=tmp_path).fit(sampled, epochs=2)
    quiet_trainer(tiny_model()).fit(sampled, epochs=4, resume_from=tmp_path / "last.pt")
    assert announced == [0, 1, 2, 3]
