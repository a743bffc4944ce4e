"""Attacks built from attacks: the per-sample worst case over several, and transfer attacks.

Both are :class:`~advkit.attacks.Attack` subclasses, so an evaluator or a trainer uses them like
any single attack. Their :class:`~advkit.attacks.AttackResult` keeps the base meaning of
``success_step``: the index of the first visited point that fooled the *model passed at call
time*, or -1; ``fooled`` (``success_step >= 0``) is the robustness criterion.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from advkit._checks import EpsArg, check_logits, check_model
from advkit.attacks.base import Attack, AttackResult, ModelWork, check_attack

__all__ = ["Transfer", "WorstCase", "iterate_count"]


def iterate_count(attack: Attack) -> int:
    """How many points ``attack`` visits, counting its start: :meth:`Attack.iterate_count`."""
    return attack.iterate_count()


def _largest_eps(attacks: Sequence[Attack]) -> EpsArg:
    """The elementwise largest radius of ``attacks``: a float, or a per-sample tensor."""
    values = [attack.eps for attack in attacks]
    if not any(isinstance(value, Tensor) for value in values):
        return max(float(value) for value in values)
    try:
        return functools.reduce(torch.maximum, [torch.as_tensor(value) for value in values])
    except RuntimeError:
        shapes = [list(v.shape) if isinstance(v, Tensor) else "float" for v in values]
        raise ValueError(
            f"per-sample eps of the attacks must have one common length, got {shapes}"
        ) from None


class WorstCase(Attack):
    """Per-sample worst case over several attacks, run in order on the survivors.

    A sample counts as fooled if *any* member fools it, so it is robust only if it survives
    every attack. Each attack after the first runs only on the samples no earlier attack fooled,
    which saves their work and never changes the outcome: a sample once fooled stays fooled.

    ``success_step`` numbers the visited points across members: the points of member ``k`` come
    after those of members ``0 .. k-1`` (see :func:`iterate_count`). A fooled sample's
    ``adversarial`` comes from the first member that fooled it; a robust sample's from the last
    member. ``eps`` is the elementwise largest radius of the members, the ball every adversarial
    example lies in.

    Args:
        attacks: The attacks, at least one, all with the same ``bounds`` and ``targeted``
            setting. Each runs the model in its own ``model_mode``.

    Raises:
        ValueError: If ``attacks`` is empty, or the members disagree on ``bounds`` or
            ``targeted``, or their per-sample eps tensors differ in length.
        TypeError: If a member is not an :class:`~advkit.attacks.Attack`.

    References:
        Croce and Hein, "Reliable Evaluation of Adversarial Robustness with an Ensemble of
        Diverse Parameter-free Attacks", ICML 2020 (the per-sample worst case of AutoAttack).

    Example:
        >>> import torch
        >>> from advkit.attacks import FGSM, IFGSM
        >>> from advkit.attacks.compose import WorstCase
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
        >>> x, y = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])
        >>> attack = WorstCase([FGSM(eps=4 / 255), IFGSM(eps=4 / 255, steps=5)])
        >>> result = attack.run(model, x, y)
        >>> bool((result.fooled >= FGSM(eps=4 / 255).run(model, x, y).fooled).all())
        True
    """

    def __init__(self, attacks: Sequence[Attack]) -> None:
        if isinstance(attacks, Attack) or not isinstance(attacks, Sequence):
            raise TypeError(
                f"attacks must be a sequence of Attack objects, got {type(attacks).__name__}"
            )
        members = tuple(attacks)
        self._record_settings()  # a composite: replace() and repr() are its own
        if not members:
            raise ValueError("WorstCase needs at least one attack, got an empty sequence")
        for member in members:
            check_attack(member, "every member")
        first = members[0]
        for member in members[1:]:
            if member.bounds != first.bounds:
                raise ValueError(
                    f"all attacks must share bounds, got {first.bounds} and {member.bounds}"
                )
            if member.norm != first.norm:
                raise ValueError(
                    f"all attacks must share a norm, got {first.norm!r} and {member.norm!r}"
                )
            if member.targeted != first.targeted:
                raise ValueError(
                    "all attacks must be targeted or all untargeted, got a mix: "
                    f"{first!r} and {member!r}"
                )
        super().__init__(
            eps=_largest_eps(members),
            norm=first.norm,
            bounds=first.bounds,
            targeted=first.targeted,
        )
        self.attacks = members

    def replace(self, **changes: Any) -> Attack:
        """A copy with ``attacks`` replaced, or with every member's settings changed.

        ``worst.replace(eps=0.01)`` changes the radius of every member.
        """
        if "attacks" in changes:
            attacks = changes.pop("attacks")
            if changes:
                raise TypeError(
                    f"replace() takes either attacks or member settings, got both: {changes}"
                )
            return WorstCase(attacks)
        return WorstCase([member.replace(**changes) for member in self.attacks])

    def __repr__(self) -> str:
        return f"WorstCase([{', '.join(repr(member) for member in self.attacks)}])"

    def members(self) -> tuple[Attack, ...]:
        """The member attacks, in the order they run."""
        return self.attacks

    def iterate_count(self) -> int:
        """The points of all members: member ``k``'s points follow those of ``0 .. k-1``."""
        return sum(member.iterate_count() for member in self.attacks)

    def restrict(self, index: Tensor, batch: int) -> Attack:
        """Every member restricted to the samples ``index``."""
        return WorstCase([member.restrict(index, batch) for member in self.attacks])

    def _run(
        self,
        model: nn.Module,
        inputs: Tensor,
        labels: Tensor,
        generator: torch.Generator | None,
        early_stop: bool,
        track: bool,
    ) -> tuple[Tensor, AttackResult | None]:
        outcome = run_members(self.attacks, model, inputs, labels, generator, early_stop)
        if not track:
            return outcome.adversarial, None
        return outcome.adversarial, AttackResult(
            adversarial=outcome.adversarial,
            success=self.is_success(outcome.logits, labels),
            logits=outcome.logits,
            success_step=outcome.success_step,
            grad_calls=outcome.grad_calls,
            grad_samples=outcome.grad_samples,
        )


