"""Robust accuracy of a model under one attack, with its sanity checks (and, for an ensemble
such as AutoAttack, per-member accuracy and gradient-masking checks)."""

from __future__ import annotations

import functools
import operator
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from advkit._checks import check_bool, check_confidence, check_model, check_real
from advkit.attacks import Attack, AttackResult, CheckOutcome
from advkit.attacks.autoattack import AutoAttackResult
from advkit.attacks.base import check_attack as check_attack_object
from advkit.attacks.masking import GradientMaskingWarning, MaskingEvidence
from advkit.attacks.outcome import warn_failed
from advkit.evaluation._runtime import (
    JsonResult,
    WorkCount,
    check_same_total,
    checks_markdown,
    field_of,
    markdown_table,
    nested,
    read_list,
    read_nested,
)
from advkit.evaluation.distributed import Shard
from advkit.evaluation.loop import SanityLoop, attack_batch
from advkit.evaluation.metrics import AccuracyEstimate
from advkit.evaluation.sanity import check_zero_eps, with_surrogates

__all__ = ["RobustAccuracy", "robust_accuracy"]


@contextmanager
def batch_warnings_held() -> Iterator[None]:
    """Hold back the per-batch gradient-masking check warnings: the tally warns once, for all.

    Only the check records' warnings (AutoAttack's, which the tally re-raises) are held; the
    attacks' own warning about a model that returns probabilities passes.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="gradient-masking check", category=GradientMaskingWarning
        )
        yield


class MemberTally:
    """Adds up, batch by batch, the robust counts after each member and the masking evidence.

    Results that are not an :class:`~advkit.attacks.AutoAttackResult` (or ``None``, no sample
    attacked) add nothing.
    """

    def __init__(self) -> None:
        self.names: tuple[str, ...] = ()
        self.robust_after: list[int] = []
        self.evidence: MaskingEvidence | None = None

    def update(self, result: AttackResult | None) -> None:
        """Add one batch's result."""
        if not isinstance(result, AutoAttackResult):
            return
        if not self.names:
            self.names, self.robust_after = result.member_names, [0] * len(result.member_names)
        self.robust_after = [
            a + b for a, b in zip(self.robust_after, result.robust_after, strict=True)
        ]
        self.evidence = result.masking if self.evidence is None else self.evidence + result.masking

    def all_reduce(self, shard: Shard) -> None:
        """Replace this process's tallies by those over every process of ``shard`` (exact)."""
        if not shard.distributed:
            return
        everyone = shard.gather_objects((self.names, self.robust_after, self.evidence))
        self.names = next((names for names, _, _ in everyone if names), ())
        self.robust_after = [
            sum(counts[i] for names, counts, _ in everyone if names) for i in range(len(self.names))
        ]
        found = [evidence for _, _, evidence in everyone if evidence is not None]
        self.evidence = functools.reduce(operator.add, found) if found else None

    def members(self, total: int, confidence: float) -> tuple[tuple[str, AccuracyEstimate], ...]:
        """Robust accuracy after each member, over ``total`` samples."""
        return tuple(
            (name, AccuracyEstimate(count, total, confidence))
            for name, count in zip(self.names, self.robust_after, strict=True)
        )

    def checks(self, warn: bool = True) -> tuple[CheckOutcome, ...]:
        """The gradient-masking checks over every batch, each failure warned about once."""
        if self.evidence is None:
            return ()
        found = self.evidence.checks()
        if warn:
            warn_failed(found, stacklevel=4)
        return found


def check_attack(attack: object, scalar_eps: bool = True) -> Attack:
    """Validate an attack for evaluation against true labels: untargeted, scalar eps."""
    attack = check_attack_object(attack)
    if attack.targeted:
        raise ValueError(
            "robust accuracy needs an untargeted attack (the loader's labels are the true "
            f"classes), got {attack!r}"
        )
    if scalar_eps and isinstance(attack.eps, Tensor):
        raise ValueError(
            "evaluation needs a scalar eps (a per-sample eps only fits one batch), got a "
            f"tensor of shape {list(attack.eps.shape)}"
        )
    return attack


