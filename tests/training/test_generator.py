"""The Trainer's generator: the objectives' only source of randomness, checkpointed and
restored, refused on the wrong device; objectives written before it still train."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from training_helpers import loader, one_thread, split_blobs, weights  # noqa: F401

from advkit import PGD
from advkit.training import (
    AWP,
    MART,
    TRADES,
    AdversarialObjective,
    Consistency,
    FastAT,
    FreeAT,
    GaussianAugmentation,
    MixedCE,
    Objective,
    ObjectiveOutput,
    SmoothAdv,
    Trainer,
)
from advkit.training._states import restore_generator_state
from advkit.training.checkpoint import save_checkpoint
from advkit.training.distributed import ProcessContext
from advkit.training.objectives.base import Forward, accuracy
from advkit.training.objectives.mixed import scaled_attack
from conftest import tiny_model

EPS = 8 / 255

DRAWING: dict[str, Callable[[], Objective]] = {
    "mixed": lambda: MixedCE(PGD(eps=EPS, steps=2), adv_weight=0.5),
    "trades": lambda: TRADES(eps=EPS, steps=2),
    "mart": lambda: MART(eps=EPS, steps=2),
    "fast": lambda: FastAT(eps=EPS),
    "awp_trades": lambda: AWP(TRADES(eps=EPS, steps=2), gamma=0.01),
    "awp_pgd": lambda: AWP(MixedCE(PGD(eps=EPS, steps=2), adv_weight=1.0), gamma=0.01),
    "gaussian": lambda: GaussianAugmentation(sigma=0.25),
    "smoothadv": lambda: SmoothAdv(sigma=0.25, eps=0.25, steps=1, samples=2),
    "consistency": lambda: Consistency(sigma=0.25, samples=2),
}
"""Objectives that draw random numbers (starts or noise) in every training step."""

OBJECTIVES: dict[str, Callable[[], Objective]] = {
    **DRAWING,
    "free": lambda: FreeAT(eps=EPS, replays=2),  # draws nothing: its delta starts at zero
}


def _trainer(
    objective: Objective,
    generator: torch.Generator | None,
    checkpoint_dir: Path | None = None,
) -> Trainer:
    return Trainer(
        tiny_model(seed=0),  # no dropout: the model itself draws nothing
        lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
        objective=objective,
        checkpoint_dir=checkpoint_dir,
        device="cpu",
        progress=False,
        generator=generator,
    )


def _train_loader() -> torch.utils.data.DataLoader:
    train, _ = split_blobs(32, 0)
    return loader(train, batch_size=16, shuffle=True, seed=3)  # its own shuffling generator


def _fit(trainer: Trainer, epochs: int = 1, **options: object) -> Trainer:
    trainer.fit(_train_loader(), epochs=epochs, **options)
    return trainer


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_with_a_generator_training_leaves_the_global_rng_alone(name: str) -> None:
    generator = torch.Generator().manual_seed(0)
    trainer = _trainer(OBJECTIVES[name](), generator)
    before, drawn_before = torch.get_rng_state(), generator.get_state()
    _fit(trainer)
    assert torch.equal(torch.get_rng_state(), before)
    if name in DRAWING:  # the draws went to the Trainer's generator instead
        assert not torch.equal(generator.get_state(), drawn_before)


@pytest.mark.parametrize("name", sorted(DRAWING))
def test_without_a_generator_the_objectives_draw_from_the_global_rng(name: str) -> None:
    """The control of the test above, and today's behaviour kept."""
    trainer = _trainer(DRAWING[name](), None)
    before = torch.get_rng_state()
    _fit(trainer)
    assert not torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("name", sorted(DRAWING))
def test_equally_seeded_generators_train_identical_weights(name: str) -> None:
    torch.manual_seed(1)
    first = _fit(_trainer(DRAWING[name](), torch.Generator().manual_seed(5)))
    torch.manual_seed(2)  # another global state: it plays no part
    second = _fit(_trainer(DRAWING[name](), torch.Generator().manual_seed(5)))
    other = _fit(_trainer(DRAWING[name](), torch.Generator().manual_seed(6)))
    assert _same_weights(first.model, second.model)
    assert not _same_weights(first.model, other.model)  # the seed matters


@pytest.mark.parametrize("name", ["gaussian", "smoothadv", "consistency"])
@pytest.mark.parametrize("seeded", [False, True], ids=["global_rng", "generator"])
def test_smoothing_objectives_resume_bit_exact(tmp_path: Path, name: str, seeded: bool) -> None:
    """The smoothing objectives' noise, from the global RNG or the Trainer's generator."""

    def generator(seed: int) -> torch.Generator | None:
        return torch.Generator().manual_seed(seed) if seeded else None

    torch.manual_seed(0)
    straight = _fit(_trainer(DRAWING[name](), generator(0)), epochs=2)
    torch.manual_seed(0)
    _fit(_trainer(DRAWING[name](), generator(0), tmp_path), epochs=1)
    torch.manual_seed(999)  # a new process
    resumed = _trainer(DRAWING[name](), generator(999), tmp_path)
    _fit(resumed, epochs=2, resume_from="auto")
    assert _same_weights(straight.model, resumed.model)
    assert resumed.history.epochs == straight.history.epochs


