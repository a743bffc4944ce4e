"""Gradient-masking checks: signs that a robustness number measures the attack, not the model.

A defense that breaks the gradients (non-differentiable preprocessing, saturated softmax
outputs, randomness) makes gradient attacks fail without making the model robust. These checks
look for the symptoms listed by Carlini et al. (2019) and checked by AutoAttack's
``checks.py``; :class:`~advkit.attacks.AutoAttack` gathers them with every run, and
:func:`check_gradient_masking` runs the model-side ones on any batch.

Each check is a :class:`CheckOutcome` whose failure is also raised as a
:class:`GradientMaskingWarning` with a sentence that says what it suggests. The evidence behind
them (:class:`MaskingEvidence`) is a set of counts, so the evidence of many batches adds up.

References:
    Carlini, Athalye, Papernot, Brendel, Rauber, Tsipras, Goodfellow, Madry and Kurakin, "On
    Evaluating Adversarial Robustness", arXiv:1902.06705, 2019. Croce and Hein, "Reliable
    Evaluation of Adversarial Robustness with an Ensemble of Diverse Parameter-free Attacks",
    ICML 2020 (``autoattack/checks.py`` of their code).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advkit._checks import (
    check_batch,
    check_logits,
    check_model,
    check_run_dtypes,
    probability_rows,
)
from advkit._checks import warn as warn_at_caller
from advkit._guard import model_state
from advkit.attacks.outcome import CheckOutcome, GradientMaskingWarning, warn_failed

__all__ = [
    "GradientMaskingWarning",
    "MaskingEvidence",
    "check_gradient_masking",
    "inspect_model",
    "masking_check",
]

RANDOMIZED_TOL = 1e-4
"""Two forward passes differ when their L2-normalized outputs are this far apart (reference)."""
ZERO_GRADIENT_SHARE = 0.1
"""The zero-gradient check fails when more than this share of the samples has a zero gradient."""
BLACK_BOX_SHARE = 0.002
"""The black-box check fails when a black-box member fools more than this share (reference)."""
LARGE_EPS_SHARE = 0.01
"""The large-eps check fails when more than this share of the samples survives a huge radius."""


def masking_check(name: str, passed: bool | None, detail: str) -> CheckOutcome:
    """A gradient-masking :class:`~advkit.attacks.CheckOutcome` (its failure raises
    :class:`~advkit.attacks.GradientMaskingWarning`)."""
    return CheckOutcome(name, passed, detail, kind="gradient_masking")


@dataclass(frozen=True)
class MaskingEvidence:
    """Counts behind the gradient-masking checks; the evidence of two batches adds with ``+``.

    Attributes:
        rows: Output rows inspected.
        probability_rows: Rows that are a probability distribution (>= 0, summing to 1).
        gradients: Samples whose input gradient (of the cross-entropy) was taken.
        zero_gradients: Samples whose input gradient is zero everywhere, or that have none at
            all because the output does not depend differentiably on the input.
        nonfinite_gradients: Samples with a NaN or infinite gradient entry.
        repeated: Samples run through the model twice.
        randomized: Samples whose two outputs differ.
        attacked: Samples the ensemble attacked.
        black_box_fooled: Samples a black-box member (Square) fooled after the white-box
            members before it had failed.
        large_eps: The radius of the large-eps check (the largest seen), or ``None``.
        large_eps_attacked: Samples robust at ``eps`` that were attacked at ``large_eps``.
        large_eps_robust: Of those, the samples that survived.
        expects_randomness: Whether the evaluation was made for a randomized model (EOT).
    """

    rows: int = 0
    probability_rows: int = 0
    gradients: int = 0
    zero_gradients: int = 0
    nonfinite_gradients: int = 0
    repeated: int = 0
    randomized: int = 0
    attacked: int = 0
    black_box_fooled: int = 0
    large_eps: float | None = None
    large_eps_attacked: int = 0
    large_eps_robust: int = 0
    expects_randomness: bool = False

    def __add__(self, other: MaskingEvidence) -> MaskingEvidence:
        counts = {
            f.name: getattr(self, f.name) + getattr(other, f.name)
            for f in fields(self)
            if f.name not in ("large_eps", "expects_randomness")
        }
        radii = [r for r in (self.large_eps, other.large_eps) if r is not None]
        return MaskingEvidence(
            **counts,
            large_eps=max(radii) if radii else None,
            expects_randomness=self.expects_randomness or other.expects_randomness,
        )

    def to_dict(self) -> dict[str, Any]:
        """The counts by name."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MaskingEvidence:
        """Inverse of :meth:`to_dict`."""
        return cls(**{f.name: data[f.name] for f in fields(cls)})

    def checks(self) -> tuple[CheckOutcome, ...]:
        """The five checks this evidence decides (a check without evidence does not apply)."""
        return (
            self._probabilities(),
            self._gradients(),
            self._randomized(),
            self._black_box(),
            self._large_eps(),
        )

    def _probabilities(self) -> CheckOutcome:
        name = "logits"
        if self.rows == 0:
            return masking_check(name, None, "not applicable: no output inspected")
        if self.probability_rows == self.rows:
            return masking_check(
                name,
                False,
                f"all {self.rows} output rows are >= 0 and sum to 1: the model seems to return "
                "probabilities, not logits. The softmax saturates and hides the gradient "
                "(cross-entropy on probabilities is a masked loss); return the logits",
            )
        return masking_check(name, True, f"the outputs are not probabilities ({self.rows} rows)")

    def _gradients(self) -> CheckOutcome:
        name = "zero_gradients"
        if self.gradients == 0:
            return masking_check(name, None, "not applicable: no gradient taken")
        zero, bad, total = self.zero_gradients, self.nonfinite_gradients, self.gradients
        if bad > 0 or zero > ZERO_GRADIENT_SHARE * total:
            return masking_check(
                name,
                False,
                f"{zero} of {total} samples have a zero input gradient and {bad} a non-finite "
                "one: gradient attacks cannot move them, which suggests a non-differentiable "
                "or saturated defense (gradient masking); trust the black-box members, or "
                "attack a differentiable approximation (BPDA)",
            )
        return masking_check(
            name, True, f"{zero} of {total} samples have a zero input gradient, none non-finite"
        )

    def _randomized(self) -> CheckOutcome:
        name = "randomized"
        if self.repeated == 0:
            return masking_check(name, None, "not applicable: no output repeated")
        if self.randomized == 0:
            return masking_check(
                name, True, f"two forward passes agree on all {self.repeated} samples"
            )
        if self.expects_randomness:
            return masking_check(
                name,
                None,
                f"two forward passes differ on {self.randomized} of {self.repeated} samples, "
                "as expected: the evaluation averages gradients over the randomness (EOT)",
            )
        return masking_check(
            name,
            False,
            f"two forward passes differ on {self.randomized} of {self.repeated} samples: the "
            "model is randomized, so single gradients are noisy and the robust accuracy is "
            "overstated; use AutoAttack(version='rand'), which averages gradients (EOT)",
        )

    def _black_box(self) -> CheckOutcome:
        name = "black_box"
        if self.attacked == 0:
            return masking_check(name, None, "not applicable: no sample attacked")
        fooled, total = self.black_box_fooled, self.attacked
        if fooled > BLACK_BOX_SHARE * total:
            return masking_check(
                name,
                False,
                f"the black-box Square attack fooled {fooled} of {total} samples on which the "
                "white-box members had failed: their gradients mislead them, which suggests "
                "gradient masking; run Square with more queries and restarts, or an adaptive "
                "attack",
            )
        return masking_check(
            name,
            True,
            f"black-box members fooled {fooled} of {total} samples the white-box ones missed",
        )

    def _large_eps(self) -> CheckOutcome:
        name = "large_eps"
        if self.large_eps is None:
            return masking_check(name, None, "not applicable: not run")
        where = f"at eps={self.large_eps:.3g}"
        if self.large_eps_attacked == 0:
            return masking_check(name, True, f"every sample was fooled already at eps, so {where}")
        robust, total = self.large_eps_robust, max(self.attacked, self.large_eps_attacked)
        if robust > LARGE_EPS_SHARE * total:
            return masking_check(
                name,
                False,
                f"{robust} of {total} samples stay robust {where}, a radius that can turn any "
                "input into another class's: the attack does not work at all on them, which "
                "suggests gradient masking or a broken evaluation",
            )
        return masking_check(name, True, f"{robust} of {total} samples stay robust {where}")


