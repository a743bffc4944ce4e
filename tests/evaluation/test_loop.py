"""The one evaluation loop: attack_batch counts as a plain loop over attack.run does, and every
robust accuracy of advkit (evaluation, Trainer.evaluate, OverfittingGuard) goes through it."""

from __future__ import annotations

import copy

import pytest
import torch
from evaluation_cases import Loader, make_loader
from torch import Tensor, nn

from advkit.attacks import IFGSM, PGD
from advkit.evaluation import (
    EvaluationLoop,
    attack_batch,
    evaluate_grid,
    robust_accuracy,
    weights_checksum,
)
from advkit.training import OverfittingGuard, Trainer


@pytest.fixture(scope="module")
def model(trained_model_and_data: tuple[nn.Module, Tensor, Tensor]) -> nn.Module:
    return trained_model_and_data[0]


@pytest.fixture(scope="module")
def loader(trained_model_and_data: tuple[nn.Module, Tensor, Tensor]) -> Loader:
    _, images, labels = trained_model_and_data
    y = labels[:72].clone()
    y[::7] = (y[::7] + 1) % 4  # some samples the model gets wrong
    return make_loader(images[:72], y, 24)


def test_attack_batch_counts_as_a_plain_loop(model: nn.Module, loader: Loader) -> None:
    attack = IFGSM(eps=4 / 255, steps=3)
    for x, y in loader:
        with torch.no_grad():
            correct = model(x).argmax(1) == y
        fooled = attack.run(model, x, y).fooled  # every sample attacked: the reference
        outcome = attack_batch(model, x, y, attack)
        assert torch.equal(outcome.attacked, correct)
        assert torch.equal(outcome.robust, correct & ~fooled)
        assert outcome.result is not None and outcome.result.adversarial.shape[0] == correct.sum()
        assert outcome.work.forward_calls == 1 and outcome.work.forward_samples == y.shape[0]


def test_attack_batch_attacks_only_the_given_samples(model: nn.Module, loader: Loader) -> None:
    x, y = next(iter(loader))
    chosen = torch.zeros(y.shape[0], dtype=torch.bool)
    chosen[:5] = True
    outcome = attack_batch(model, x, y, IFGSM(eps=4 / 255, steps=2), attacked=chosen)
    assert outcome.work.forward_calls == 0  # the caller knew the mask: no clean pass
    assert not outcome.robust[5:].any()
    assert outcome.result is not None and outcome.result.adversarial.shape[0] == 5
    none = attack_batch(model, x, y, IFGSM(eps=4 / 255, steps=2), attacked=chosen & False)
    assert none.result is None and not none.robust.any() and none.work.grad_calls == 0


def test_attack_batch_bad_input_is_a_clear_error(model: nn.Module, loader: Loader) -> None:
    x, y = next(iter(loader))
    attack = IFGSM(eps=4 / 255, steps=1)
    with pytest.raises(TypeError, match="attacked must be a bool tensor, got a tensor of dtype"):
        attack_batch(model, x, y, attack, attacked=torch.ones(y.shape[0]))
    with pytest.raises(ValueError, match=r"attacked must have shape \[24\]"):
        attack_batch(model, x, y, attack, attacked=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="bounds"):
        attack_batch(model, x * 255, y, attack)


def test_trainer_evaluate_equals_robust_accuracy(model: nn.Module, loader: Loader) -> None:
    attack = IFGSM(eps=4 / 255, steps=3)
    trainer = Trainer(copy.deepcopy(model), lambda p: torch.optim.SGD(p, lr=0.1), progress=False)
    metrics = trainer.evaluate(loader, attack=attack)
    result = robust_accuracy(model, loader, attack, progress=False)
    assert metrics["samples"] == result.robust.total == 72
    assert metrics["accuracy"] == pytest.approx(result.clean.value, abs=1e-12)
    assert metrics["robust_accuracy"] == pytest.approx(result.robust.value, abs=1e-12)


def test_overfitting_guard_equals_robust_accuracy(model: nn.Module, loader: Loader) -> None:
    x, y = next(iter(loader))
    attack = IFGSM(eps=4 / 255, steps=3)
    guard = OverfittingGuard(x, y, attack)
    trainer = Trainer(copy.deepcopy(model), lambda p: torch.optim.SGD(p, lr=0.1), progress=False)
    expected = robust_accuracy(model, [(x, y)], attack, progress=False).robust.value
    assert guard.robust_accuracy(trainer) == pytest.approx(expected, abs=1e-12)


