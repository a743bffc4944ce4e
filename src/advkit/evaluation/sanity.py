"""Sanity checks that run with every evaluation, so a wrong setup cannot pass unnoticed.

Each check yields a :class:`~advkit.attacks.CheckOutcome` stored in the result; a failed check also raises a
:class:`SanityWarning`. The checks follow the evaluation checklist of Carlini et al. (2019):
no attack may do better with a smaller budget, eps = 0 must change nothing, adversarial
examples must respect the threat model, and the model must be evaluated in eval mode.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd
from torch.nn.modules.instancenorm import _InstanceNorm

from advkit.attacks import Attack, ThreatModel
from advkit.attacks.outcome import CheckOutcome, SanityWarning

if TYPE_CHECKING:
    from advkit.evaluation.distributed import Shard

__all__ = ["SanityWarning", "ThreatModelCheck"]

_SHOWN = 5  # how many offenders a message names before it says "and N more"


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _mode_dependent(module: nn.Module) -> bool:
    """Whether the module computes something else in train mode than in eval mode."""
    if isinstance(module, _InstanceNorm):
        return module.track_running_stats
    return isinstance(module, _BatchNorm | _DropoutNd)


def _inner_attacks(attack: Attack) -> Iterator[Attack]:
    yield attack
    for member in attack.members():
        yield from _inner_attacks(member)


def with_surrogates(model: nn.Module, attack: Attack) -> dict[str, nn.Module]:
    """``model`` and the surrogates of every attack inside ``attack`` (a :class:`Transfer`'s)."""
    others = [other for inner in _inner_attacks(attack) for other in inner.surrogates()]
    return {"model": model} | {f"surrogate{i}": other for i, other in enumerate(others)}


def check_eval_mode(models: dict[str, nn.Module], attacks: Sequence[Attack] = ()) -> CheckOutcome:
    """Check the models as handed in: no BatchNorm, Dropout or tracking InstanceNorm in train mode.

    Evaluation itself always runs the models in eval mode, so the numbers are right either way;
    the check tells the caller that their model was left in train mode (where BatchNorm would
    use batch statistics, the classic cause of a wrong robust accuracy). Attacks that run the
    model in train mode (``model_mode="train"``) are flagged too.

    Args:
        models: The models to inspect, by a name used in the message.
        attacks: Attacks whose ``model_mode`` (and that of their members) must be ``"eval"``.
    """
    offenders = [
        f"{model_name}.{name}" if name else model_name
        for model_name, model in models.items()
        for name, module in model.named_modules()
        if module.training and _mode_dependent(module)
    ]
    train_attacks = [
        repr(inner)
        for attack in attacks
        for inner in _inner_attacks(attack)
        if getattr(inner, "model_mode", "eval") == "train"
    ]
    problems = []
    if offenders:
        problems.append(
            f"handed in train mode, these layers behave differently in eval mode: "
            f"{_listed(offenders)} (the evaluation ran them in eval mode; call model.eval())"
        )
    if train_attacks:
        problems.append(f"attacks run the model in train mode: {_listed(train_attacks)}")
    if problems:
        return CheckOutcome("eval_mode", False, "; ".join(problems))
    return CheckOutcome(
        "eval_mode", True, "no BatchNorm or Dropout layer handed in train mode; attacks use eval"
    )


def check_zero_eps(clean: int, zero_eps: dict[str, int] | None) -> CheckOutcome:
    """Check that every attack with eps = 0 leaves the clean accuracy unchanged.

    Args:
        clean: Number of correctly classified clean samples.
        zero_eps: Robust counts at eps = 0 by a label of the cell, or ``None`` if no cell
            has eps = 0.
    """
    if not zero_eps:
        return CheckOutcome("zero_eps", None, "not applicable: no evaluation at eps = 0")
    wrong = [f"{label}: {count}" for label, count in zero_eps.items() if count != clean]
    if wrong:
        return CheckOutcome(
            "zero_eps",
            False,
            f"at eps = 0 the robust count must equal the clean count {clean}, got "
            f"{_listed(wrong)}: the attack changes inputs it may not, or the model is random",
        )
    return CheckOutcome("zero_eps", True, f"robust count at eps = 0 equals the clean count {clean}")


SIGNIFICANCE = 0.01
"""A rise of robust accuracy fails a monotonicity check only if a sign test rejects chance here."""


def sign_test_p(rises: int, falls: int) -> float:
    """One-sided exact sign test: ``P(X >= rises)`` for ``X ~ Binomial(rises + falls, 1/2)``.

    Args:
        rises: Samples robust in the stronger cell but fooled in the weaker one.
        falls: Samples fooled in the stronger cell but robust in the weaker one.

    References:
        Dixon and Mood, "The Statistical Sign Test", JASA 1946.
    """
    total = rises + falls
    if rises == 0:
        return 1.0
    log_half = total * math.log(0.5)
    terms = [
        math.lgamma(total + 1) - math.lgamma(k + 1) - math.lgamma(total - k + 1) + log_half
        for k in range(rises, total + 1)
    ]
    peak = max(terms)
    return min(1.0, math.exp(peak) * math.fsum(math.exp(t - peak) for t in terms))


@dataclass(frozen=True)
class Neighbours:
    """Per-sample comparison of a weaker cell with the next stronger cell of a grid.

    Attributes:
        label: Where in the grid, e.g. ``"steps=3: eps=0.00784 -> eps=0.0157"``.
        rises: Samples robust in the stronger cell but fooled in the weaker one.
        falls: Samples fooled in the stronger cell but robust in the weaker one.
    """

    label: str
    rises: int
    falls: int


def check_monotone(name: str, axis: str, pairs: Sequence[Neighbours]) -> CheckOutcome:
    """Check that robust accuracy does not rise as ``axis`` (eps or steps) grows.

    Attacks with different budgets follow different paths, so a sample fooled by the weaker
    attack may survive the stronger one; a few such samples are noise. The check fails where
    robust accuracy rises *and* a one-sided sign test on the per-sample changes rejects
    chance at level :data:`SIGNIFICANCE`: the stronger attack is then really weaker, the
    signature of gradient masking or a broken attack.

    Args:
        name: Name of the check.
        axis: What grows from the weaker to the stronger cell, for the message.
        pairs: Every pair of neighbouring cells along ``axis``.

    References:
        Carlini et al., "On Evaluating Adversarial Robustness", arXiv:1902.06705, 2019.
    """
    if not pairs:
        return CheckOutcome(name, None, f"not applicable: a single {axis} value")
    rising = [pair for pair in pairs if pair.rises > pair.falls]
    described = [
        f"{p.label}: +{p.rises - p.falls} samples (p={sign_test_p(p.rises, p.falls):.2g})"
        for p in rising
    ]
    significant = [
        text
        for pair, text in zip(rising, described, strict=True)
        if sign_test_p(pair.rises, pair.falls) < SIGNIFICANCE
    ]
    if significant:
        return CheckOutcome(
            name,
            False,
            f"robust accuracy rises with {axis}: {_listed(significant)}. A stronger attack "
            "should not do worse; this hints at gradient masking or a broken attack",
        )
    if rising:
        return CheckOutcome(
            name,
            True,
            f"robust accuracy never rises significantly with {axis} (within noise: "
            f"{_listed(described)})",
        )
    return CheckOutcome(name, True, f"robust accuracy never rises with {axis}")


def _cells(rises: Tensor, falls: Tensor) -> Iterator[tuple[tuple[int, int], int, int]]:
    """``((i, j), rises[i, j], falls[i, j])`` for every cell, row by row."""
    for i, j in itertools.product(range(rises.shape[0]), range(rises.shape[1])):
        yield (i, j), int(rises[i, j]), int(falls[i, j])


class MonotoneTally:
    """Counts, batch by batch, the per-sample changes between neighbouring cells of a grid.

    Args:
        eps_values: The grid's eps values, increasing.
        steps_values: The grid's steps values, increasing (``(None,)`` for a single row).
    """

    def __init__(self, eps_values: Sequence[float], steps_values: Sequence[int | None]) -> None:
        self.eps_values, self.steps_values = tuple(eps_values), tuple(steps_values)
        rows, cols = len(steps_values), len(eps_values)
        self.eps_rises = torch.zeros(rows, cols - 1, dtype=torch.long)
        self.eps_falls = torch.zeros(rows, cols - 1, dtype=torch.long)
        self.steps_rises = torch.zeros(rows - 1, cols, dtype=torch.long)
        self.steps_falls = torch.zeros(rows - 1, cols, dtype=torch.long)

    def update(self, robust: Tensor) -> None:
        """Add one batch: ``robust[i, j, k]`` is sample ``k`` robust at steps ``i``, eps ``j``."""
        robust = robust.cpu()
        weak, strong = robust[:, :-1], robust[:, 1:]
        self.eps_rises += (strong & ~weak).sum(dim=-1)
        self.eps_falls += (weak & ~strong).sum(dim=-1)
        weak, strong = robust[:-1], robust[1:]
        self.steps_rises += (strong & ~weak).sum(dim=-1)
        self.steps_falls += (weak & ~strong).sum(dim=-1)

    def all_reduce(self, shard: Shard) -> None:
        """Replace this process's tallies by the sums over every process of ``shard``."""
        names = ("eps_rises", "eps_falls", "steps_rises", "steps_falls")
        for name, total in shard.sum({name: getattr(self, name) for name in names}).items():
            setattr(self, name, total)

    def results(self) -> list[CheckOutcome]:
        """The ``monotone_eps`` and ``monotone_steps`` checks over everything seen."""
        eps, steps = self.eps_values, self.steps_values
        along_eps = [
            Neighbours(f"steps={steps[i]}: eps={eps[j]:.3g} -> {eps[j + 1]:.3g}", rises, falls)
            for (i, j), rises, falls in _cells(self.eps_rises, self.eps_falls)
        ]
        along_steps = [
            Neighbours(f"eps={eps[j]:.3g}: steps={steps[i]} -> {steps[i + 1]}", rises, falls)
            for (i, j), rises, falls in _cells(self.steps_rises, self.steps_falls)
        ]
        return [
            check_monotone("monotone_eps", "eps", along_eps),
            check_monotone("monotone_steps", "steps", along_steps),
        ]


class ThreatModelCheck:
    """Accumulates, batch by batch, whether adversarial examples stay in the box and the ball.

    The ball is measured in the attack's own norm (:meth:`~advkit.attacks.ThreatModel.distance`
    of its threat model: L-inf for an L-inf attack, L2 for an L2 one). A tolerance of a few
    float ulps (relative to the bounds and to eps) allows for the rounding of the projection.

    Args:
        attack: The attack whose examples are checked: its ``bounds`` and ``threat_model``.

    Raises:
        TypeError: If ``attack`` is not an :class:`~advkit.attacks.Attack`.

    Example:
        >>> import torch
        >>> from advkit.attacks import PGD
        >>> from advkit.evaluation import ThreatModelCheck
        >>> check = ThreatModelCheck(PGD(eps=0.5, norm="L2"))
        >>> x = torch.zeros(2, 4)
        >>> check.update(x, torch.full((2, 4), 0.4), 0.5)  # 0.8 away in L2
        >>> [(c.name, c.passed) for c in check.results()]
        [('in_bounds', True), ('in_ball', False)]
    """

    def __init__(self, attack: Attack) -> None:
        if not isinstance(attack, Attack):
            raise TypeError(
                f"ThreatModelCheck needs the attack whose examples it checks, got "
                f"{type(attack).__name__}"
            )
        self.bounds = attack.bounds
        self.threat: type[ThreatModel] = attack.threat_model
        self.checked = self.outside_bounds = self.outside_ball = 0
        self.worst_excess = 0.0

    def update(self, inputs: Tensor, adversarial: Tensor, eps: float | Tensor) -> None:
        """Check one batch of adversarial examples against their clean ``inputs`` and ``eps``."""
        ulp = 8 * torch.finfo(adversarial.dtype).eps
        tol = ulp * max(1.0, *(abs(b) for b in self.bounds))
        lo, hi = self.bounds
        flat_adv = adversarial.detach().double().flatten(1)
        distance = self.threat.distance(flat_adv, inputs.detach().double().flatten(1))
        radius = torch.as_tensor(eps, dtype=torch.float64, device=distance.device)
        excess = distance - radius
        out_of_box = (flat_adv < lo - tol).any(dim=1) | (flat_adv > hi + tol).any(dim=1)
        self.checked += adversarial.shape[0]
        self.outside_bounds += int(out_of_box.sum())
        self.outside_ball += int((excess > tol + ulp * radius).sum())
        self.worst_excess = max(self.worst_excess, float(excess.max()))

    def all_reduce(self, shard: Shard) -> None:
        """Replace this process's tallies by those over every process of ``shard``."""
        names = ("checked", "outside_bounds", "outside_ball")
        for name, total in shard.sum({name: getattr(self, name) for name in names}).items():
            setattr(self, name, total)
        self.worst_excess = shard.max({"worst_excess": self.worst_excess})["worst_excess"]

    def results(self) -> list[CheckOutcome]:
        """The ``in_bounds`` and ``in_ball`` checks over everything seen."""
        if self.checked == 0:
            none = "not applicable: no sample was attacked"
            return [CheckOutcome("in_bounds", None, none), CheckOutcome("in_ball", None, none)]
        n, norm = self.checked, self.threat.norm
        bounds = f"all {n} adversarial examples in {self.bounds}"
        if self.outside_bounds:
            bounds = (
                f"{self.outside_bounds} of {n} adversarial examples leave the bounds {self.bounds}"
            )
        ball = f"all {n} adversarial examples in the {norm} eps-ball"
        if self.outside_ball:
            ball = (
                f"{self.outside_ball} of {n} adversarial examples leave the eps-ball, by up to "
                f"{self.worst_excess:.3g} in {norm} norm: the attack breaks its threat model"
            )
        return [
            CheckOutcome("in_bounds", self.outside_bounds == 0, bounds),
            CheckOutcome("in_ball", self.outside_ball == 0, ball),
        ]
