"""Every evaluation result counts the rows that went through the model exactly (issue 27,
item 1): ``result.work.rows`` equals a counting wrapper around the model, a black-box
attack's queries and AutoAttack's checks included; older result files read with ``rows=None``."""

from __future__ import annotations

import json

import pytest
from evaluation_cases import make_loader
from torch import Tensor, nn

from advkit.attacks import APGD, IFGSM, AutoAttack, Square
from advkit.evaluation import RobustAccuracy, evaluate_grid, robust_accuracy, transfer_matrix
from conftest import RowCounter, blob_images, tiny_model, train_tiny


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    images, labels = blob_images(160)
    return train_tiny(tiny_model(), images, labels, epochs=30).eval()


def _loader() -> list[tuple[Tensor, Tensor]]:
    images, labels = blob_images(40, seed=5)
    return make_loader(images, labels, 16)


@pytest.mark.filterwarnings("ignore::advkit.attacks.GradientMaskingWarning")
def test_robust_accuracy_counts_every_row_autoattack_and_square_included(
    trained: nn.Module,
) -> None:
    model = RowCounter(trained)
    attack = AutoAttack(
        eps=8 / 255,
        version="custom",
        attacks=[APGD(eps=8 / 255, steps=3), Square(eps=8 / 255, n_queries=20)],
    )
    result = robust_accuracy(model, _loader(), attack, progress=False)
    assert result.work.rows == model.counted()
    assert result.work.rows.forward_rows > 0 and result.work.rows.backward_rows > 0
    # The declared gradient passes are the attacks' share of the counted ones.
    assert result.work.grad_samples <= result.work.rows.gradient_rows


@pytest.mark.parametrize("early_stop", [True, False])
def test_the_grid_counts_every_row_with_shared_walks_and_riding_cells(
    trained: nn.Module, early_stop: bool
) -> None:
    model = RowCounter(trained)
    grid = evaluate_grid(
        model, _loader(), IFGSM, eps=[2 / 255, 4 / 255, 8 / 255], steps=[1, 3, 5],
        early_stop=early_stop, progress=False,
    )  # fmt: skip
    assert grid.work.rows == model.counted()


def test_the_transfer_matrix_counts_every_row(trained: nn.Module) -> None:
    other = train_tiny(tiny_model(seed=1), *blob_images(160), epochs=30).eval()
    first, second = RowCounter(trained), RowCounter(other)
    models = {"a": first, "b": second}
    matrix = transfer_matrix(models, models, _loader(), IFGSM(eps=8 / 255, steps=2), progress=False)
    assert matrix.work.rows == first.counted() + second.counted()


def test_a_result_file_without_rows_reads_as_not_counted_and_bad_rows_are_refused(
    trained: nn.Module,
) -> None:
    result = robust_accuracy(trained, _loader(), IFGSM(eps=4 / 255, steps=2), progress=False)
    assert RobustAccuracy.from_json(result.to_json()) == result
    data = json.loads(result.to_json())
    del data["work"]["rows"]  # a file written before advkit counted rows
    assert RobustAccuracy.from_dict(data).work.rows is None
    data["work"]["rows"] = {"forward_rows": -1, "gradient_rows": 0, "backward_rows": 0}
    with pytest.raises(ValueError, match="work rows forward_rows must be >= 0"):
        RobustAccuracy.from_dict(data)
    data["work"]["rows"] = [1, 2, 3]
    with pytest.raises(TypeError, match="serialized WorkCount rows must be a dict"):
        RobustAccuracy.from_dict(data)