def inspect_model(
    model: nn.Module, inputs: Tensor, labels: Tensor
) -> tuple[MaskingEvidence, Tensor, bool]:
    """The model-side evidence on one batch: two forward passes and one input gradient.

    The model is run as it is (the caller chooses its mode and freezes its parameters). The
    gradient is that of the summed cross-entropy with respect to the inputs only.

    Returns:
        The evidence, the (detached) logits of the first pass, and whether the output carries
        any gradient at all.
    """
    x = inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        check_logits(logits, inputs.shape[0], labels)
        grad: Tensor | None = None  # none at all without a graph from the inputs
        if logits.requires_grad:
            loss = F.cross_entropy(logits, labels, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    with torch.no_grad():
        again = model(inputs.detach())
        first = logits.detach()
        batch = inputs.shape[0]
        zero, nonfinite = batch, 0  # no gradient at all: zero for every sample
        if grad is not None:
            flat = grad.reshape(batch, -1)
            zero = int(((flat == 0).all(dim=1)).sum())
            nonfinite = int((~torch.isfinite(flat).all(dim=1)).sum())
        is_probability = probability_rows(first)
        unit = first / (torch.linalg.vector_norm(first, dim=1, keepdim=True) + 1e-10)
        unit_again = again / (torch.linalg.vector_norm(again, dim=1, keepdim=True) + 1e-10)
        differs = torch.linalg.vector_norm(unit - unit_again, dim=1) > RANDOMIZED_TOL
    evidence = MaskingEvidence(
        rows=batch,
        probability_rows=int(is_probability.sum()),
        gradients=batch,
        zero_gradients=zero,
        nonfinite_gradients=nonfinite,
        repeated=batch,
        randomized=int(differs.sum()),
    )
    return evidence, first, grad is not None


def check_gradient_masking(
    model: nn.Module, inputs: Tensor, labels: Tensor, *, warn: bool = True
) -> tuple[CheckOutcome, ...]:
    """Run the model-side gradient-masking checks on one batch: logits, gradients, randomness.

    The model runs in eval mode with frozen parameters and gets every flag back; nothing is
    written to its ``.grad`` fields. The checks that need an attack (black-box success, the
    large-eps sweep) are reported as not applicable; :class:`~advkit.attacks.AutoAttack` runs
    them all.

    Args:
        model: A classifier returning ``[N, C]`` logits.
        inputs: A batch ``[N, ...]``.
        labels: True labels ``[N]``.
        warn: Raise a :class:`GradientMaskingWarning` for every failed check.

    Returns:
        The ``logits``, ``zero_gradients``, ``randomized``, ``black_box`` and ``large_eps``
        checks.

    Raises:
        TypeError: If the arguments are not a module and tensors, the inputs are not floating
            point or not of the model's dtype, or the labels are not integers.
        ValueError: If the batch is empty or the labels' shape does not match it, or the model
            does not return ``[N, C]`` logits for the labels.

    Example:
        >>> import torch
        >>> from advkit.attacks import check_gradient_masking
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
        >>> x, y = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])
        >>> [c.passed for c in check_gradient_masking(model, x, y)]
        [True, True, True, None, None]
    """
    check_model(model)
    if not isinstance(inputs, Tensor) or not isinstance(labels, Tensor):
        raise TypeError(
            f"inputs and labels must be tensors, got {type(inputs).__name__} and "
            f"{type(labels).__name__}"
        )
    check_batch(inputs, labels, (-math.inf, math.inf), values=False)
    check_run_dtypes(model, inputs, {})
    with model_state(model, freeze=True):
        evidence = inspect_model(model, inputs, labels.long())[0]
    checks = evidence.checks()
    if warn:
        warn_failed(checks)
    return checks


_PROBABILITIES_REPORTED: ContextVar[bool] = ContextVar("advkit_probabilities", default=False)


@contextmanager
def probabilities_reported() -> Iterator[None]:
    """Inside this block :func:`warn_probabilities` is silent: the caller (AutoAttack, whose
    ``logits`` check covers it) reports a model that returns probabilities itself."""
    token = _PROBABILITIES_REPORTED.set(True)
    try:
        yield
    finally:
        _PROBABILITIES_REPORTED.reset(token)


def warn_probabilities(logits: Tensor, *, known: bool | None = None) -> None:
    """Warn when every row of a model's outputs on a batch is a probability distribution.

    The ``logits`` check of :class:`MaskingEvidence`, raised as a
    :class:`GradientMaskingWarning` at the user's line: every attack calls it on the model's
    outputs at a batch's clean inputs (the gradient attacks' walk at its first point), so
    :func:`~advkit.evaluation.robust_accuracy` and the grid inherit it.

    Args:
        logits: The model's outputs ``[N, C]`` on a batch.
        known: Whether all rows are probabilities, when the caller already read it (the walk
            folds it into its one host read); ``None`` to compute it here.
    """
    if _PROBABILITIES_REPORTED.get():
        return
    rows = logits.shape[0]
    if known is None:
        known = bool(probability_rows(logits).all())
    if not known:
        return
    check = MaskingEvidence(rows=rows, probability_rows=rows)._probabilities()
    warn_at_caller(check.detail, check.warning)
