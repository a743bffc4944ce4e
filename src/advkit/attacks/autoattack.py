"""AutoAttack: the per-sample worst case over APGD-CE, APGD-T, FAB-T and Square, with checks."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from advkit._checks import (
    EpsArg,
    check_bool,
    check_int,
)
from advkit.attacks.apgd import APGD
from advkit.attacks.apgdt import APGDT
from advkit.attacks.base import Attack, AttackResult, ModelWork, _arguments
from advkit.attacks.compose import MembersOutcome, WorstCase, run_members
from advkit.attacks.fab import FAB
from advkit.attacks.masking import (
    MaskingEvidence,
    inspect_model,
    masking_check,
    probabilities_reported,
)
from advkit.attacks.outcome import CheckOutcome, warn_failed
from advkit.attacks.pgd import PGD
from advkit.attacks.square import Square
from advkit.attacks.threat import Norm

__all__ = ["BLACK_BOX_RULES", "MEMBER_NAMES", "VERSIONS", "AutoAttack", "AutoAttackResult"]

Version = Literal["standard", "plus", "rand", "fast", "custom"]
BlackBox = Literal["always", "when_masked"]

VERSIONS: dict[str, tuple[str, ...]] = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
    "fast": ("apgd-ce", "apgd-t", "square"),
}
"""The members of each version, in the order they run (the reference's ``attacks_to_run``)."""

MEMBER_NAMES = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
"""The names ``version="custom"`` accepts in ``attacks``."""

LARGE_EPS_STEPS = 20
"""Steps of the PGD run at a huge radius that checks that accuracy can reach ~0."""

FAST_TARGET_CLASSES = 5
"""Target classes of ``version="fast"``'s APGD-T, chosen by MALT (the reference takes 9)."""

FLAT_LOSS_SHARE = 0.1
"""``black_box="when_masked"`` runs Square when the first white-box member left more than this
share of its survivors at a cross-entropy no higher than at the clean input (a flat loss: the
gradient leads nowhere)."""

BLACK_BOX_RULES: tuple[str, ...] = get_args(BlackBox)
"""When the black-box member (Square) runs: on every survivor of the white-box members
(``"always"``, the reference), or only when the white-box members' evidence says gradients
may mislead them (``"when_masked"``, ``version="fast"``'s rule)."""


def _member(name: str, version: str, common: dict[str, Any]) -> Attack:
    """The reference's settings of member ``name`` in ``version`` (custom takes plus's)."""
    restarts = 1 if version in ("standard", "rand", "fast") else 5
    if name in ("apgd-ce", "apgd-dlr"):
        loss = name.removeprefix("apgd-")
        if version == "rand":
            return APGD(steps=100, n_restarts=1, loss=loss, rho=0.75, eot_iter=20, **common)
        if version == "fast":
            return APGD(steps=100, n_restarts=1, loss=loss, rho=0.75, exit_fooled=True, **common)
        return APGD(steps=100, n_restarts=restarts, loss=loss, rho=0.75, **common)
    if name == "apgd-t":
        if version == "fast":
            return APGDT(
                steps=100, n_restarts=1, n_target_classes=FAST_TARGET_CLASSES,
                targeting="malt", exit_fooled=True, **common,
            )  # fmt: skip
        return APGDT(steps=100, n_restarts=1, n_target_classes=9, **common)
    if name == "fab":
        return FAB(steps=100, n_restarts=restarts, n_target_classes=None, **common)
    if name == "fab-t":
        return FAB(steps=100, n_restarts=1, n_target_classes=9, **common)
    return Square(n_queries=5000, p_init=0.8, n_restarts=1, **common)


def _kind(attack: Attack) -> str:
    """The name of a member given as an object: the reference's for its kinds."""
    if isinstance(attack, APGDT):
        return "apgd-t"
    if isinstance(attack, APGD):
        return f"apgd-{attack.loss}" if isinstance(attack.loss, str) else "apgd"
    if isinstance(attack, FAB):
        return "fab" if attack.n_target_classes is None else "fab-t"
    if isinstance(attack, Square):
        return "square"
    return type(attack).__name__


def _unique(base: str, taken: Sequence[str]) -> str:
    """``base``, or ``base#2``, ``base#3``, ... for the second, third member of that name."""
    name, k = base, 2
    while name in taken:
        name, k = f"{base}#{k}", k + 1
    return name


class _Sweep(NamedTuple):
    """The large-eps check of one run: its evidence, and the work of its PGD run."""

    evidence: MaskingEvidence
    grad_calls: int
    grad_samples: int


@dataclass
class _MemberLog:
    """What one AutoAttack run learns from its members as they run, for its checks.

    Attributes:
        chosen: The members that run, ``(index in the ensemble, attack)``.
        labels: The batch's labels.
        clean_loss: Per-sample cross-entropy at the clean inputs ``[N]``.
        black_box_attacked: Samples the black-box member (Square) attacked.
        black_box_fooled: Of those, the ones it fooled after a white-box member had failed.
        white_box_ran: Whether a white-box member has run.
        white_box_survivors: Samples the first white-box member did not fool.
        flat: Of those, the ones whose loss it left no higher than at the clean input.
        sweep: The large-eps check, once it ran.
    """

    chosen: list[tuple[int, Attack]]
    labels: Tensor
    clean_loss: Tensor
    black_box_attacked: int = 0
    black_box_fooled: int = 0
    white_box_ran: bool = False
    white_box_survivors: int = 0
    flat: int = 0
    sweep: _Sweep | None = None

    def record(self, position: int, survivors: Tensor, result: AttackResult) -> None:
        """Take in the ``result`` of member ``chosen[position]`` on the batch positions
        ``survivors``."""
        if isinstance(self.chosen[position][1], Square):
            self.black_box_attacked += survivors.numel()
            if self.white_box_ran:
                self.black_box_fooled += int(result.fooled.sum())
            return
        if not self.white_box_ran:  # the first white-box member: is its loss flat?
            robust = ~result.fooled
            loss = F.cross_entropy(result.logits, self.labels[survivors], reduction="none")
            clean = self.clean_loss[survivors]
            moved = loss > clean + 1e-6 * clean.abs()
            self.flat = int((robust & ~moved).sum())
            self.white_box_survivors = int(robust.sum())
        self.white_box_ran = True


@dataclass(frozen=True)
class AutoAttackResult(AttackResult):
    """An :class:`~advkit.attacks.AttackResult` that says which member fooled each sample.

    Attributes:
        member: Per-sample index into ``member_names`` of the member that fooled the sample,
            ``[N]`` int64, or -1 if none did (the sample is robust).
        member_names: The members, in the order they ran.
        robust_after: How many samples were still robust after each member, the reference's
            per-attack robust accuracy times ``N``.
        masking: The evidence behind the gradient-masking checks.
        member_work: The model work of each member (in ``member_names`` order; nothing for a
            member that did not run). ``work`` is their sum plus the checks' passes.
    """

    member: Tensor
    member_names: tuple[str, ...]
    robust_after: tuple[int, ...]
    masking: MaskingEvidence
    member_work: tuple[ModelWork, ...] = ()

    @property
    def checks(self) -> tuple[CheckOutcome, ...]:
        """The gradient-masking checks of this run (see ``advkit.attacks.masking``)."""
        return self.masking.checks()

    @property
    def member_accuracy(self) -> dict[str, float]:
        """Robust accuracy after each member, by name: the share of samples still robust."""
        total = self.member.shape[0]
        return {n: r / total for n, r in zip(self.member_names, self.robust_after, strict=True)}


class AutoAttack(Attack):
    r"""AutoAttack: a parameter-free ensemble, the field's standard robustness evaluation.

    Runs its members in order, each only on the samples no earlier member fooled, and keeps
    the per-sample worst case (the semantics of :class:`~advkit.attacks.WorstCase`, whose
    loop it shares: it holds its members, it is not a ``WorstCase``). The versions and their members' settings are the reference's (the same
    for L-inf and L2):

    - ``"standard"``: APGD-CE (100 steps, no restart), APGD-T (100 steps, 9 target classes),
      FAB-T (100 steps, 9 target classes), Square (5000 queries, ``p_init`` 0.8).
    - ``"plus"``: APGD-CE and APGD-DLR with 5 restarts, untargeted FAB with 5 restarts,
      Square, APGD-T and FAB-T.
    - ``"rand"``, for randomized defenses: APGD-CE and APGD-DLR, each gradient averaged over
      20 draws of the model (expectation over transformation, APGD's ``eot_iter``).
    - ``"fast"``, for robust accuracy at a fraction of the cost (not from the reference):
      APGD-CE (100 steps) and APGD-T (100 steps, ``FAST_TARGET_CLASSES`` (5) targets chosen
      by MALT, :func:`~advkit.attacks.targeting.malt_scores`), both with per-sample exits (a
      fooled sample leaves at once, ``exit_fooled``); no FAB-T. Square (5000 queries, the
      reference's budget) runs under ``black_box="when_masked"`` (below). See "Fast and
      trustworthy" in the evaluation guide.
    - ``"custom"``: the members named in ``attacks`` (``"apgd-ce"``, ``"apgd-dlr"``,
      ``"apgd-t"``, ``"fab"``, ``"fab-t"``, ``"square"``, with the settings ``"plus"`` gives
      them, like the reference's defaults), or attack objects, whose ``eps``, ``norm`` and
      ``bounds`` are replaced by the ensemble's. A member listed twice runs twice (from the
      generator's next draws) and is named apart: ``"apgd-ce"``, ``"apgd-ce#2"``.

    Every run also gathers the evidence of the gradient-masking checks
    (``advkit.attacks.masking``): one extra forward+backward and one forward pass on the
    batch (is the output a probability distribution, are input gradients zero or non-finite,
    do two passes differ), which samples the black-box Square fooled after the white-box
    members failed, and a 20-step PGD at a radius that can reach any input (half the box
    width in L-inf, that times ``sqrt(d)`` in L2) on the samples that survived, each sample
    leaving it once fooled (the check asks whether it can be). Each failed
    check is raised as a :class:`~advkit.attacks.GradientMaskingWarning`; all are in the
    result (:class:`AutoAttackResult`).

    ``black_box`` says when the black-box member (Square) runs. ``"always"`` (every version
    but ``"fast"``): on every sample the white-box members left, as in the reference.
    ``"when_masked"`` (``"fast"``'s rule, available to any version): only when a
    gradient-masking check has failed by then (the model-side checks, and the large-eps
    check, which then runs before Square) or the first white-box member's loss looked flat
    (more than ``FLAT_LOSS_SHARE`` (10%) of its survivors at a cross-entropy no higher than
    at the clean input); otherwise Square is skipped, fools nobody and costs nothing, and its
    ``black_box`` check reads "not run". Square is the most expensive member per survivor,
    and where gradients guide the white-box members it seldom fools a sample they left
    (``benchmarks/fast_evaluation.py``: ``"fast"``, which skipped it there, matched the
    standard version's robust counts on every model whose checks passed); where they do
    not, it runs at full budget.

    Differences from the reference (fra31/auto-attack ``autoattack.py``): the randomness of
    every member comes from one ``torch.Generator`` seeded with ``seed`` (or the one passed
    to :meth:`~advkit.attacks.Attack.run`), never from reseeding the global RNG; target counts
    larger than the model's classes minus one are lowered to that (the reference only warns);
    a model whose output
    carries no gradient at all has its white-box members skipped (with a warning) instead of
    failing, so its Square number is still reported; the masking checks are computed on every
    batch, not only the first, and the large-eps sweep is added from Carlini et al.

    Args:
        eps: Radius of the threat model, a float or a per-sample tensor ``[N]``; in L-inf at
            most the width of ``bounds``.
        norm: ``"Linf"`` or ``"L2"``.
        version: ``"standard"``, ``"plus"``, ``"rand"``, ``"fast"`` or ``"custom"``.
        attacks: For ``version="custom"`` only: member names or attack objects, in order.
        seed: Seed of the generator the random members draw from when
            :meth:`~advkit.attacks.Attack.run` gets none.
        bounds: The box ``(lo, hi)`` inputs live in.
        check_large_eps: Run the large-eps check on the samples that survive.
        progress: Show a progress bar over the members of each run.
        black_box: ``"always"`` or ``"when_masked"``: when Square runs (above); ``None``
            takes the version's rule (``"when_masked"`` for ``"fast"``, else ``"always"``).

    Raises:
        ValueError: If ``eps`` is negative or larger than the box, ``norm`` or ``version`` is
            unknown, ``attacks`` is missing for ``"custom"``, given for another version, empty
            or names an unknown member, or ``black_box`` is not a rule above.
        TypeError: If an argument has the wrong type.

    References:
        Croce and Hein, "Reliable Evaluation of Adversarial Robustness with an Ensemble of
        Diverse Parameter-free Attacks", ICML 2020. Carlini et al., "On Evaluating Adversarial
        Robustness", arXiv:1902.06705, 2019 (the checks). ``version="fast"``: Melamed, Yehudai
        and Shamir, "MALT Powers Up Adversarial Attacks", NeurIPS 2024 (the targets).

    Example:
        >>> import torch
        >>> from advkit.attacks import AutoAttack, APGD, Square
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 4))
        >>> x, y = torch.rand(8, 3, 4, 4), torch.tensor([0, 1, 2, 3] * 2)
        >>> attack = AutoAttack(eps=8 / 255, version="custom",
        ...                     attacks=[APGD(eps=8 / 255, steps=10), Square(eps=8 / 255, n_queries=20)])
        >>> result = attack.run(model, x, y)
        >>> result.member_names, len(result.checks)
        (('apgd-ce', 'square'), 5)
    """

    def __init__(
        self,
        *,
        eps: EpsArg,
        norm: Norm = "Linf",
        version: Version = "standard",
        attacks: Sequence[str | Attack] | None = None,
        seed: int = 0,
        bounds: tuple[float, float] = (0.0, 1.0),
        check_large_eps: bool = True,
        progress: bool = False,
        black_box: BlackBox | None = None,
    ) -> None:
        self._record_settings(**_arguments(locals()))
        super().__init__(eps=eps, norm=norm, bounds=bounds)  # checked before any member is built
        if version not in (*VERSIONS, "custom"):
            raise ValueError(f"version must be one of {[*VERSIONS, 'custom']}, got {version!r}")
        self.seed = check_int(seed, "seed")
        self.check_large_eps = check_bool(check_large_eps, "check_large_eps")
        self.progress = check_bool(progress, "progress")
        if black_box is not None and black_box not in BLACK_BOX_RULES:
            raise ValueError(
                f"black_box must be one of {list(BLACK_BOX_RULES)} or None, got {black_box!r}"
            )
        common: dict[str, Any] = {"eps": self.eps, "norm": norm, "bounds": bounds}
        members: list[tuple[str, Attack]] = []
        for entry in self._entries(version, attacks):
            if isinstance(entry, Attack):
                if entry.targeted:
                    raise ValueError(f"members must be untargeted attacks, got {entry!r}")
                member = entry.replace(**common)
            else:
                member = _member(entry, version, common)
            members.append((_unique(_kind(member), [n for n, _ in members]), member))
        self.attacks: tuple[Attack, ...] = tuple(member for _, member in members)
        self.names = tuple(name for name, _ in members)
        self.version = version
        self.black_box: BlackBox = black_box or ("when_masked" if version == "fast" else "always")

    @staticmethod
    def _entries(version: str, attacks: Sequence[str | Attack] | None) -> Sequence[str | Attack]:
        """The members of ``version`` by name, or for ``"custom"`` the validated ``attacks``
        (names or attack objects)."""
        if version != "custom":
            if attacks is not None:
                raise ValueError(
                    f"attacks only apply to version='custom', got version={version!r} and "
                    f"attacks={attacks!r}"
                )
            return VERSIONS[version]
        if (
            attacks is None
            or isinstance(attacks, str | Attack)
            or not isinstance(attacks, Sequence)
        ):
            raise ValueError(
                "version='custom' needs attacks: a sequence of member names "
                f"{list(MEMBER_NAMES)} or Attack objects, got {attacks!r}"
            )
        if not attacks:
            raise ValueError("version='custom' needs at least one attack, got an empty sequence")
        for entry in attacks:
            if not isinstance(entry, Attack) and entry not in MEMBER_NAMES:
                raise ValueError(
                    f"unknown AutoAttack member {entry!r}: expected one of {list(MEMBER_NAMES)} "
                    "or an Attack object"
                )
        return attacks

    # As a worst case over its members: they run in order, their points one after another.
    members = WorstCase.members
    iterate_count = WorstCase.iterate_count

    @property
    def named_members(self) -> tuple[tuple[str, Attack], ...]:
        """``(name, attack)`` of every member, in the order they run."""
        return tuple(zip(self.names, self.attacks, strict=True))

    def _sweep(
        self,
        model: nn.Module,
        inputs: Tensor,
        labels: Tensor,
        survivors: Tensor,
        generator: torch.Generator | None,
        differentiable: bool,
    ) -> _Sweep:
        """The large-eps check on the batch positions ``survivors``: its evidence, and the
        ``grad_calls`` and ``grad_samples`` of its PGD run."""
        radius = (self.bounds[1] - self.bounds[0]) / 2  # half the box: any input is in reach
        if self.norm == "L2":
            radius *= math.sqrt(inputs[0].numel())
        robust_large = grad_calls = grad_samples = 0
        if survivors.numel() > 0 and differentiable:
            with probabilities_reported():
                sweep = PGD(
                    eps=radius, norm=self.norm, steps=LARGE_EPS_STEPS, bounds=self.bounds
                ).run(
                    model, inputs[survivors], labels[survivors], generator=generator,
                    early_stop=True,  # the check asks whether a sample *can* be fooled
                )  # fmt: skip
            robust_large = int((~sweep.fooled).sum())
            grad_calls, grad_samples = sweep.grad_calls, sweep.grad_samples
        elif survivors.numel() > 0:
            robust_large = survivors.numel()
        evidence = MaskingEvidence(
            large_eps=radius, large_eps_attacked=survivors.numel(), large_eps_robust=robust_large
        )
        return _Sweep(evidence, grad_calls, grad_samples)

    def _run(
        self,
        model: nn.Module,
        inputs: Tensor,
        labels: Tensor,
        generator: torch.Generator | None,
        early_stop: bool,
        track: bool,
    ) -> tuple[Tensor, AttackResult | None]:
        evidence, logits, differentiable = inspect_model(model, inputs, labels)
        chosen = self._choose(logits, differentiable)
        evidence = evidence + MaskingEvidence(
            attacked=inputs.shape[0], expects_randomness=self.version == "rand"
        )
        if generator is None:
            generator = torch.Generator(device=inputs.device).manual_seed(self.seed)
        sweep = partial(
            self._sweep, model, inputs, labels, generator=generator, differentiable=differentiable
        )
        log = _MemberLog(chosen, labels, F.cross_entropy(logits, labels, reduction="none"))
        bar = tqdm(total=len(chosen), desc="AutoAttack", disable=not self.progress, leave=False)

        def on_member(position: int, survivors: Tensor, result: AttackResult) -> None:
            log.record(position, survivors, result)
            bar.update(1)
            bar.set_postfix_str(
                f"{self.names[chosen[position][0]]}: "
                f"{int((~result.fooled).sum())} of {inputs.shape[0]} robust"
            )

        # only black_box="when_masked" may skip a member (Square); otherwise all run
        gated = self.black_box == "when_masked"
        gate = partial(self._masking_gate, log, evidence, sweep) if gated else None
        with bar, probabilities_reported():  # the ``logits`` check reports it, once
            outcome = run_members(
                [member for _, member in chosen],
                model,
                inputs,
                labels,
                generator,
                early_stop,
                on_member,
                gate,
            )
        if log.sweep is None and self.check_large_eps:
            log.sweep = sweep((outcome.member < 0).nonzero().flatten())
        evidence = self._evidence(evidence, log)
        warn_failed(evidence.checks(), stacklevel=5)
        if not track:
            return outcome.adversarial, None
        return outcome.adversarial, self._result(outcome, labels, evidence, log)

    def _choose(self, logits: Tensor, differentiable: bool) -> list[tuple[int, Attack]]:
        """The members to run on a model with these logits, by their index (target counts
        lowered below the classes), after checking that there are some; warns about the
        white-box members a model without input gradients skips."""
        classes = logits.shape[1]
        if classes < 2:
            raise ValueError(
                "AutoAttack needs a classifier with at least 2 classes, the model returns "
                f"{classes} output per sample"
            )
        chosen = []
        for k, member in enumerate(self.attacks):
            if not differentiable and not isinstance(member, Square):
                continue
            targets = getattr(member, "n_target_classes", None)
            if isinstance(targets, int) and targets > classes - 1:
                member = member.replace(n_target_classes=classes - 1)
            chosen.append((k, member))
        if not chosen:
            raise ValueError(
                "the model's output carries no gradient with respect to its inputs, and "
                f"{self!r} has no black-box member (Square) to attack it without one"
            )
        if not differentiable:
            skipped = [self.names[k] for k in range(len(self.names)) if k not in dict(chosen)]
            warn_failed(
                [
                    masking_check(
                        "zero_gradients",
                        False,
                        "the model's output carries no gradient with respect to its inputs "
                        "(computed under no_grad, detached or converted): the white-box "
                        f"members {skipped} were skipped and only Square attacked",
                    )
                ],
                stacklevel=6,  # one frame deeper than _run's: still the user's call
            )
        return chosen

    def _masking_gate(
        self,
        log: _MemberLog,
        evidence: MaskingEvidence,
        sweep: Callable[[Tensor], _Sweep],
        position: int,
        survivors: Tensor,
    ) -> bool:
        """``black_box="when_masked"``: Square runs only if a check failed or the loss
        looked flat."""
        if not isinstance(log.chosen[position][1], Square) or not log.white_box_ran:
            return True
        if self.check_large_eps:
            log.sweep = sweep(survivors)
        so_far = evidence + (log.sweep.evidence if log.sweep else MaskingEvidence())
        failed = any(check.passed is False for check in so_far.checks())
        return failed or log.flat > FLAT_LOSS_SHARE * max(log.white_box_survivors, 1)

    def _evidence(self, evidence: MaskingEvidence, log: _MemberLog) -> MaskingEvidence:
        """The checks' evidence of the whole run: the model-side ``evidence``, and what the
        members and the large-eps check found."""
        evidence = evidence + MaskingEvidence(black_box_fooled=log.black_box_fooled)
        if self.black_box == "when_masked":
            # The black-box check applies to the samples Square attacked, if it ran.
            evidence = replace(evidence, attacked=log.black_box_attacked)
        return evidence if log.sweep is None else evidence + log.sweep.evidence

    def _result(
        self,
        outcome: MembersOutcome,
        labels: Tensor,
        evidence: MaskingEvidence,
        log: _MemberLog,
    ) -> AutoAttackResult:
        """The result of a run whose members ``log.chosen`` left ``outcome``: ``member``,
        ``robust_after`` and ``member_work`` by the ensemble's indices."""
        sweep = log.sweep or _Sweep(MaskingEvidence(), 0, 0)
        ran = [k for k, _ in log.chosen]
        # Map the members that ran back to the ensemble's indices; skipped ones fool nobody.
        index_map = torch.tensor(ran, device=outcome.member.device)
        member = torch.where(
            outcome.member >= 0, index_map[outcome.member.clamp(min=0)], outcome.member
        )
        robust_of = dict(zip(ran, outcome.robust_after, strict=True))
        work_of = dict(zip(ran, outcome.member_work, strict=True))
        robust_after, last = [], outcome.member.shape[0]
        for k in range(len(self.attacks)):
            last = robust_of.get(k, last)  # a skipped member leaves the count as it was
            robust_after.append(last)
        return AutoAttackResult(
            adversarial=outcome.adversarial,
            success=self.is_success(outcome.logits, labels),
            logits=outcome.logits,
            success_step=outcome.success_step,
            # the checks' own forward+backward pass on the batch, and the large-eps PGD run
            grad_calls=outcome.grad_calls + 1 + sweep.grad_calls,
            grad_samples=outcome.grad_samples + labels.shape[0] + sweep.grad_samples,
            member=member,
            member_names=self.names,
            robust_after=tuple(robust_after),
            masking=evidence,
            member_work=tuple(work_of.get(k, ModelWork()) for k in range(len(self.attacks))),
        )
