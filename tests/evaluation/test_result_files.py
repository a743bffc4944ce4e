"""Result files are read strictly: a contradiction, a coerced type or an impossible value in the
JSON of a RobustAccuracy or a GridResult is a clear error, never a result."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from advkit.attacks import CheckOutcome
from advkit.evaluation import (
    AccuracyEstimate,
    GridResult,
    RobustAccuracy,
    TransferMatrix,
    WorkCount,
)

Edit = Callable[[dict[str, Any]], None]


def robust_result() -> RobustAccuracy:
    return RobustAccuracy(
        attack="AutoAttack(eps=8/255)",
        eps=8 / 255,
        clean=AccuracyEstimate(8, 10),
        robust=AccuracyEstimate(5, 10),
        early_stop=True,
        work=WorkCount(22, 160, 1, 10),
        checks=(
            CheckOutcome("in_ball", True, "fine"),
            CheckOutcome("zero_gradients", False, "8 of 8", "gradient_masking"),
        ),
        members=(("apgd-ce", AccuracyEstimate(6, 10)), ("square", AccuracyEstimate(5, 10))),
    )


def grid_result() -> GridResult:
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
        checks=(CheckOutcome("zero_eps", True, "fine"),),
    )


def setter(*path: Any, value: Any) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        for key in path[:-1]:
            data = data[key]
        data[path[-1]] = value

    return edit


def test_valid_files_round_trip() -> None:
    for result in (robust_result(), grid_result()):
        assert type(result).from_json(result.to_json()) == result
        assert type(result).from_dict(json.loads(result.to_json())) == result


SHARED: list[tuple[str, Edit, type[Exception], str]] = [
    ("robust above clean", setter("clean", "correct", value=4), ValueError, "exceed clean"),
    ("other totals", setter("clean", "total", value=11), ValueError, "counts 10 samples but"),
    ("correct 7.9", setter("clean", "correct", value=7.9), TypeError, "correct must be an int"),
    ('correct "7"', setter("clean", "correct", value="7"), TypeError, "correct must be an int"),
    ("correct true", setter("clean", "correct", value=True), TypeError, "correct must be an int"),
    ("passed maybe", setter("checks", 0, "passed", value="maybe"), TypeError, "checks.0.: a"),
    ("early_stop false", setter("early_stop", value="false"), TypeError, "early_stop must be"),
    ("negative work", setter("work", "grad_calls", value=-1), ValueError, "grad_calls must be >="),
    ("work 1.5", setter("work", "forward_calls", value=1.5), TypeError, "forward_calls must be"),
    ("no work", lambda d: d["work"].pop("grad_samples"), ValueError, "field 'grad_samples'"),
    ("attack 3", setter("attack", value=3), TypeError, "attack must be a str"),
    ("checks a dict", setter("checks", value={}), TypeError, "checks must be a list"),
]

ROBUST: list[tuple[str, Edit, type[Exception], str]] = [
    ("eps NaN", setter("eps", value=float("nan")), ValueError, "eps must be finite"),
    ("eps negative", setter("eps", value=-0.1), ValueError, "eps must be finite and >= 0"),
    ("eps a string", setter("eps", value="0.03"), TypeError, "eps must be a float"),
    (
        "member above clean",
        setter("members", 0, "robust", "correct", value=9),
        ValueError,
        "must fall from at most clean",
    ),
    (
        "member total",
        setter("members", 1, "robust", "total", value=12),
        ValueError,
        "member 'square' counts 12 samples",
    ),
    (
        "members do not end at robust",
        setter("members", 1, "robust", "correct", value=4),
        ValueError,
        r"to the robust count \(5\), got \[6, 4\]",
    ),
    ("no robust", lambda d: d.pop("robust"), ValueError, "needs the field 'robust'"),
]

GRID: list[tuple[str, Edit, type[Exception], str]] = [
    ("cell above clean", setter("robust", 1, 1, "correct", value=9), ValueError, r"robust\[1\]"),
    ("cell total", setter("robust", 0, 1, "total", value=9), ValueError, "counts 9 samples"),
    ("eps NaN", setter("eps", 1, value=float("nan")), ValueError, "eps values must be finite"),
    ("eps negative", setter("eps", 0, value=-0.5), ValueError, "must be finite and >= 0"),
    ("duplicate eps", setter("eps", value=[0.1, 0.1]), ValueError, "eps values must be distinct"),
    ("eps decreasing", setter("eps", value=[0.1, 0.0]), ValueError, "eps must be increasing"),
    ("steps -3", setter("steps", 0, value=-3), ValueError, "steps values must be >= 1"),
    ("steps 2.0", setter("steps", 0, value=2.0), TypeError, "steps values must be an int"),
    ("max_batch 0", setter("max_batch", value=0), ValueError, "max_batch must be >= 1"),
    ('max_batch "8"', setter("max_batch", value="8"), TypeError, "max_batch must be an int"),
    ("ragged row", lambda d: d["robust"][1].pop(), ValueError, "got 1 cells in row 1"),
    ("missing row", lambda d: d["robust"].pop(), ValueError, "got 1 rows"),
    ("row a dict", setter("robust", 0, value={}), TypeError, r"robust\[0\] must be a list"),
]


def _case_ids(cases: list[tuple[str, Edit, type[Exception], str]]) -> list[str]:
    return [case[0] for case in cases]


@pytest.mark.parametrize(
    ("name", "edit", "error", "match"), SHARED + ROBUST, ids=_case_ids(SHARED + ROBUST)
)
def test_robust_accuracy_file_refuses(name: str, edit: Edit, error: type, match: str) -> None:
    data = copy.deepcopy(robust_result().to_dict())
    edit(data)
    with pytest.raises(error, match=match):
        RobustAccuracy.from_dict(data)


@pytest.mark.parametrize(
    ("name", "edit", "error", "match"), SHARED + GRID, ids=_case_ids(SHARED + GRID)
)
def test_grid_file_refuses(name: str, edit: Edit, error: type, match: str) -> None:
    data = copy.deepcopy(grid_result().to_dict())
    if name == "robust above clean":  # a grid's cells: the first row at eps 0 equals clean
        edit = setter("robust", 0, 0, "correct", value=9)
    edit(data)
    with pytest.raises(error, match=match):
        GridResult.from_dict(data)


def test_the_constructors_refuse_contradictions_too() -> None:
    with pytest.raises(ValueError, match="robust accuracy cannot exceed clean accuracy"):
        RobustAccuracy(
            "PGD()", 0.1, AccuracyEstimate(3, 10), AccuracyEstimate(4, 10), True, WorkCount(), ()
        )
    with pytest.raises(ValueError, match="work grad_calls must be >= 0"):
        WorkCount(grad_calls=-1)


def transfer_result() -> TransferMatrix:
    return TransferMatrix(
        attack="PGD()",
        surrogates=("a", "b"),
        targets=("a", "b"),
        clean=(AccuracyEstimate(8, 10), AccuracyEstimate(6, 10)),
        robust=(
            (AccuracyEstimate(2, 10), AccuracyEstimate(5, 10)),
            (AccuracyEstimate(7, 10), AccuracyEstimate(1, 10)),
        ),
        work=WorkCount(4, 40, 6, 60),
        checks=(CheckOutcome("in_ball", True, "fine"),),
    )


TRANSFER: list[tuple[str, Edit, type[Exception], str]] = [
    ("cell above clean", setter("robust", 0, 1, "correct", value=7), ValueError, "exceed"),
    ("cell total", setter("robust", 1, 0, "total", value=11), ValueError, "counts 11 samples"),
    ("clean total", setter("clean", 1, "total", value=12), ValueError, r"clean\[1\] counts 12"),
    ("correct 7.9", setter("clean", 0, "correct", value=7.9), TypeError, "must be an int"),
    ("ragged row", lambda d: d["robust"][1].pop(), ValueError, "2 rows .surrogates. of 2"),
    ("one clean", lambda d: d["clean"].pop(), ValueError, "one accuracy per target"),
    ("repeated name", setter("targets", 1, value="a"), ValueError, "targets must be distinct"),
    ("name 3", setter("surrogates", 0, value=3), TypeError, "surrogates must be a non-empty"),
    ("passed maybe", setter("checks", 0, "passed", value="maybe"), TypeError, "True, False"),
]


def test_transfer_matrix_round_trips() -> None:
    matrix = transfer_result()
    assert TransferMatrix.from_json(matrix.to_json()) == matrix


@pytest.mark.parametrize(("name", "edit", "error", "match"), TRANSFER, ids=_case_ids(TRANSFER))
def test_transfer_matrix_file_refuses(name: str, edit: Edit, error: type, match: str) -> None:
    data = copy.deepcopy(transfer_result().to_dict())
    edit(data)
    with pytest.raises(error, match=match):
        TransferMatrix.from_dict(data)