@dataclass(frozen=True)
class MembersOutcome:
    """What :func:`run_members` found: the fields of an :class:`AttackResult`, and ``member``.

    ``member[i]`` is the index of the member that fooled sample ``i``, or -1 if none did.
    ``robust_after[k]`` is how many samples were still robust after member ``k`` (the members
    after the last one that ran, when every sample was fooled, count 0). ``member_work[k]``
    is the model work of member ``k`` (nothing for a member that did not run).
    """

    adversarial: Tensor
    logits: Tensor
    success_step: Tensor
    member: Tensor
    robust_after: tuple[int, ...]
    grad_calls: int
    grad_samples: int
    member_work: tuple[ModelWork, ...] = ()


MemberObserver = Callable[[int, Tensor, AttackResult], None]
"""``on_member(k, survivors, result)``: member ``k`` ran on the batch positions ``survivors``."""

MemberGate = Callable[[int, Tensor], bool]
"""``gate(k, survivors)``: whether member ``k`` runs on the batch positions ``survivors``."""


def run_members(
    members: Sequence[Attack],
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    generator: torch.Generator | None,
    early_stop: bool,
    on_member: MemberObserver | None = None,
    gate: MemberGate | None = None,
) -> MembersOutcome:
    """The loop of :class:`WorstCase`: each member in turn on the samples no earlier one fooled.

    Shared by every per-sample worst case (:class:`WorstCase`, AutoAttack); ``on_member`` is
    called after each member that ran. ``gate``, when given, decides before each member
    whether it runs (the first member always runs; a member it skips fools nobody and keeps
    its range of points).
    """
    batch = inputs.shape[0]
    adversarial = inputs.clone()
    logits: Tensor | None = None
    success_step = torch.full((batch,), -1, dtype=torch.long, device=inputs.device)
    member_of = torch.full((batch,), -1, dtype=torch.long, device=inputs.device)
    survivors = torch.arange(batch, device=inputs.device)
    robust_after: list[int] = []
    member_work: list[ModelWork] = []
    offset = grad_calls = grad_samples = 0
    for k, member in enumerate(members):
        work = ModelWork()  # a member that does not run (nobody left, or gated) fools nobody
        if survivors.numel() > 0 and (gate is None or logits is None or gate(k, survivors)):
            result = member.restrict(survivors, batch).run(
                model,
                inputs[survivors],
                labels[survivors],
                generator=generator,
                early_stop=early_stop,
            )
            if logits is None:
                logits = result.logits.new_empty(batch, result.logits.shape[1])
            adversarial[survivors] = result.adversarial
            logits[survivors] = result.logits
            fooled = result.fooled
            success_step[survivors] = torch.where(fooled, result.success_step + offset, -1)
            member_of[survivors[fooled]] = k
            if on_member is not None:
                on_member(k, survivors, result)
            survivors = survivors[~fooled]
            work = result.work
            grad_calls += result.grad_calls
            grad_samples += result.grad_samples
        robust_after.append(survivors.numel())
        member_work.append(work)
        offset += member.iterate_count()
    assert logits is not None  # internal invariant: the first member always runs
    return MembersOutcome(
        adversarial=adversarial,
        logits=logits,
        success_step=success_step,
        member=member_of,
        robust_after=tuple(robust_after),
        grad_calls=grad_calls,
        grad_samples=grad_samples,
        member_work=tuple(member_work),
    )


