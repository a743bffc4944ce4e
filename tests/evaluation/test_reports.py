"""Results render as Markdown, survive a JSON round trip, and plot."""

from __future__ import annotations

import json

import pytest
from evaluation_cases import make_loader
from torch import Tensor, nn

from advkit.attacks import IFGSM, CheckOutcome
from advkit.evaluation import (
    AccuracyEstimate,
    GridResult,
    RobustAccuracy,
    TransferMatrix,
    WorkCount,
    evaluate_grid,
    robust_accuracy,
)


def hand_made_grid() -> GridResult:
    return GridResult(
        attack="IFGSM()",
        eps=(0.0, 4 / 255),
        steps=(1, 10),
        clean=AccuracyEstimate(8, 10),
        robust=(
            (AccuracyEstimate(8, 10), AccuracyEstimate(5, 10)),
            (AccuracyEstimate(8, 10), AccuracyEstimate(0, 10)),
        ),
        early_stop=True,
        max_batch=None,
        work=WorkCount(22, 160, 1, 10),
        checks=(CheckOutcome("zero_eps", True, "fine"), CheckOutcome("in_ball", False, "broken")),
    )


def test_grid_markdown_is_the_expected_table() -> None:
    assert hand_made_grid().to_markdown() == (
        "Robust accuracy (%) under IFGSM(); clean accuracy 80.0 [49.0, 94.3] (n=10).\n"
        "\n"
        "| steps \\ eps | 0/255 | 4/255 |\n"
        "| :-- | --: | --: |\n"
        "| 1 | 80.0 [49.0, 94.3] | 50.0 [23.7, 76.3] |\n"
        "| 10 | 80.0 [49.0, 94.3] | 0.0 [0.0, 27.8] |\n"
        "\n"
        "Sanity checks:\n"
        "\n"
        "- zero_eps: pass (fine)\n"
        "- in_ball: **FAIL** (broken)\n"
    )
    plain = hand_made_grid().to_markdown(ci=False, eps_unit=None)
    assert "| steps \\ eps | 0 | 0.0156863 |" in plain
    assert "| 10 | 80.0 | 0.0 |" in plain


def test_grid_json_round_trip_is_exact() -> None:
    grid = hand_made_grid()
    text = grid.to_json()
    assert GridResult.from_json(text) == grid
    data = json.loads(text)
    assert data["kind"] == "advkit.GridResult"
    assert data["robust"][0][1] == {
        "correct": 5,
        "total": 10,
        "confidence": 0.95,
        "value": 0.5,
        "low": pytest.approx(0.2366, abs=1e-4),
        "high": pytest.approx(0.7634, abs=1e-4),
    }
    assert data["work"] == {
        "grad_calls": 22,
        "grad_samples": 160,
        "forward_calls": 1,
        "forward_samples": 10,
        "rows": {"forward_rows": 0, "gradient_rows": 0, "backward_rows": 0},
    }


def test_a_computed_grid_and_robust_accuracy_round_trip(
    trained_model_and_data: tuple[nn.Module, Tensor, Tensor],
) -> None:
    model, images, labels = trained_model_and_data
    loader = make_loader(images[:48], labels[:48], 48)
    grid = evaluate_grid(model, loader, IFGSM, eps=[0, 0.02], steps=[1, 2], progress=False)
    assert GridResult.from_dict(json.loads(json.dumps(grid.to_dict()))) == grid
    eps_only = evaluate_grid(model, loader, IFGSM(eps=0.1, steps=2), eps=[0.02], progress=False)
    assert eps_only.steps == (None,)
    assert GridResult.from_json(eps_only.to_json()) == eps_only
    single = robust_accuracy(model, loader, IFGSM(eps=0.02, steps=2), progress=False)
    assert RobustAccuracy.from_json(single.to_json()) == single
    assert single.to_markdown().startswith(
        "| attack | clean acc. (%) | robust acc. (%) |\n| :-- | --: | --: |\n"
        f"| IFGSM(eps=0.02, steps=2) | {single.clean.format()} | {single.robust.format()} |"
    )
    assert single._repr_markdown_() == single.to_markdown()


@pytest.mark.parametrize("cls", [GridResult, RobustAccuracy, TransferMatrix])
def test_from_dict_rejects_another_kind(cls: type) -> None:
    with pytest.raises(ValueError, match=f"expected a serialized advkit.{cls.__name__}"):
        cls.from_dict({"kind": "advkit.Something"})
    with pytest.raises(TypeError, match="expected a dict"):
        cls.from_dict([1, 2])


def test_grid_plot_draws_one_curve_per_steps_value() -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    figure = hand_made_grid().plot()
    assert isinstance(figure, Figure)
    (ax,) = figure.axes
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["1 steps", "10 steps", "clean"]
    xs, ys = ax.get_lines()[1].get_data()
    assert list(xs) == pytest.approx([0.0, 4.0]) and list(ys) == pytest.approx([80.0, 0.0])
    assert ax.get_xlabel() == "eps (x 1/255)"


def test_plot_draws_on_given_axes() -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    figure = Figure()
    ax = figure.add_subplot()
    assert hand_made_grid().plot(ax=ax, eps_unit=None) is figure
    assert ax.get_xlabel() == "eps"


def test_transfer_matrix_heat_map() -> None:
    pytest.importorskip("matplotlib")
    matrix = TransferMatrix(
        attack="FGSM(eps=0.1)",
        surrogates=("a", "b"),
        targets=("c",),
        clean=(AccuracyEstimate(9, 10),),
        robust=((AccuracyEstimate(3, 10),), (AccuracyEstimate(7, 10),)),
        work=WorkCount(),
        checks=(),
    )
    figure = matrix.plot()
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.texts] == ["30.0", "70.0"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    assert ax.images[0].get_array().tolist() == [[30.0], [70.0]]
