"""Every training objective checks a batch as the attacks do: the objectives' inner
maximizations run through the attacks' walk (or its checks), so TRADES, MART, FastAT, FreeAT
and AWP give MixedCE's errors for bad inputs, and their checkpoint states are checked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset
from training_helpers import loader, one_thread  # noqa: F401

from advkit.attacks import PGD
from advkit.training import (
    AWP,
    MART,
    TRADES,
    FastAT,
    FreeAT,
    MixedCE,
    Objective,
    Trainer,
    TrainingModel,
)
from advkit.training._states import load_objective_state
from conftest import blob_images, tiny_model

EPS = 8 / 255

OBJECTIVES: dict[str, Callable[..., Objective]] = {
    "mixed": lambda **kw: MixedCE(PGD(steps=2, **kw), adv_weight=1.0),
    "trades": lambda **kw: TRADES(steps=2, **kw),
    "mart": lambda **kw: MART(steps=2, **kw),
    "fast": lambda **kw: FastAT(**kw),
    "free": lambda **kw: FreeAT(replays=2, **kw),
    "awp_trades": lambda **kw: AWP(TRADES(steps=2, **kw), gamma=0.01),
    "awp_pgd": lambda **kw: AWP(MixedCE(PGD(steps=2, **kw), adv_weight=1.0), gamma=0.01),
}


def step(objective: Objective, model: nn.Module, inputs: Tensor, labels: Tensor) -> None:
    """One training step's objective call and its backward, as the Trainer makes them."""
    out = objective(TrainingModel(model.train()), inputs, labels, 1.0)
    out.loss.backward()
    objective.after_backward(TrainingModel(model))


@pytest.mark.parametrize("name", OBJECTIVES)
def test_inputs_outside_the_bounds_are_refused(name: str) -> None:
    images, labels = blob_images(4)
    with pytest.raises(ValueError, match=r"inputs must lie inside bounds \(0\.0, 1\.0\)"):
        step(OBJECTIVES[name](eps=EPS), tiny_model(), images * 255, labels)  # 0..255 images


@pytest.mark.parametrize("name", OBJECTIVES)
def test_an_linf_eps_wider_than_the_bounds_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match=r"eps=8 is larger than the width 1 .* eps=8 / 255$"):
        OBJECTIVES[name](eps=8.0)
    OBJECTIVES[name](eps=1.0)  # the whole box: allowed


@pytest.mark.parametrize("name", OBJECTIVES)
def test_labels_out_of_range_are_refused(name: str) -> None:
    images, labels = blob_images(4)
    labels[1] = 99
    with pytest.raises(ValueError, match="labels must be < the number of classes"):
        step(OBJECTIVES[name](eps=EPS), tiny_model(), images, labels)


@pytest.mark.parametrize("name", OBJECTIVES)
def test_non_finite_logits_are_refused(name: str) -> None:
    model = tiny_model()
    with torch.no_grad():
        model[-1].bias.fill_(float("nan"))
    images, labels = blob_images(4)
    with pytest.raises(ValueError, match="the model returned non-finite logits"):
        step(OBJECTIVES[name](eps=EPS), model, images, labels)


class DetachesInput(nn.Module):
    """A model whose forward detaches its input: no gradient reaches the inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_model()

    def forward(self, inputs: Tensor) -> Tensor:
        return self.net(inputs.detach())


@pytest.mark.parametrize("name", ["mixed", "trades", "mart", "fast", "awp_trades"])
def test_a_model_that_detaches_its_input_is_a_clear_error(name: str) -> None:
    images, labels = blob_images(4)
    with pytest.raises(
        ValueError, match=r"needs the gradient of the model's output .* carries none"
    ):
        step(OBJECTIVES[name](eps=EPS), DetachesInput(), images, labels)


# -- FreeAT's carried perturbation -----------------------------------------------------------


def test_free_at_resumed_with_a_smaller_eps_projects_the_carried_delta() -> None:
    images, labels = blob_images(8)
    images = 0.1 + 0.8 * images
    model = tiny_model()
    large = FreeAT(eps=16 / 255, replays=2)
    for _ in range(3):
        step(large, model, images, labels)
    assert large.delta is not None and large.delta.abs().max() > 8 / 255
    small = FreeAT(eps=2 / 255, replays=2)
    small.load_state_dict(large.state_dict())
    seen: list[Tensor] = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    step(small, model, images, labels)
    assert (seen[0] - images).abs().max() <= 2 / 255 + 1e-7
    assert small.delta is not None and small.delta.abs().max() <= 2 / 255 + 1e-7


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"delta": "x", "replay": 0}, "got delta str"),
        ({"delta": torch.zeros(2, 3, dtype=torch.long), "replay": 0}, "got delta torch.int64"),
        ({"delta": torch.full((2, 3), float("nan")), "replay": 0}, "got delta"),
        ({"delta": None}, r"got \['delta'\]"),
        ({"delta": None, "replay": "1"}, "replay must be an int in"),
        ({"delta": None, "replay": 5}, r"replay must be an int in \[0, 2\), got 5"),
        ([1, 2], "got list"),
    ],
)
def test_a_crafted_free_at_state_is_a_clear_error(state: object, match: str) -> None:
    objective = FreeAT(eps=EPS, replays=2)
    with pytest.raises(ValueError, match=match):
        objective.load_state_dict(state)  # type: ignore[arg-type]
    assert objective.delta is None and objective.state_dict()["replay"] == 0  # nothing changed


class FailsAfterLoading(FreeAT):
    """A FreeAT whose state load fails after its delta was replaced (a partial restore)."""

    def load_state_dict(self, state: object) -> None:  # type: ignore[override]
        super().load_state_dict(state)  # type: ignore[arg-type]
        if getattr(self, "fail", False):
            raise RuntimeError("disk gone")


def test_a_failed_trainer_load_rolls_back_the_objective_state(tmp_path: Path) -> None:
    images, labels = blob_images(8)
    data = loader(TensorDataset(images, labels), batch_size=8)

    def trainer(objective: Objective) -> Trainer:
        return Trainer(
            tiny_model(),
            lambda p: torch.optim.SGD(p, lr=0.05),
            objective=objective,
            device="cpu",
            progress=False,
        )

    saved = trainer(FailsAfterLoading(eps=EPS, replays=2))
    saved.fit(data, epochs=2)
    saved.save(tmp_path / "run.pt")
    objective = FailsAfterLoading(eps=EPS, replays=2)
    current = trainer(objective)
    current.fit(data, epochs=1)
    before = objective.state_dict()
    assert objective.delta is not None and not torch.equal(
        before["delta"], saved.objective.state_dict()["delta"]
    )
    objective.fail = True  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="disk gone"):
        current.load(tmp_path / "run.pt")
    assert torch.equal(objective.state_dict()["delta"], before["delta"])
    assert objective.state_dict()["replay"] == before["replay"]


def test_a_crafted_objective_entry_in_a_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    images, labels = blob_images(8)
    run = Trainer(
        tiny_model(),
        lambda p: torch.optim.SGD(p, lr=0.05),
        objective=FreeAT(eps=EPS, replays=2),
        device="cpu",
        progress=False,
    )
    run.fit(loader(TensorDataset(images, labels), batch_size=8), epochs=1)
    with pytest.raises(ValueError, match=r"the objective entry in .* must be \{'name'"):
        load_objective_state(run.objective, {"state": {}}, "'run.pt'")
    with pytest.raises(ValueError, match="FreeAT state must be"):
        load_objective_state(run.objective, {"name": "FreeAT", "state": {"delta": "x"}}, "'run.pt'")