def test_an_objective_with_its_own_generator_keeps_drawing_from_it() -> None:
    own, trainers = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    own_before, trainers_before = own.get_state(), trainers.get_state()
    _fit(_trainer(GaussianAugmentation(sigma=0.25, generator=own), trainers))
    assert not torch.equal(own.get_state(), own_before)
    assert torch.equal(trainers.get_state(), trainers_before)


def test_the_generator_state_is_saved_per_process(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    trainer = _fit(_trainer(TRADES(eps=EPS, steps=2), generator, tmp_path))
    saved = torch.load(tmp_path / "last.pt", weights_only=True)["generator"]
    assert len(saved) == 1 and torch.equal(saved[0], generator.get_state())
    assert trainer.generator is generator
    no_generator = _fit(_trainer(TRADES(eps=EPS, steps=2), None, tmp_path / "none"))
    assert no_generator.state_dict()["generator"] is None


def test_each_process_restores_its_own_generator_state() -> None:
    saved = [torch.Generator().manual_seed(seed).get_state() for seed in (10, 11)]
    cpu = torch.device("cpu")
    for rank in range(2):
        generator = torch.Generator()
        restore_generator_state(generator, saved, ProcessContext(cpu, rank, 2, True), "ckpt")
        assert torch.equal(generator.get_state(), saved[rank])
    # saved by two processes, resumed by three: rank 0's state (the run is not bit-exact)
    generator = torch.Generator()
    restore_generator_state(generator, saved, ProcessContext(cpu, 2, 3, True), "ckpt")
    assert torch.equal(generator.get_state(), saved[0])


@pytest.mark.parametrize("saved_with", [True, False], ids=["saved_with", "saved_without"])
def test_resuming_across_a_generator_mismatch_warns(tmp_path: Path, saved_with: bool) -> None:
    def generator() -> torch.Generator:
        return torch.Generator().manual_seed(0)

    _fit(_trainer(TRADES(eps=EPS, steps=2), generator() if saved_with else None, tmp_path))
    resumed = _trainer(TRADES(eps=EPS, steps=2), None if saved_with else generator(), tmp_path)
    with pytest.warns(UserWarning, match="state of the Trainer's generator but this trainer"):
        _fit(resumed, epochs=2, resume_from="auto")
    assert resumed.epoch == 2


def test_a_generator_state_of_another_kind_is_refused_before_anything_changes(
    tmp_path: Path,
) -> None:
    trainer = _fit(_trainer(TRADES(eps=EPS, steps=2), torch.Generator().manual_seed(0)))
    state = trainer.state_dict()
    state["generator"] = [torch.zeros(16, dtype=torch.uint8)]  # a CUDA generator's size
    path = tmp_path / "edited.pt"
    save_checkpoint(state, path)
    fresh = _trainer(TRADES(eps=EPS, steps=2), torch.Generator().manual_seed(7))
    before, generator_before = weights(fresh.model), fresh.generator.get_state()
    with pytest.raises(ValueError, match=r"generator states hold \[16\] bytes"):
        fresh.load(path)
    assert all(torch.equal(fresh.model.state_dict()[k], v) for k, v in before.items())
    assert torch.equal(fresh.generator.get_state(), generator_before)
    assert fresh.epoch == 0


def test_a_generator_of_the_wrong_type_or_device_is_refused() -> None:
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator or None, got int"):
        _trainer(TRADES(eps=EPS), 0)  # type: ignore[arg-type]

    class OnCuda(torch.Generator):  # what a CUDA generator reports, without a GPU
        @property
        def device(self) -> torch.device:
            return torch.device("cuda", 0)

    with pytest.raises(ValueError, match="generator is on cuda:0 but the Trainer trains on cpu"):
        _trainer(TRADES(eps=EPS), OnCuda())


class _OldStyleMixed(AdversarialObjective):
    """A user's adversarial objective written before ``perturb`` took a generator."""

    def __init__(self) -> None:
        self.attack = PGD(eps=EPS, steps=2)  # a random start: from the global RNG

    @property
    def metric_names(self) -> tuple[str, ...]:
        return ("adv_accuracy",)

    def perturb(self, model: nn.Module, inputs: Tensor, labels: Tensor, eps_scale: float) -> Tensor:
        return scaled_attack(self.attack, eps_scale)(model, inputs, labels)

    def outer(
        self, forward: Forward, inputs: Tensor, adv_inputs: Tensor | None, labels: Tensor
    ) -> ObjectiveOutput:
        assert adv_inputs is not None
        logits = forward(adv_inputs)
        loss = nn.functional.cross_entropy(logits, labels)
        return ObjectiveOutput(loss, {"adv_accuracy": accuracy(logits, labels)})


@pytest.mark.parametrize("wrap", [False, True], ids=["alone", "under_awp"])
def test_an_old_style_adversarial_objective_still_trains(wrap: bool) -> None:
    def objective() -> Objective:
        return AWP(_OldStyleMixed(), gamma=0.01) if wrap else _OldStyleMixed()

    start = weights(tiny_model(seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # without a generator: exactly as before, no warning
        trainer = _fit(_trainer(objective(), None))
    assert not all(torch.equal(trainer.model.state_dict()[k], v) for k, v in start.items())
    assert "train_adv_accuracy" in trainer.history.last
    generator = torch.Generator().manual_seed(0)
    with pytest.warns(UserWarning, match="_OldStyleMixed.perturb takes no generator argument"):
        _fit(_trainer(objective(), generator))
    assert torch.equal(generator.get_state(), torch.Generator().manual_seed(0).get_state())
