"""Certified accuracy over a loader: the curve against the radius, with an empirical bound."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from advkit._checks import check_confidence, check_int, check_real
from advkit._plot import accuracy_band, new_axes
from advkit.attacks import PGD, CheckOutcome, warn_failed
from advkit.certification.smooth import ABSTAIN, Smooth, SoftSmooth
from advkit.evaluation import AccuracyEstimate, EvaluationLoop

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["DEFAULT_RADII", "CertifiedAccuracy", "certified_accuracy"]

DEFAULT_RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
"""The radii of the curve unless told otherwise (Cohen et al.'s CIFAR-10 table)."""

_KIND = "CertifiedAccuracy"
_WORK = ("attack_steps", "attack_samples", "forward_rows", "grad_rows")


@dataclass(frozen=True)
class CertifiedAccuracy:
    """Certified accuracy of a smoothed classifier at several L2 radii.

    A sample counts at radius ``r`` when CERTIFY returned its label with a radius ``>= r``
    (Cohen et al.'s ``analyze.py``). ``empirical[i]`` counts the samples whose certified
    prediction is correct and whose attacked input at radius ``radii[i]`` the smoothed
    classifier (PREDICT) does not put in a wrong class: an upper bound that a sample certified
    at the radius can only miss by a Monte Carlo error (probability below ``2 * alpha``);
    ``violations[i]`` counts those contradictions.

    Attributes:
        sigma: The noise level.
        n0: Selection samples per input.
        n: Estimation samples per input (also PREDICT's, for the empirical bound).
        alpha: CERTIFY's error probability.
        radii: The radii, increasing.
        certified: Samples certified correct at each radius.
        abstained: Samples on which CERTIFY abstained.
        total: Samples evaluated.
        confidence: Coverage of the Wilson intervals.
        empirical: Samples not broken by the attack at each radius, or ``None`` without one.
        violations: Samples certified at a radius whose attacked input PREDICT classified
            wrongly, per radius, or ``None`` without an attack.
        attack_steps: Steps of the L2 PGD on the soft smoothed classifier (0: no attack).
        attack_samples: Noise samples of the soft smoothed classifier during the attack.
        forward_rows: Noisy inputs classified (rows through the model, forward only).
        grad_rows: Rows through the model with a backward pass (the attack's).
    """

    sigma: float
    n0: int
    n: int
    alpha: float
    radii: tuple[float, ...]
    certified: tuple[int, ...]
    abstained: int
    total: int
    confidence: float = 0.95
    empirical: tuple[int, ...] | None = None
    violations: tuple[int, ...] | None = None
    attack_steps: int = 0
    attack_samples: int = 0
    forward_rows: int = 0
    grad_rows: int = 0

    def __post_init__(self) -> None:
        check_int(self.total, "total", minimum=1)
        check_int(self.abstained, "abstained", minimum=0)
        if self.abstained > self.total:
            raise ValueError(f"abstained must be <= total={self.total}, got {self.abstained}")
        if not self.radii or any(not math.isfinite(r) or r < 0 for r in self.radii):
            raise ValueError(f"radii must be finite and >= 0, got {list(self.radii)}")
        if any(b <= a for a, b in itertools.pairwise(self.radii)):
            raise ValueError(f"radii must be strictly increasing, got {list(self.radii)}")
        self._check_row("certified", self.certified)
        if self.certified[0] + self.abstained > self.total:
            raise ValueError(
                f"certified[0] + abstained must be <= total={self.total}, got "
                f"{self.certified[0]} + {self.abstained}"
            )
        if any(b > a for a, b in itertools.pairwise(self.certified)):
            raise ValueError(
                f"certified counts must not grow with the radius, got {list(self.certified)}"
            )
        if (self.empirical is None) != (self.violations is None):
            raise ValueError("empirical and violations must both be given or both be None")
        if self.empirical is not None and self.violations is not None:
            self._check_row("empirical", self.empirical)
            self._check_row("violations", self.violations)
            # The samples certified correct at radius 0 (or, without that radius, every sample
            # CERTIFY answered) bound what the attack can leave unbroken.
            if self.radii[0] == 0:
                clean, bound = self.certified[0], "certified[0] (the clean count)"
            else:
                clean = self.total - self.abstained
                bound = f"total - abstained = {clean}"
            for name, row in (("empirical", self.empirical), ("violations", self.violations)):
                if any(v > clean for v in row):
                    raise ValueError(f"{name} must be <= {bound}, got {list(row)}")
            for c, e, v in zip(self.certified, self.empirical, self.violations, strict=True):
                if v > c or c - v > e:
                    raise ValueError(
                        "each radius needs violations <= certified and certified - violations "
                        f"<= empirical, got certified={c}, empirical={e}, violations={v}"
                    )
        check_real(self.sigma, "sigma", low=0, open_low=True)
        check_int(self.n0, "n0", minimum=1)
        check_int(self.n, "n", minimum=1)
        check_real(self.alpha, "alpha", low=0, high=1, open_low=True, open_high=True)
        check_confidence(self.confidence)
        for name in _WORK:
            check_int(getattr(self, name), name, minimum=0)

    def _check_row(self, name: str, row: tuple[int, ...]) -> None:
        if len(row) != len(self.radii):
            raise ValueError(
                f"{name} needs one count per radius ({len(self.radii)}), got {len(row)}"
            )
        for value in row:
            check_int(value, name, minimum=0)
            if value > self.total:
                raise ValueError(f"{name} counts must be <= total={self.total}, got {value}")

    # -- reading it ---------------------------------------------------------------------------

    @property
    def accuracy(self) -> tuple[AccuracyEstimate, ...]:
        """Certified accuracy at each radius, with its Wilson interval."""
        return tuple(AccuracyEstimate(c, self.total, self.confidence) for c in self.certified)

    @property
    def empirical_accuracy(self) -> tuple[AccuracyEstimate, ...] | None:
        """The empirical upper bound at each radius, or ``None`` without an attack."""
        if self.empirical is None:
            return None
        return tuple(AccuracyEstimate(e, self.total, self.confidence) for e in self.empirical)

    @property
    def abstain_rate(self) -> AccuracyEstimate:
        """The share of samples on which CERTIFY abstained, with its Wilson interval."""
        return AccuracyEstimate(self.abstained, self.total, self.confidence)

    def at(self, radius: float) -> AccuracyEstimate:
        """Certified accuracy at ``radius``, one of :attr:`radii`.

        Raises:
            ValueError: If ``radius`` is not one of the evaluated radii.
        """
        if radius not in self.radii:
            raise ValueError(f"radius must be one of {list(self.radii)}, got {radius}")
        return self.accuracy[self.radii.index(radius)]

    @property
    def checks(self) -> tuple[CheckOutcome, ...]:
        """The sanity check ``certified_below_empirical`` (not applicable without an attack)."""
        name = "certified_below_empirical"
        if self.violations is None:
            return (CheckOutcome(name, None, "not applicable: no attack run"),)
        bad = [(r, v) for r, v in zip(self.radii, self.violations, strict=True) if v > 0]
        if not bad:
            detail = (
                "no sample certified at a radius was classified wrongly after the attack at "
                "that radius"
            )
            return (CheckOutcome(name, True, detail),)
        shown = ", ".join(f"{v} at r={r:g}" for r, v in bad)
        detail = (
            f"samples certified at a radius were classified wrongly by PREDICT after an attack "
            f"inside it ({shown}); a rare Monte Carlo error (each below 2 * alpha = "
            f"{2 * self.alpha:g}) or a broken model or certificate"
        )
        return (CheckOutcome(name, False, detail),)

    @property
    def passed(self) -> bool:
        """Whether no sanity check failed."""
        return all(check.passed is not False for check in self.checks)

    # -- rendering ----------------------------------------------------------------------------

    def to_markdown(self, ci: bool = True) -> str:
        """A Markdown table: one row per radius, certified (and empirical) accuracy in %."""
        header = ["radius", "certified %"]
        empirical = self.empirical_accuracy
        if empirical is not None:
            header.append("empirical (attack) %")
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for i, radius in enumerate(self.radii):
            row = [f"{radius:g}", self.accuracy[i].format(ci)]
            if empirical is not None:
                row.append(empirical[i].format(ci))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        lines.append(
            f"sigma={self.sigma:g}, n0={self.n0}, n={self.n}, alpha={self.alpha:g}, "
            f"{self.total} samples, abstained {self.abstain_rate.format(ci)} %"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def to_dict(self) -> dict[str, Any]:
        """The counts and settings, plus the derived accuracies for readers of the JSON."""
        data: dict[str, Any] = {"kind": _KIND}
        for f in fields(self):
            value = getattr(self, f.name)
            data[f.name] = list(value) if isinstance(value, tuple) else value
        data["accuracy"] = [a.to_dict() for a in self.accuracy]
        data["checks"] = [c.to_dict() for c in self.checks]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CertifiedAccuracy:
        """Inverse of :meth:`to_dict`; derived fields are recomputed, every count checked.

        Raises:
            TypeError: If ``data`` is not a dict or a count is not an int.
            ValueError: If it is another kind of result or its counts contradict each other.
        """
        if not isinstance(data, dict):
            raise TypeError(f"expected a dict from to_dict(), got {type(data).__name__}")
        if data.get("kind") != _KIND:
            raise ValueError(f"expected a serialized {_KIND}, got kind={data.get('kind')!r}")

        def listed(name: str) -> list[Any]:
            if not isinstance(data[name], list):
                raise TypeError(f"{name} must be a list, got {type(data[name]).__name__}")
            return data[name]

        def optional(name: str) -> tuple[int, ...] | None:
            return None if data.get(name) is None else tuple(listed(name))

        return cls(
            sigma=data["sigma"],
            n0=data["n0"],
            n=data["n"],
            alpha=data["alpha"],
            radii=tuple(float(r) for r in listed("radii")),
            certified=tuple(listed("certified")),
            abstained=data["abstained"],
            total=data["total"],
            confidence=data["confidence"],
            empirical=optional("empirical"),
            violations=optional("violations"),
            **{name: data.get(name, 0) for name in _WORK},
        )

    def to_json(self, indent: int | None = 2) -> str:
        """The result as JSON text; :meth:`from_json` reads it back."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> CertifiedAccuracy:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def plot(self, ax: Axes | None = None, label: str | None = None) -> Figure:
        """Certified accuracy against the radius with its Wilson band (and the empirical
        bound, dashed, when an attack ran).

        Args:
            ax: Axes to draw on; a new figure is made if ``None`` (pyplot is not used).
            label: The curve's legend label; ``sigma=...`` by default.

        Returns:
            The figure drawn on.

        Raises:
            ImportError: If matplotlib (an optional dependency) is not installed.
        """
        figure, ax = new_axes(ax)
        xs = list(self.radii)
        line = accuracy_band(
            ax, xs, self.accuracy, label=label or f"certified, sigma={self.sigma:g}"
        )
        empirical = self.empirical_accuracy
        if empirical is not None:
            ax.plot(
                xs,
                [100 * a.value for a in empirical],
                linestyle="--",
                color=line.get_color(),
                label="empirical (L2 PGD on the smoothed classifier)",
            )
        ax.set_xlabel("L2 radius")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.legend()
        return figure


def certified_accuracy(
    smooth: Smooth,
    loader: Iterable[Any],
    *,
    radii: Sequence[float] = DEFAULT_RADII,
    n0: int = 100,
    n: int = 1000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    attack_steps: int = 0,
    attack_samples: int = 16,
    confidence: float = 0.95,
    generator: torch.Generator | None = None,
    progress: bool = True,
    distributed: bool | None = None,
) -> CertifiedAccuracy:
    """Certify every sample of ``loader`` and count the certified accuracy at each radius.

    Each batch is certified with :meth:`Smooth.certify`. With ``attack_steps > 0``, each
    sample is also attacked at every radius ``r > 0`` by advkit's L2 :class:`~advkit.attacks.PGD`
    (``steps=attack_steps``, step ``2 r / steps``, no random start, as in Salman et al.'s
    ``PGD_L2``) on the soft smoothed classifier :class:`SoftSmooth` with ``attack_samples``
    fresh noise samples per pass, and the attacked input is classified by
    :meth:`Smooth.predict` (``n`` samples, ``alpha``): the empirical upper bound beside the
    certified curve, and the sanity check that no certified sample is broken.

    The pass over the loader is the one evaluation loop,
    :class:`~advkit.evaluation.EvaluationLoop`: the base model held in eval mode, every batch
    checked against ``smooth.bounds``, and under ``torchrun`` each process certifies its share
    of the loader (whole batches) after the processes' weights were compared, and every process
    returns the global counts; with a ``generator`` each batch's noise comes from a generator
    seeded by the batch's index, so the result does not depend on the number of processes.

    Args:
        smooth: The smoothed classifier.
        loader: Iterable of ``(inputs, labels)`` batches.
        radii: The radii of the curve, >= 0 and increasing.
        n0: CERTIFY's selection samples per input.
        n: CERTIFY's estimation samples per input.
        alpha: CERTIFY's (and PREDICT's) error probability.
        batch_size: Rows per forward pass.
        attack_steps: Steps of the empirical attack; 0 for none.
        attack_samples: Noise samples of the soft smoothed classifier in the attack.
        confidence: Coverage of the Wilson intervals.
        generator: Source of the noise (and the attack's), drawn from once per call.
        progress: Show a progress bar.
        distributed: ``None`` to shard exactly when several processes run, ``False`` to
            certify everything here, ``True`` to require several processes.

    Returns:
        The counts at every radius, with intervals, the abstain rate and the sanity check (a
        failed check also warns).

    Raises:
        TypeError: If ``smooth`` is not a :class:`Smooth` or the loader yields something else
            than ``(inputs, labels)`` pairs.
        ValueError: If an argument is out of range or a batch is invalid (see
            :meth:`Smooth.certify`).

    References:
        Cohen, Rosenfeld and Kolter, "Certified Adversarial Robustness via Randomized
        Smoothing", ICML 2019 (certified accuracy, ``analyze.py``); Salman et al., "Provably
        Robust Deep Learning via Adversarially Trained Smoothed Classifiers", NeurIPS 2019
        (the attack on the smoothed classifier).

    Example:
        >>> import torch
        >>> from advkit.certification import Smooth, certified_accuracy
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> x = torch.rand(8, 4)
        >>> result = certified_accuracy(
        ...     Smooth(model, 0.25), [(x, torch.zeros(8, dtype=torch.long))], n0=10, n=50,
        ...     progress=False, generator=torch.Generator().manual_seed(0))
        >>> result.total
        8
    """
    if not isinstance(smooth, Smooth):
        raise TypeError(f"smooth must be a Smooth, got {type(smooth).__name__}")
    radii = tuple(check_real(r, "radius", low=0) for r in radii)
    if not radii or any(b <= a for a, b in itertools.pairwise(radii)):
        raise ValueError(f"radii must be a non-empty increasing sequence, got {list(radii)}")
    check_int(n0, "n0", minimum=1)
    check_int(n, "n", minimum=1)
    alpha = check_real(alpha, "alpha", low=0, high=1, open_low=True, open_high=True)
    check_int(batch_size, "batch_size", minimum=1)
    check_int(attack_steps, "attack_steps", minimum=0)
    check_int(attack_samples, "attack_samples", minimum=1)
    check_confidence(confidence)
    call = (
        f"certified_accuracy({smooth!r}, radii={list(radii)}, n0={n0}, n={n}, alpha={alpha}, "
        f"batch_size={batch_size}, attack_steps={attack_steps})"
    )
    counts: dict[str, Any] = {"abstained": 0}
    for name in ("certified", "empirical", "violations"):
        counts[name] = torch.zeros(len(radii), dtype=torch.long)
    radius_tensor = torch.tensor(radii, dtype=torch.float64)
    # The one evaluation loop, judging no model clean: it holds the base model in eval mode,
    # checks every batch against the bounds and the processes' weights against each other.
    with EvaluationLoop(
        loader, (), held=(smooth.model,), call=call, bounds=smooth.bounds,
        distributed=distributed, generator=generator, progress=progress, description="certify",
    ) as loop:  # fmt: skip
        for batch in loop:
            cert = smooth.certify(
                batch.inputs, n0, n, alpha, batch_size=batch_size, generator=batch.generator
            )
            labels = batch.labels.cpu()
            correct = cert.prediction == labels
            at_radius = correct[:, None] & (cert.radius[:, None] >= radius_tensor[None])
            counts["certified"] += at_radius.sum(dim=0)
            counts["abstained"] += int((cert.prediction == ABSTAIN).sum())
            if attack_steps > 0:
                broken = _attack_bound(
                    smooth, batch.inputs, labels, radii, n, alpha, batch_size, attack_steps,
                    attack_samples, batch.generator,
                )  # fmt: skip
                counts["empirical"] += (correct[:, None] & ~broken).sum(dim=0)
                counts["violations"] += (at_radius & broken).sum(dim=0)
    totals = loop.totals(counts)
    sums, attacked = totals.counts, attack_steps > 0
    # Per sample: CERTIFY's n0 + n rows, and at each radius > 0 an attack of attack_samples
    # rows per step and a PREDICT of n.
    attacked_radii = sum(r > 0 for r in radii) if attacked else 0
    result = CertifiedAccuracy(
        sigma=smooth.sigma,
        n0=n0,
        n=n,
        alpha=alpha,
        radii=radii,
        certified=tuple(sums["certified"].tolist()),
        abstained=sums["abstained"],
        total=totals.total,
        confidence=confidence,
        empirical=tuple(sums["empirical"].tolist()) if attacked else None,
        violations=tuple(sums["violations"].tolist()) if attacked else None,
        attack_steps=attack_steps,
        attack_samples=attack_samples if attacked else 0,
        forward_rows=totals.total * (n0 + n + attacked_radii * n),
        grad_rows=totals.total * attacked_radii * attack_samples * attack_steps,
    )
    warn_failed(result.checks)
    return result


def _attack_bound(
    smooth: Smooth,
    inputs: Tensor,
    labels: Tensor,
    radii: tuple[float, ...],
    n: int,
    alpha: float,
    batch_size: int,
    steps: int,
    samples: int,
    generator: torch.Generator | None,
) -> Tensor:
    """Which samples the attack put in a wrong class at each radius (``[N, R]`` bool); none at
    radius 0, the clean input."""
    broken = torch.zeros(labels.shape[0], len(radii), dtype=torch.bool)
    soft = SoftSmooth(smooth.model, smooth.sigma, samples, generator=generator)
    device_labels = labels.to(inputs.device)
    for i, radius in enumerate(radii):
        if radius == 0:
            continue
        attack = PGD(
            eps=radius,
            steps=steps,
            alpha=2 * radius / steps,
            random_start=False,
            norm="L2",
            bounds=smooth.bounds,
        )
        adversarial = attack(soft, inputs, device_labels, generator=generator)
        answer = smooth.predict(
            adversarial, n, alpha, batch_size=batch_size, generator=generator
        ).prediction
        broken[:, i] = (answer != labels) & (answer != ABSTAIN)
    return broken
