"""Certified robustness by randomized smoothing.

:class:`Smooth` is the smoothed classifier of Cohen et al.: :meth:`Smooth.predict` and
:meth:`Smooth.certify` answer with a class (or abstain) and a certified L2 radius, with the
exact binomial and Clopper-Pearson statistics of :mod:`advkit.certification.stats`.
:func:`certified_accuracy` turns certificates over a loader into a certified-accuracy curve
with Wilson intervals, beside an empirical upper bound from an L2 attack on the soft smoothed
classifier :class:`SoftSmooth`. The training objectives that make a model certifiable
(Gaussian augmentation, SmoothAdv, consistency regularization) live in
:mod:`advkit.training.objectives`.
"""

from advkit.certification.evaluate import DEFAULT_RADII, CertifiedAccuracy, certified_accuracy
from advkit.certification.smooth import (
    ABSTAIN,
    Certificate,
    Smooth,
    SmoothPrediction,
    SoftSmooth,
)
from advkit.certification.stats import binomial_pvalue, clopper_pearson_lower, normal_quantile

__all__ = [
    "ABSTAIN",
    "DEFAULT_RADII",
    "Certificate",
    "CertifiedAccuracy",
    "Smooth",
    "SmoothPrediction",
    "SoftSmooth",
    "binomial_pvalue",
    "certified_accuracy",
    "clopper_pearson_lower",
    "normal_quantile",
]
