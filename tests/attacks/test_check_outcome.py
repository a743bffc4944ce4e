"""CheckOutcome: the one record behind the gradient-masking and the sanity checks."""

from __future__ import annotations

import warnings

import pytest

from advkit.attacks import CheckOutcome, GradientMaskingWarning, warn_failed
from advkit.evaluation import SanityWarning

KINDS = [
    ("gradient_masking", GradientMaskingWarning, "gradient-masking check"),
    ("sanity", SanityWarning, "sanity check"),
]


@pytest.mark.parametrize(("kind", "warning", "label"), KINDS)
@pytest.mark.parametrize("passed", [True, False, None])
def test_each_kind_round_trips_as_itself(kind, warning, label, passed) -> None:
    check = CheckOutcome("name", passed, "what was found", kind)
    assert check.warning is warning and check.label == label
    back = CheckOutcome.from_dict(check.to_dict())
    assert back == check and back.kind == kind
    assert check.to_dict() == {
        "name": "name",
        "passed": passed,
        "detail": "what was found",
        "kind": kind,
    }


def test_kinds_with_the_same_fields_are_not_equal() -> None:
    assert CheckOutcome("a", True, "d", "gradient_masking") != CheckOutcome("a", True, "d")


def test_a_dict_without_kind_reads_as_a_sanity_check() -> None:
    old = {"name": "in_ball", "passed": True, "detail": "d"}  # a file from before the kind
    assert CheckOutcome.from_dict(old) == CheckOutcome("in_ball", True, "d", "sanity")


def test_warn_failed_raises_each_failure_with_its_own_warning_and_label() -> None:
    checks = [
        CheckOutcome("zero_gradients", False, "8 of 8 samples", "gradient_masking"),
        CheckOutcome("in_ball", True, "all in the ball"),
        CheckOutcome("zero_eps", None, "not applicable"),
        CheckOutcome("in_bounds", False, "2 outside [0, 1]"),
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_failed(checks, stacklevel=2)
    assert [(w.category, str(w.message)) for w in caught] == [
        (GradientMaskingWarning, "gradient-masking check 'zero_gradients' failed: 8 of 8 samples"),
        (SanityWarning, "sanity check 'in_bounds' failed: 2 outside [0, 1]"),
    ]
    assert all(w.filename == __file__ for w in caught)  # stacklevel=2: this test's line


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        ({"name": "in_ball", "passed": True}, ValueError, r"missing \['detail'\]"),
        ({"name": "a", "passed": "maybe", "detail": "d"}, TypeError, "True, False or None"),
        ({"name": "a", "passed": "false", "detail": "d"}, TypeError, "True, False or None"),
        ({"name": "a", "passed": 1, "detail": "d"}, TypeError, "True, False or None"),
        ({"name": 3, "passed": True, "detail": "d"}, TypeError, "name must be a str"),
        ({"name": "a", "passed": True, "detail": "d", "kind": "x"}, ValueError, "kind must be"),
        (["in_ball", True, "d"], TypeError, "a check must be a dict, got list"),
    ],
)
def test_bad_input_is_a_clear_error(data, error, match) -> None:
    with pytest.raises(error, match=match):
        CheckOutcome.from_dict(data)


def test_warn_failed_refuses_other_objects() -> None:
    with pytest.raises(TypeError, match="checks must be CheckOutcome objects, got dict"):
        warn_failed([{"name": "in_ball", "passed": False, "detail": "d"}])