class Transfer(Attack):
    """Craft adversarial examples on a surrogate model, then judge them on the target model.

    This is the black-box transfer setting: the target model passed at call time is only
    queried for predictions, never differentiated. From the target's point of view the attack
    visits two points, the clean input (``success_step`` 0, if the target already misclassifies
    it) and the transferred example (``success_step`` 1).

    The inner attack always runs to its end on the surrogate: stopping it once the *surrogate*
    is fooled would weaken the example sent to the target. ``early_stop=True`` only skips the
    crafting for samples the target already misclassifies; they keep the clean input.

    ``grad_calls`` and ``grad_samples`` count the surrogate's forward+backward passes.

    Args:
        surrogate: The model the adversarial examples are crafted on. Its training flags
            are left as they were.
        attack: The white-box attack run on the surrogate; ``eps``, ``bounds`` and
            ``targeted`` are taken from it.

    Raises:
        TypeError: If ``surrogate`` is not an ``nn.Module`` or ``attack`` not an Attack.

    References:
        Papernot, McDaniel and Goodfellow, "Transferability in Machine Learning: from Phenomena
        to Black-Box Attacks using Adversarial Samples", arXiv:1605.07277, 2016.

    Example:
        >>> import torch
        >>> from advkit.attacks import IFGSM
        >>> from advkit.attacks.compose import Transfer
        >>> surrogate = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
        >>> target = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
        >>> x, y = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])
        >>> result = Transfer(surrogate, IFGSM(eps=8 / 255, steps=3)).run(target, x, y)
        >>> sorted(set(result.success_step.tolist()) - {-1, 0, 1})
        []
    """

    def __init__(self, surrogate: nn.Module, attack: Attack) -> None:
        check_model(surrogate, "surrogate")
        check_attack(attack)
        self._record_settings()  # a composite: replace() and repr() are its own
        super().__init__(
            eps=attack.eps, norm=attack.norm, bounds=attack.bounds, targeted=attack.targeted
        )
        self.surrogate = surrogate
        self.attack = attack

    def replace(self, **changes: Any) -> Attack:
        """A copy with ``surrogate`` or ``attack`` replaced, or the inner attack's settings changed.

        ``transfer.replace(eps=0.01)`` changes the radius of the inner attack.
        """
        surrogate = changes.pop("surrogate", self.surrogate)
        attack = changes.pop("attack", self.attack)
        if changes:
            attack = attack.replace(**changes)
        return Transfer(surrogate, attack)

    def __repr__(self) -> str:
        return f"Transfer(surrogate={type(self.surrogate).__name__}, attack={self.attack!r})"

    def members(self) -> tuple[Attack, ...]:
        """The inner attack run on the surrogate."""
        return (self.attack,)

    def surrogates(self) -> tuple[nn.Module, ...]:
        """The models this attack differentiates instead of the target: its surrogate."""
        return (self.surrogate,)

    def restrict(self, index: Tensor, batch: int) -> Attack:
        """The inner attack restricted to the samples ``index``."""
        return Transfer(self.surrogate, self.attack.restrict(index, batch))

    def _predict(self, model: nn.Module, inputs: Tensor, labels: Tensor) -> Tensor:
        with torch.no_grad():
            logits = model(inputs)
        check_logits(logits, inputs.shape[0], labels)
        return logits.detach()

    def _run(
        self,
        model: nn.Module,
        inputs: Tensor,
        labels: Tensor,
        generator: torch.Generator | None,
        early_stop: bool,
        track: bool,
    ) -> tuple[Tensor, AttackResult | None]:
        logits = self._predict(model, inputs, labels)
        fooled_clean = self.is_success(logits, labels)
        craft = ~fooled_clean if early_stop else torch.ones_like(fooled_clean)
        adversarial = inputs.clone()
        grad_calls = grad_samples = 0
        if bool(craft.any()):
            inner = self.attack.restrict(craft.nonzero().flatten(), inputs.shape[0])
            crafted = inner.run(self.surrogate, inputs[craft], labels[craft], generator=generator)
            adversarial[craft] = crafted.adversarial
            logits[craft] = self._predict(model, crafted.adversarial, labels[craft])
            grad_calls, grad_samples = crafted.grad_calls, crafted.grad_samples
        if not track:
            return adversarial, None
        success = self.is_success(logits, labels)
        success_step = torch.where(fooled_clean, 0, torch.where(success, 1, -1))
        return adversarial, AttackResult(
            adversarial=adversarial,
            success=success,
            logits=logits,
            success_step=success_step,
            grad_calls=grad_calls,
            grad_samples=grad_samples,
        )
