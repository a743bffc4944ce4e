"""The exact statistics of randomized smoothing: binomial tests and Clopper-Pearson bounds.

Written in plain float64 arithmetic so that advkit needs no scipy: the regularized incomplete
beta function by its continued fraction (modified Lentz), its inverse by a safeguarded Newton
iteration, and the normal quantile of :class:`statistics.NormalDist` (Wichura's AS 241, exact
to double precision). The tests compare every value with scipy to 1e-9.
"""

from __future__ import annotations

import math
from functools import lru_cache
from statistics import NormalDist

from advkit._checks import check_int, check_real

__all__ = ["binomial_pvalue", "clopper_pearson_lower", "normal_quantile"]

_TINY = 1e-300
_EPS = 1e-16
_MAX_TERMS = 100_000


def _check_counts(successes: int, trials: int) -> None:
    check_int(trials, "trials", minimum=1)
    check_int(successes, "successes", minimum=0)
    if successes > trials:
        raise ValueError(f"successes must be in [0, trials={trials}], got {successes}")


def _continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of :math:`I_x(a, b)` (Numerical Recipes' ``betacf``), converging
    fast for ``x < (a + 1) / (a + b + 2)``."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_TERMS):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                          -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):  # fmt: skip
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            delta = d * c
            h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise RuntimeError(f"the incomplete beta fraction did not converge for a={a}, b={b}, x={x}")


def _log_front(a: float, b: float, x: float) -> float:
    """:math:`\\log(x^a (1 - x)^b / B(a, b))`."""
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    return a * math.log(x) + b * math.log1p(-x) - log_beta


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function :math:`I_x(a, b)`, ``a, b > 0``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(_log_front(a, b, x)) * _continued_fraction(a, b, x) / a
    return 1.0 - math.exp(_log_front(b, a, 1.0 - x)) * _continued_fraction(b, a, 1.0 - x) / b


def _beta_quantile(q: float, a: float, b: float) -> float:
    """The ``q`` quantile of Beta(a, b): the ``x`` with :math:`I_x(a, b) = q`.

    Newton steps on the CDF (its derivative is the density), kept inside a bracket that
    shrinks with every evaluation; a step leaving the bracket is replaced by bisection.
    """
    lo, hi = 0.0, 1.0
    mean = a / (a + b)
    spread = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    x = min(max(mean + spread * NormalDist().inv_cdf(q), 1e-12), 1 - 1e-12)
    for _ in range(200):
        f = _betainc(a, b, x) - q
        if f == 0.0:
            return x
        if f < 0:
            lo = x
        else:
            hi = x
        density = math.exp((a - 1) * math.log(x) + (b - 1) * math.log1p(-x)
                           - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)))  # fmt: skip
        step = f / density if density > 0 else math.inf
        candidate = x - step
        if not lo < candidate < hi:
            candidate = 0.5 * (lo + hi)
        if abs(candidate - x) <= 1e-15 * max(x, 1e-300) or hi - lo <= 1e-16:
            return candidate
        x = candidate
    return x


@lru_cache(maxsize=65536)
def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    r"""One-sided ``(1 - alpha)`` Clopper-Pearson lower confidence bound of a binomial proportion.

    :math:`\underline{p} = B^{-1}(\alpha;\ k,\ n - k + 1)`, the ``alpha`` quantile of
    Beta(k, n - k + 1); 0 for ``k = 0``, and exactly :math:`\alpha^{1/n}` for ``k = n`` (where
    the Beta CDF is :math:`x^n`). It is the lower end of
    ``statsmodels.stats.proportion.proportion_confint(k, n, alpha=2 * alpha, method="beta")``,
    the bound of Cohen et al.'s ``core.py``.

    Args:
        successes: ``k``, in ``[0, n]``.
        trials: ``n >= 1``.
        alpha: The error probability, in ``(0, 1)``.

    Returns:
        The lower bound, in ``[0, 1)``.

    Raises:
        TypeError: If a count is not an int.
        ValueError: If the counts or ``alpha`` are out of range.

    References:
        Clopper and Pearson, "The use of confidence or fiducial limits illustrated in the case
        of the binomial", Biometrika 1934; Cohen, Rosenfeld and Kolter, "Certified Adversarial
        Robustness via Randomized Smoothing", ICML 2019.

    Example:
        >>> round(clopper_pearson_lower(100, 100, 0.001), 6)
        0.933254
    """
    _check_counts(successes, trials)
    alpha = check_real(alpha, "alpha", low=0, high=1, open_low=True, open_high=True)
    if successes == 0:
        return 0.0
    if successes == trials:
        return alpha ** (1.0 / trials)
    return _beta_quantile(alpha, float(successes), float(trials - successes + 1))


def binomial_pvalue(successes: int, trials: int) -> float:
    r"""Two-sided p-value of the binomial test of ``p = 1/2``.

    :math:`\min(1, 2 P(X \le \min(k, n - k)))` for :math:`X \sim \mathrm{Bin}(n, 1/2)`, and 1
    when ``k = n / 2``: the value of ``scipy.stats.binomtest(k, n, 0.5).pvalue`` (and of the
    older ``binom_test`` in Cohen et al.'s ``core.py``), whose two-sided sum over the outcomes
    no more likely than ``k`` is this, by the symmetry of ``p = 1/2``.

    Args:
        successes: ``k``, in ``[0, n]``.
        trials: ``n >= 1``.

    Returns:
        The p-value, in ``(0, 1]``.

    References:
        Cohen, Rosenfeld and Kolter, "Certified Adversarial Robustness via Randomized
        Smoothing", ICML 2019 (PREDICT); Hung and Fithian, "Rank verification for exponential
        families", Annals of Statistics 2019 (why PREDICT's test controls the abstain error).

    Example:
        >>> round(binomial_pvalue(9, 10), 6)
        0.021484
    """
    _check_counts(successes, trials)
    low = min(successes, trials - successes)
    if 2 * low == trials:
        return 1.0
    # P(X <= low) = I_{1/2}(n - low, low + 1)
    return min(1.0, 2.0 * _betainc(float(trials - low), float(low + 1), 0.5))


def normal_quantile(p: float) -> float:
    r""":math:`\Phi^{-1}(p)`, the standard normal quantile, for ``p`` in ``(0, 1)``.

    Raises:
        ValueError: If ``p`` is outside ``(0, 1)``.

    Example:
        >>> round(normal_quantile(0.975), 6)
        1.959964
    """
    p = check_real(p, "p", low=0, high=1, open_low=True, open_high=True)
    return NormalDist().inv_cdf(p)