def test_overfitting_guard_refuses_inputs_outside_the_bounds(model: nn.Module) -> None:
    x, y = torch.rand(4, 3, 8, 8) * 255, torch.zeros(4, dtype=torch.long)
    guard = OverfittingGuard(x, y, PGD(eps=4 / 255, steps=1))
    trainer = Trainer(copy.deepcopy(model), lambda p: torch.optim.SGD(p, lr=0.1), progress=False)
    with pytest.raises(ValueError, match="bounds"):
        guard.robust_accuracy(trainer)


def test_grid_cells_equal_robust_accuracy_through_the_one_loop(
    model: nn.Module, loader: Loader
) -> None:
    grid = evaluate_grid(model, loader, IFGSM, eps=[2 / 255, 6 / 255], steps=[1, 3], progress=False)
    for steps in (1, 3):
        for eps in (2 / 255, 6 / 255):
            single = robust_accuracy(model, loader, IFGSM(eps=eps, steps=steps), progress=False)
            assert grid.accuracy(eps, steps).correct == single.robust.correct
    assert grid.clean == single.clean


def test_evaluation_loop_counts_every_judge(model: nn.Module, loader: Loader) -> None:
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.parameters()).add_(0.5)
    with EvaluationLoop(loader, [model, other], call="test", progress=False) as loop:
        seen = [batch.correct.shape for batch in loop]
    totals = loop.totals({"extra": 3})
    assert seen == [(2, 24)] * 3
    expected = []
    for judge in (model, other):
        with torch.no_grad():
            expected.append(sum(int((judge(x).argmax(1) == y).sum()) for x, y in loader))
    assert totals.clean == expected and totals.total == 72 and totals.counts == {"extra": 3}
    assert totals.work.forward_calls == 6 and totals.work.forward_samples == 144


def test_a_loop_without_judges_holds_its_model_and_counts_no_clean_pass(
    model: nn.Module, loader: Loader
) -> None:
    """Certification judges each batch itself: no clean pass, the model still held in eval
    mode and every batch still checked against the bounds."""
    model = copy.deepcopy(model).train()
    with EvaluationLoop(loader, [], held=[model], call="test", progress=False) as loop:
        seen = [(model.training, batch.correct.shape) for batch in loop]
    totals = loop.totals()
    assert seen == [(False, (0, 24))] * 3 and model.training
    assert totals.clean == [] and totals.total == 72 and totals.work.forward_calls == 0
    x, y = next(iter(loader))
    outside = EvaluationLoop(
        [(x + 2, y)], [], held=[model], call="test", bounds=(0.0, 1.0), progress=False
    )
    with pytest.raises(ValueError, match="bounds"), outside:
        list(outside)


def test_evaluation_loop_bad_input_is_a_clear_error(model: nn.Module, loader: Loader) -> None:
    with pytest.raises(ValueError, match="needs a model: judges and held are both empty"):
        EvaluationLoop(loader, [], call="test")
    with pytest.raises(ValueError, match="judges must be a sequence of models"):
        EvaluationLoop(loader, model, call="test")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"model 1 must be a torch\.nn\.Module, got str"):
        EvaluationLoop(loader, [model], call="test", held=["nope"])  # type: ignore[list-item]
    loop = EvaluationLoop(loader, [model], call="test", progress=False)
    with pytest.raises(RuntimeError, match="use it in a with block"):
        loop.totals()
    with loop:
        list(loop)
    with pytest.raises(ValueError, match=r"loop's own names \['_total'\]"):
        loop.totals({"_total": 1})
    with (
        pytest.raises(ValueError, match="bounds"),
        EvaluationLoop(
            [(torch.full((2, 3, 8, 8), 2.0), torch.zeros(2, dtype=torch.long))],
            [model],
            call="test",
            bounds=(0.0, 1.0),
            progress=False,
        ) as bad,
    ):
        list(bad)


def test_weights_checksum_sees_every_bit_and_position() -> None:
    a = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4))
    b = copy.deepcopy(a)
    assert weights_checksum(a) == weights_checksum(b)
    with torch.no_grad():
        weight = b[0].weight
        weight[0, 0] = torch.nextafter(weight[0, 0], torch.tensor(2.0))  # one ulp
    assert weights_checksum(a) != weights_checksum(b)
    c = copy.deepcopy(a)
    with torch.no_grad():
        c[0].weight[[0, 1]] = c[0].weight[[1, 0]].clone()  # the same values, swapped
    assert weights_checksum(a) != weights_checksum(c)
    d = copy.deepcopy(a)
    d[1].running_mean += 1  # buffers count too
    assert weights_checksum(a) != weights_checksum(d)


def test_weights_checksum_bad_input_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module, got dict"):
        weights_checksum({})  # type: ignore[arg-type]
