"""The transfer matrix equals robust accuracy under Transfer, for one attack per surrogate."""

from __future__ import annotations

import pytest
from evaluation_cases import Loader, make_loader
from torch import Tensor, nn

from advkit.attacks import FGSM, IFGSM
from advkit.attacks.compose import Transfer
from advkit.evaluation import TransferMatrix, robust_accuracy, transfer_matrix
from conftest import blob_images, tiny_model, train_tiny


@pytest.fixture(scope="module")
def models(trained_model_and_data: tuple[nn.Module, Tensor, Tensor]) -> dict[str, nn.Module]:
    trained, images, labels = trained_model_and_data
    other = train_tiny(tiny_model(seed=1), images[:128], labels[:128], epochs=20)
    return {"trained": trained, "other": other, "untrained": tiny_model(seed=2).eval()}


@pytest.fixture(scope="module")
def loader() -> Loader:
    images, labels = blob_images(256)
    return make_loader(images[128:192], labels[128:192], 24)


def test_each_cell_equals_robust_accuracy_under_transfer(
    models: dict[str, nn.Module], loader: Loader
) -> None:
    attack = IFGSM(eps=8 / 255, steps=3)
    surrogates = {name: models[name] for name in ("trained", "other")}
    targets = {name: models[name] for name in ("trained", "untrained", "other")}
    matrix = transfer_matrix(surrogates, targets, loader, attack, progress=False)
    assert matrix.surrogates == ("trained", "other")
    assert matrix.targets == ("trained", "untrained", "other")
    for i, surrogate in enumerate(surrogates.values()):
        for j, target in enumerate(targets.values()):
            expected = robust_accuracy(target, loader, Transfer(surrogate, attack), progress=False)
            assert matrix.robust[i][j] == expected.robust, (i, j)
            assert matrix.clean[j] == expected.clean
    # One attack per surrogate and batch, whatever the number of targets.
    assert matrix.work.grad_calls == len(surrogates) * len(loader) * 3
    assert matrix.passed


def test_the_diagonal_of_a_one_step_attack_is_the_white_box_number(
    models: dict[str, nn.Module], loader: Loader
) -> None:
    attack = FGSM(eps=4 / 255)
    matrix = transfer_matrix([models["trained"]], [models["trained"]], loader, attack)
    white_box = robust_accuracy(models["trained"], loader, attack, progress=False)
    assert matrix.robust[0][0] == white_box.robust
    assert (matrix.surrogates, matrix.targets) == (("surrogate0",), ("target0",))
    assert white_box.robust.correct < white_box.clean.correct  # the attack does something


def test_round_trip_and_markdown(models: dict[str, nn.Module], loader: Loader) -> None:
    matrix = transfer_matrix(
        {"a": models["trained"]}, {"b": models["other"]}, loader, FGSM(eps=0.02), progress=False
    )
    assert TransferMatrix.from_json(matrix.to_json()) == matrix
    table = matrix.to_markdown()
    assert "| surrogate \\ target | b |" in table
    assert f"| (clean) | {matrix.clean[0].format()} |" in table
    assert f"| a | {matrix.robust[0][0].format()} |" in table


@pytest.mark.parametrize(
    ("surrogates", "targets", "attack", "error", "match"),
    [
        ({}, [nn.Linear(2, 2)], FGSM(eps=0.1), ValueError, "surrogates must hold at least one"),
        ([nn.Linear(2, 2)], [], FGSM(eps=0.1), ValueError, "targets must hold at least one"),
        (nn.Linear(2, 2), [nn.Linear(2, 2)], FGSM(eps=0.1), TypeError, "single module"),
        ([nn.Linear(2, 2)], 3, FGSM(eps=0.1), TypeError, "targets must be a mapping"),
        ({"a": "model"}, [nn.Linear(2, 2)], FGSM(eps=0.1), TypeError, "surrogate 'a' must be"),
        ([nn.Linear(2, 2)], [nn.Linear(2, 2)], FGSM, TypeError, "attack must be an advkit"),
        (
            [nn.Linear(2, 2)],
            [nn.Linear(2, 2)],
            FGSM(eps=0.1, targeted=True),
            ValueError,
            "untargeted",
        ),
    ],
)
def test_transfer_matrix_rejects_bad_input(
    surrogates: object, targets: object, attack: object, error: type, match: str, loader: Loader
) -> None:
    with pytest.raises(error, match=match):
        transfer_matrix(surrogates, targets, loader, attack, progress=False)  # type: ignore[arg-type]
