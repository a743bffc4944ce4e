"""AutoAttack: the per-sample worst case over APGD-CE, APGD-T, FAB-T and Square, with checks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from advkit._checks import (
    EpsArg,
    check_bool,
    check_bounds,
    check_eps,
    check_eps_scale,
    check_int,
)
from advkit.attacks.apgd import APGD
from advkit.attacks.apgdt import APGDT
from advkit.attacks.base import Attack, AttackResult
from advkit.attacks.compose import run_members
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
from advkit.attacks.threat import Norm, threat_model

__all__ = ["MEMBER_NAMES", "VERSIONS", "AutoAttack", "AutoAttackResult"]

Version = Literal["standard", "plus", "rand", "custom"]

VERSIONS: dict[str, tuple[str, ...]] = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
}
"""The members of each version, in the order they run (the reference's ``attacks_to_run``)."""

MEMBER_NAMES = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
"""The names ``version="custom"`` accepts in ``attacks``."""

LARGE_EPS_STEPS = 20
"""Steps of the PGD run at a huge radius that checks that accuracy can reach ~0."""


def _member(name: str, version: str, common: dict[str, Any]) -> Attack:
    """The reference's settings of member ``name`` in ``version`` (custom takes plus's)."""
    restarts = 1 if version in ("standard", "rand") else 5
    if name in ("apgd-ce", "apgd-dlr"):
        loss = name.removeprefix("apgd-")
        if version == "rand":
            return APGD(steps=100, n_restarts=1, loss=loss, rho=0.75, eot_iter=20, **common)
        return APGD(steps=100, n_restarts=restarts, loss=loss, rho=0.75, **common)
    if name == "apgd-t":
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
    """

    member: Tensor
    member_names: tuple[str, ...]
    robust_after: tuple[int, ...]
    masking: MaskingEvidence

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
    width in L-inf, that times ``sqrt(d)`` in L2) on the samples that survived. Each failed
    check is raised as a :class:`~advkit.attacks.GradientMaskingWarning`; all are in the
    result (:class:`AutoAttackResult`).

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
        version: ``"standard"``, ``"plus"``, ``"rand"`` or ``"custom"``.
        attacks: For ``version="custom"`` only: member names or attack objects, in order.
        seed: Seed of the generator the random members draw from when
            :meth:`~advkit.attacks.Attack.run` gets none.
        bounds: The box ``(lo, hi)`` inputs live in.
        check_large_eps: Run the large-eps check on the samples that survive.
        progress: Show a progress bar over the members of each run.

    Raises:
        ValueError: If ``eps`` is negative or larger than the box, ``norm`` or ``version`` is
            unknown, ``attacks`` is missing for ``"custom"``, given for another version, empty
            or names an unknown member.
        TypeError: If an argument has the wrong type.

    References:
        Croce and Hein, "Reliable Evaluation of Adversarial Robustness with an Ensemble of
        Diverse Parameter-free Attacks", ICML 2020. Carlini et al., "On Evaluating Adversarial
        Robustness", arXiv:1902.06705, 2019 (the checks).

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
    ) -> None:
        self._record_settings(
            eps=eps, norm=norm, version=version, attacks=attacks, seed=seed, bounds=bounds,
            check_large_eps=check_large_eps, progress=progress,
        )  # fmt: skip
        eps = check_eps(eps)
        threat_model(norm)  # raises on an unknown norm
        check_eps_scale(eps, check_bounds(bounds), norm)  # before any member is built
        if version not in (*VERSIONS, "custom"):
            raise ValueError(f"version must be one of {[*VERSIONS, 'custom']}, got {version!r}")
        check_int(seed, "seed")
        check_bool(check_large_eps, "check_large_eps")
        check_bool(progress, "progress")
        common: dict[str, Any] = {"eps": eps, "norm": norm, "bounds": bounds}
        members = [(name, _member(name, version, common)) for name in self._names(version, attacks)]
        if version == "custom":
            for entry in attacks or ():
                if isinstance(entry, Attack):
                    if entry.targeted:
                        raise ValueError(f"members must be untargeted attacks, got {entry!r}")
                    member = entry.replace(**common)
                else:
                    member = _member(entry, "custom", common)
                name = _unique(_kind(member), [n for n, _ in members])
                members.append((name, member))
        super().__init__(eps=eps, norm=norm, bounds=bounds)
        self.attacks: tuple[Attack, ...] = tuple(member for _, member in members)
        self.names = tuple(name for name, _ in members)
        self.version = version
        self.seed = seed
        self.check_large_eps = check_large_eps
        self.progress = progress

    @staticmethod
    def _names(version: str, attacks: Sequence[str | Attack] | None) -> tuple[str, ...]:
        """The named members of ``version``; validates ``attacks``."""
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
            if isinstance(entry, Attack):
                continue
            if entry not in MEMBER_NAMES:
                raise ValueError(
                    f"unknown AutoAttack member {entry!r}: expected one of {list(MEMBER_NAMES)} "
                    "or an Attack object"
                )
        return ()

    def members(self) -> tuple[Attack, ...]:
        """The member attacks, in the order they run."""
        return self.attacks

    def iterate_count(self) -> int:
        """The points of all members: member ``k``'s points follow those of ``0 .. k-1``."""
        return sum(member.iterate_count() for member in self.attacks)

    @property
    def named_members(self) -> tuple[tuple[str, Attack], ...]:
        """``(name, attack)`` of every member, in the order they run."""
        return tuple(zip(self.names, self.attacks, strict=True))

    def _for_classes(self, classes: int, differentiable: bool) -> list[tuple[int, Attack]]:
        """The members to run on a model with ``classes`` outputs, by their index."""
        chosen = []
        for k, member in enumerate(self.attacks):
            if not differentiable and not isinstance(member, Square):
                continue
            targets = getattr(member, "n_target_classes", None)
            if isinstance(targets, int) and targets > classes - 1:
                member = member.replace(n_target_classes=classes - 1)
            chosen.append((k, member))
        return chosen

    def _large_eps(self, inputs: Tensor) -> float:
        lo, hi = self.bounds
        radius = (hi - lo) / 2
        return radius if self.norm == "Linf" else radius * math.sqrt(inputs[0].numel())

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
        if logits.shape[1] < 2:
            raise ValueError(
                "AutoAttack needs a classifier with at least 2 classes, the model returns "
                f"{logits.shape[1]} output per sample"
            )
        evidence = evidence + MaskingEvidence(
            attacked=inputs.shape[0], expects_randomness=self.version == "rand"
        )
        chosen = self._for_classes(logits.shape[1], differentiable)
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
                stacklevel=5,
            )
        if generator is None:
            generator = torch.Generator(device=inputs.device).manual_seed(self.seed)
        black_box_fooled = 0
        white_box_ran = False
        bar = tqdm(total=len(chosen), desc="AutoAttack", disable=not self.progress, leave=False)

        def on_member(position: int, survivors: Tensor, result: AttackResult) -> None:
            nonlocal black_box_fooled, white_box_ran
            member = chosen[position][1]
            if isinstance(member, Square):
                if white_box_ran:
                    black_box_fooled += int(result.fooled.sum())
            else:
                white_box_ran = True
            bar.update(1)
            bar.set_postfix_str(
                f"{self.names[chosen[position][0]]}: "
                f"{int((~result.fooled).sum())} of {inputs.shape[0]} robust"
            )

        with bar, probabilities_reported():  # the ``logits`` check reports it, once
            outcome = run_members(
                [member for _, member in chosen],
                model,
                inputs,
                labels,
                generator,
                early_stop,
                on_member,
            )
        grad_calls = outcome.grad_calls + 1
        grad_samples = outcome.grad_samples + inputs.shape[0]

        # Map the members that ran back to the ensemble's indices; skipped ones fool nobody.
        index_map = torch.tensor([k for k, _ in chosen], device=inputs.device)
        member = torch.where(
            outcome.member >= 0, index_map[outcome.member.clamp(min=0)], outcome.member
        )
        robust_after, last = [], inputs.shape[0]
        ran = dict(zip((k for k, _ in chosen), outcome.robust_after, strict=True))
        for k in range(len(self.attacks)):
            last = ran.get(k, last)
            robust_after.append(last)

        evidence = evidence + MaskingEvidence(black_box_fooled=black_box_fooled)
        if self.check_large_eps:
            radius = self._large_eps(inputs)
            survivors = (outcome.member < 0).nonzero().flatten()
            robust_large = 0
            if survivors.numel() > 0 and differentiable:
                with probabilities_reported():
                    sweep = PGD(
                        eps=radius, norm=self.norm, steps=LARGE_EPS_STEPS, bounds=self.bounds
                    ).run(model, inputs[survivors], labels[survivors], generator=generator)
                robust_large = int((~sweep.fooled).sum())
                grad_calls += sweep.grad_calls
                grad_samples += sweep.grad_samples
            elif survivors.numel() > 0:
                robust_large = survivors.numel()
            evidence = evidence + MaskingEvidence(
                large_eps=radius,
                large_eps_attacked=survivors.numel(),
                large_eps_robust=robust_large,
            )
        warn_failed(evidence.checks(), stacklevel=5)
        if not track:
            return outcome.adversarial, None
        base = outcome.result(self.is_success(outcome.logits, labels))
        return outcome.adversarial, AutoAttackResult(
            adversarial=base.adversarial,
            success=base.success,
            logits=base.logits,
            success_step=base.success_step,
            grad_calls=grad_calls,
            grad_samples=grad_samples,
            member=member,
            member_names=self.names,
            robust_after=tuple(robust_after),
            masking=evidence,
        )
