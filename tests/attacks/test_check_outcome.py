"""CheckOutcome: the one record behind the gradient-masking and the sanity checks."""

from __future__ import annotations

import warnings

import pytest

from advkit.attacks import CheckOutcome, GradientMaskingWarning, MaskingCheck, warn_failed
from advkit.evaluation import SanityCheck, SanityWarning

KINDS = [
    (MaskingCheck, GradientMaskingWarning, "gradient-masking check"),
    (SanityCheck, SanityWarning, "sanity check"),
]


@pytest.mark.parametrize(("kind", "warning", "label"), KINDS)
@pytest.mark.parametrize("passed", [True, False, None])
def test_each_kind_round_trips_as_itself(kind, warning, label, passed) -> None:
    check = kind("name", passed, "what was found")
    assert isinstance(check, CheckOutcome) and kind.warning is warning and kind.label == label
    back = kind.from_dict(check.to_dict())
    assert back == check and type(back) is kind
    assert check.to_dict() == {"name": "name", "passed": passed, "detail": "what was found"}


def test_kinds_with_the_same_fields_are_not_equal() -> None:
    assert MaskingCheck("a", True, "d") != SanityCheck("a", True, "d")


def test_warn_failed_raises_each_failure_with_its_own_warning_and_label() -> None:
    checks = [
        MaskingCheck("zero_gradients", False, "8 of 8 samples"),
        SanityCheck("in_ball", True, "all in the ball"),
        SanityCheck("zero_eps", None, "not applicable"),
        SanityCheck("in_bounds", False, "2 outside [0, 1]"),
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_failed(checks, stacklevel=2)
    assert [(w.category, str(w.message)) for w in caught] == [
        (GradientMaskingWarning, "gradient-masking check 'zero_gradients' failed: 8 of 8 samples"),
        (SanityWarning, "sanity check 'in_bounds' failed: 2 outside [0, 1]"),
    ]
    assert all(w.filename == __file__ for w in caught)  # stacklevel=2: this test's line


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"SanityCheck needs the fields .* missing \['detail'\]"):
        SanityCheck.from_dict({"name": "in_ball", "passed": True})
    with pytest.raises(TypeError, match="checks must be CheckOutcome objects, got dict"):
        warn_failed([{"name": "in_ball", "passed": False, "detail": "d"}])