def _read_members(where: str, data: Any) -> tuple[tuple[str, AccuracyEstimate], ...]:
    members = []
    for i, member in enumerate(read_list(data, where)):
        name = field_of(member, "name", f"member {i}")
        robust = read_nested(
            f"{where}[{i}]", AccuracyEstimate.from_dict, field_of(member, "robust", "member")
        )
        members.append((name, robust))
    return tuple(members)


@dataclass(frozen=True)
class RobustAccuracy(JsonResult):
    """Clean and robust accuracy of a model under one attack.

    A sample counts as robust if the model classifies it correctly and the attack never fooled
    it at any point it visited (``AttackResult.fooled``).

    Attributes:
        attack: ``repr`` of the attack.
        eps: The attack's radius.
        clean: Clean accuracy.
        robust: Robust accuracy.
        early_stop: Whether fooled samples were dropped from the attack early.
        work: Passes through the model.
        checks: The sanity checks and their outcome (for an
            :class:`~advkit.attacks.AutoAttack`, its gradient-masking checks too).
        members: For an :class:`~advkit.attacks.AutoAttack`, ``(name, robust accuracy after
            that member)`` for each member in the order they ran; empty otherwise.
    """

    attack: str
    eps: float
    clean: AccuracyEstimate
    robust: AccuracyEstimate
    early_stop: bool
    work: WorkCount
    checks: tuple[CheckOutcome, ...]
    members: tuple[tuple[str, AccuracyEstimate], ...] = ()

    _kind = "advkit.RobustAccuracy"
    _readers = JsonResult._readers | {
        "clean": nested(AccuracyEstimate.from_dict),
        "robust": nested(AccuracyEstimate.from_dict),
        "members": _read_members,
    }

    def __post_init__(self) -> None:
        self._check_shared()
        check_real(self.eps, "eps", low=0)
        check_bool(self.early_stop, "early_stop")
        for name in ("clean", "robust"):
            if not isinstance(getattr(self, name), AccuracyEstimate):
                raise TypeError(f"{name} must be an AccuracyEstimate")
        clean, robust = self.clean, self.robust
        check_same_total(robust, clean, "robust")
        if robust.correct > clean.correct:
            raise ValueError(
                f"robust accuracy cannot exceed clean accuracy: robust {robust.correct} > clean "
                f"{clean.correct} of {clean.total} (only correctly classified samples can be "
                "robust)"
            )
        after = []
        for name, member in self.members:
            if not isinstance(name, str) or not isinstance(member, AccuracyEstimate):
                raise TypeError("members must be (str, AccuracyEstimate) pairs")
            check_same_total(member, clean, f"member {name!r}")
            after.append(member.correct)
        if after and (
            after[0] > clean.correct
            or after != sorted(after, reverse=True)
            or after[-1] != robust.correct
        ):
            raise ValueError(
                f"the robust counts after each member must fall from at most clean "
                f"({clean.correct}) to the robust count ({robust.correct}), got {after}"
            )

    def __float__(self) -> float:
        return self.robust.value

    @property
    def passed(self) -> bool:
        """Whether no sanity check failed."""
        return all(check.passed is not False for check in self.checks)

    def to_markdown(self, ci: bool = True) -> str:
        """A one-row table (accuracies in %, Wilson intervals in brackets) and the checks."""
        table = markdown_table(
            ["attack", "clean acc. (%)", "robust acc. (%)"],
            [[self.attack, self.clean.format(ci), self.robust.format(ci)]],
        )
        if self.members:
            rows = [[name, accuracy.format(ci)] for name, accuracy in self.members]
            table += "\n\n" + markdown_table(["after member", "robust acc. (%)"], rows)
        return f"{table}\n\nSanity checks:\n\n{checks_markdown(self.checks)}\n"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` reads it back."""
        members = [{"name": name, "robust": a.to_dict()} for name, a in self.members]
        return super().to_dict() | {"members": members}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RobustAccuracy:
        """Inverse of :meth:`to_dict`.

        Raises:
            TypeError: If a field has the wrong type (nothing is coerced: a count ``7.9``,
                ``"7"`` or ``true``, ``early_stop: "false"``, ``passed: "maybe"``).
            ValueError: If a field is missing or impossible (eps NaN or negative, negative
                work), or the fields contradict each other (robust above clean, different
                totals, a member above clean).
        """
        return super().from_dict(data)


def robust_accuracy(
    model: nn.Module,
    loader: Iterable[Any],
    attack: Attack,
    *,
    early_stop: bool = True,
    generator: torch.Generator | None = None,
    progress: bool = True,
    confidence: float = 0.95,
    distributed: bool | None = None,
) -> RobustAccuracy:
    """Accuracy of ``model`` on the loader's samples when each is attacked by ``attack``.

    Only correctly classified samples are attacked (the others are not robust whatever the
    attack does). The model runs in eval mode and gets its flags back; batches are moved to
    the model's device. The sanity checks (model handed in eval mode, adversarial examples in
    the bounds and the eps-ball, eps = 0 changing nothing) are stored in the result, and each
    failure is also raised as a :class:`~advkit.evaluation.SanityWarning`. For an
    :class:`~advkit.attacks.AutoAttack` the result also has the robust accuracy after each
    member and the gradient-masking checks over all batches, each failure raised once as a
    :class:`~advkit.attacks.GradientMaskingWarning`. Under ``torchrun`` every process attacks
    its share of the loader and returns the result on the whole of it, checks and members
    included (see :mod:`advkit.evaluation.distributed`).

    Args:
        model: A classifier returning ``[N, C]`` logits for inputs in the attack's bounds.
        loader: Iterable of ``(inputs, labels)`` batches, e.g. a ``DataLoader``.
        attack: An untargeted attack with a scalar eps.
        early_stop: Stop attacking a sample once it is fooled. Exact: the robust accuracy is
            the same as without it, for less work.
        generator: Randomness for attacks with random starts, one seeded generator per batch
            (see :mod:`advkit.evaluation.distributed`).
        progress: Show a progress bar.
        confidence: Coverage of the reported Wilson intervals.
        distributed: Shard the loader among the ``torchrun`` processes: ``None`` when several
            run, ``False`` never, ``True`` always (see :mod:`advkit.evaluation.distributed`).

    Returns:
        Clean and robust accuracy with intervals, the work done and the sanity checks.

    Raises:
        TypeError: If ``model`` or ``attack`` has the wrong type, or the loader yields
            something else than ``(inputs, labels)`` tensor pairs.
        ValueError: If the attack is targeted or has a per-sample eps, or the loader is empty
            or yields a malformed batch, or the processes under ``torchrun`` were called
            differently.
        RuntimeError: Under ``torchrun``, if another process failed or did not start the
            evaluation.

    Example:
        >>> import torch
        >>> from advkit.attacks import IFGSM
        >>> from advkit.evaluation import robust_accuracy
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
        >>> x = torch.rand(8, 3, 2, 2)
        >>> loader = [(x, model(x).argmax(1))]
        >>> result = robust_accuracy(model, loader, IFGSM(eps=0.0, steps=2), progress=False)
        >>> result.clean.correct, result.robust.correct, result.passed
        (8, 8, True)
    """
    check_model(model)
    check_attack(attack)
    check_confidence(confidence)
    check_bool(early_stop, "early_stop")
    robust, tally = 0, MemberTally()
    with SanityLoop(
        loader, [model], attack, with_surrogates(model, attack), call=f"robust_accuracy({attack!r})",
        description="robust", distributed=distributed, generator=generator, progress=progress,
    ) as loop:  # fmt: skip
        for batch in loop:
            with batch_warnings_held():
                outcome = attack_batch(
                    model, batch.inputs, batch.labels, attack, attacked=batch.correct[0],
                    generator=batch.generator, early_stop=early_stop, threat=loop.threat,
                )  # fmt: skip
            tally.update(outcome.result)
            robust += int(outcome.robust.sum())
            loop.work += outcome.work
    totals = loop.totals({"robust": robust})
    (clean,), robust = totals.clean, totals.counts["robust"]
    eps = float(attack.eps)
    checks = loop.checks(check_zero_eps(clean, {repr(attack): robust} if eps == 0 else None))
    tally.all_reduce(loop.shard)
    return RobustAccuracy(
        attack=repr(attack),
        eps=eps,
        clean=AccuracyEstimate(clean, totals.total, confidence),
        robust=AccuracyEstimate(robust, totals.total, confidence),
        early_stop=early_stop,
        work=totals.work,
        checks=checks + tally.checks(),
        members=tally.members(totals.total, confidence),
    )
