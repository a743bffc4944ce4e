"""The smoothing statistics against scipy: Clopper-Pearson, the binomial test, Phi^-1."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from advkit.certification import binomial_pvalue, clopper_pearson_lower, normal_quantile

TOL = 1e-9
TRIALS = [1, 2, 3, 10, 37, 100, 1000, 10_000, 100_000]


@pytest.mark.parametrize("n", TRIALS)
@pytest.mark.parametrize("alpha", [0.001, 0.01, 0.05, 0.5])
def test_clopper_pearson_lower_equals_scipy_beta_ppf(n: int, alpha: float) -> None:
    for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
        expected = 0.0 if k == 0 else stats.beta.ppf(alpha, k, n - k + 1)
        assert clopper_pearson_lower(k, n, alpha) == pytest.approx(expected, abs=TOL), k


@given(n=st.integers(1, 5000), data=st.data(), alpha=st.floats(1e-6, 0.5))
def test_clopper_pearson_lower_equals_scipy_everywhere(
    n: int, data: st.DataObject, alpha: float
) -> None:
    k = data.draw(st.integers(1, n))
    assert clopper_pearson_lower(k, n, alpha) == pytest.approx(
        stats.beta.ppf(alpha, k, n - k + 1), abs=TOL
    )


@given(n=st.integers(1, 5000), data=st.data())
def test_binomial_pvalue_equals_scipy_binomtest(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, n))
    assert binomial_pvalue(k, n) == pytest.approx(stats.binomtest(k, n, 0.5).pvalue, abs=TOL)


@pytest.mark.parametrize("n", TRIALS)
def test_binomial_pvalue_large_counts(n: int) -> None:
    for k in sorted({0, n // 2, (2 * n) // 3, n}):
        assert binomial_pvalue(k, n) == pytest.approx(stats.binomtest(k, n, 0.5).pvalue, abs=TOL)


@pytest.mark.parametrize("p", [1e-12, 1e-6, 0.001, 0.3, 0.5, 0.7, 0.999, 1 - 1e-12])
def test_normal_quantile_equals_scipy(p: float) -> None:
    assert normal_quantile(p) == pytest.approx(stats.norm.ppf(p), abs=TOL)


def test_lower_bound_of_all_successes_is_alpha_to_the_one_over_n_exactly() -> None:
    assert clopper_pearson_lower(1000, 1000, 0.001) == 0.001 ** (1 / 1000)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: clopper_pearson_lower(5, 4, 0.01),
            ValueError,
            r"successes must be in \[0, trials=4\]",
        ),
        (lambda: clopper_pearson_lower(-1, 4, 0.01), ValueError, "successes must be >= 0"),
        (lambda: clopper_pearson_lower(1, 0, 0.01), ValueError, "trials must be >= 1"),
        (lambda: clopper_pearson_lower(1, 4, 0.0), ValueError, r"alpha must be in \(0, 1\)"),
        (lambda: clopper_pearson_lower(1, 4, 1.0), ValueError, r"alpha must be in \(0, 1\)"),
        (lambda: clopper_pearson_lower(1.0, 4, 0.1), TypeError, "successes must be an int"),
        (lambda: binomial_pvalue(3, 2), ValueError, "successes must be in"),
        (lambda: normal_quantile(1.0), ValueError, r"p must be in \(0, 1\)"),
    ],
)
def test_bad_input_is_a_clear_error(call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()
