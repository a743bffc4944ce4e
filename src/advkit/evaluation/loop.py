"""The one evaluation loop: every robustness number of advkit goes through it.

:class:`EvaluationLoop` is the pass over a loader that every evaluation function makes, and
:func:`attack_batch` the one per-batch step of robust accuracy, which the
:class:`~advkit.training.Trainer`'s adversarial metrics and
:class:`~advkit.training.OverfittingGuard` call too: they all count the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn

from advkit._checks import check_batch, check_bool_tensor, check_model
from advkit._guard import model_state
from advkit.attacks import Attack, AttackResult, CheckOutcome, warn_failed
from advkit.evaluation._runtime import WorkCount, model_device, predict_correct
from advkit.evaluation.distributed import Shard, shard_loader
from advkit.evaluation.sanity import ThreatModelCheck, check_eval_mode

__all__ = ["BatchOutcome", "EvaluationBatch", "EvaluationLoop", "LoopTotals", "attack_batch"]


@dataclass(frozen=True)
class BatchOutcome:
    """What :func:`attack_batch` found on one batch.

    Attributes:
        attacked: Per-sample bool ``[N]``: the samples that were attacked (by default those
            the model classifies correctly).
        robust: Per-sample bool ``[N]``: attacked and never fooled by any point the attack
            visited (``AttackResult.fooled``).
        result: The attack's result on the attacked samples (in their order), or ``None``
            when no sample was attacked.
        work: The passes through the model it took (the clean forward pass, if it made one,
            and the attack's).
    """

    attacked: Tensor
    robust: Tensor
    result: AttackResult | None
    work: WorkCount


def attack_batch(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    attack: Attack,
    *,
    attacked: Tensor | None = None,
    generator: torch.Generator | None = None,
    early_stop: bool = True,
    threat: ThreatModelCheck | None = None,
) -> BatchOutcome:
    """The one per-batch step of robust accuracy: attack the samples the model gets right.

    Only correctly classified samples are attacked (the others are not robust whatever the
    attack does); a sample is robust if it is one of them and the attack never fooled the
    model at any point it visited. The model is used as it is (callers put it in eval mode).

    Args:
        model: A classifier returning ``[N, C]`` logits.
        inputs: The batch's inputs, inside the attack's bounds.
        labels: Their true labels ``[N]``.
        attack: An untargeted attack.
        attacked: Per-sample bool ``[N]`` of the samples to attack, when the caller knows them
            already (the clean predictions it made itself, or those some other model gets
            right); ``None`` to predict them here with one gradient-free forward pass.
        generator: Randomness for the attack's random starts.
        early_stop: Stop attacking a sample once it is fooled (exact, less work).
        threat: A sanity tally the adversarial examples are checked against (box and ball).

    Returns:
        The attacked and robust masks, the attack's result and the work.

    Raises:
        TypeError: If the batch's tensors have the wrong type or dtype, or ``attacked`` is
            not a bool tensor.
        ValueError: If the batch is malformed or outside the attack's bounds, or ``attacked``
            does not have one entry per sample.

    Example:
        >>> import torch
        >>> from advkit.attacks import IFGSM
        >>> from advkit.evaluation import attack_batch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
        >>> x = torch.rand(8, 3, 2, 2)
        >>> outcome = attack_batch(model, x, model(x).argmax(1), IFGSM(eps=0.0, steps=2))
        >>> int(outcome.attacked.sum()), int(outcome.robust.sum())
        (8, 8)
    """
    check_batch(inputs, labels, attack.bounds)
    work = WorkCount()
    if attacked is None:
        attacked = predict_correct(model, inputs, labels)
        work += WorkCount.forward(labels.shape[0])
    elif check_bool_tensor(attacked, "attacked").shape != labels.shape:
        raise ValueError(
            f"attacked must have shape [{labels.shape[0]}] (one per sample), got "
            f"{list(attacked.shape)}"
        )
    attacked = attacked.to(inputs.device)
    robust = torch.zeros_like(attacked)
    kept = attacked.nonzero().flatten()
    if kept.numel() == 0:
        return BatchOutcome(attacked, robust, None, work)
    result = attack.run(
        model, inputs[kept], labels[kept], generator=generator, early_stop=early_stop
    )
    robust[kept] = ~result.fooled
    if threat is not None:
        threat.update(inputs[kept], result.adversarial, attack.eps)
    return BatchOutcome(attacked, robust, result, work + WorkCount.of_attack(result))


@dataclass(frozen=True)
class EvaluationBatch:
    """One batch of an :class:`EvaluationLoop`, checked and on the models' device.

    Attributes:
        inputs: The batch's inputs.
        labels: Their labels (int64).
        correct: ``[J, N]`` bool: ``correct[j]`` is whether judged model ``j`` classifies each
            sample correctly (one gradient-free forward pass each).
        generator: The batch's generator (seeded by the evaluation's generator and the batch's
            index in the whole loader), or ``None``; draw all of the batch's randomness from it.
        index: The batch's index in the whole loader.
    """

    inputs: Tensor
    labels: Tensor
    correct: Tensor
    generator: torch.Generator | None
    index: int


@dataclass(frozen=True)
class LoopTotals:
    """The global counts of an :class:`EvaluationLoop`, summed over every process.

    Attributes:
        clean: Correctly classified samples, per judged model.
        total: Samples evaluated.
        work: Passes through the models, the loop's clean passes and everything added to
            :attr:`EvaluationLoop.work`.
        counts: The caller's own counts, by the names it passed to
            :meth:`EvaluationLoop.totals` (ints stay ints, tensors become ``int64`` tensors).
    """

    clean: list[int]
    total: int
    work: WorkCount
    counts: dict[str, Any] = field(default_factory=dict)


class EvaluationLoop:
    """One pass of an evaluation over a loader: the loop every evaluation of advkit runs.

    Use it as a context manager and iterate over it; after the block, :meth:`totals` gives
    the global counts (one exact ``all_reduce`` under ``torchrun``) and :attr:`shard` the
    sums and gathers of the caller's own tallies. Inside the block the models run in eval
    mode (their flags, and the buffers of train-mode layers, are restored after), and each
    batch is checked against ``bounds`` (types, shapes, NaNs, the box) before any model sees it.

    Args:
        loader: Iterable of ``(inputs, labels)`` batches, the same on every process.
        judges: The models whose clean accuracy is measured on every batch; may be empty
            when the caller judges each batch itself (certification), with the model in
            ``held``.
        call: What is evaluated, compared between the processes and named in messages.
        bounds: The box every input must lie in (the attack's), or ``None`` not to check it.
        held: Further models kept in eval mode during the loop (surrogates).
        distributed: ``None`` to shard the loader exactly when several processes run,
            ``False`` to evaluate all of it here, ``True`` to require several processes.
        generator: The evaluation's generator (see :attr:`Shard.generator`).
        progress: Show a progress bar (rank 0 only).
        description: The progress bar's label.

    Attributes:
        work: The passes through the models so far; the loop adds its clean passes, the
            caller adds its attacks' work.

    Raises:
        TypeError: If a model is not an ``nn.Module``.
        ValueError: If ``judges`` and ``held`` are both empty.

    Example:
        >>> import torch
        >>> from advkit.evaluation import EvaluationLoop
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> x = torch.rand(6, 4)
        >>> with EvaluationLoop([(x, model(x).argmax(1))], [model], call="demo",
        ...                     progress=False) as loop:
        ...     for batch in loop:
        ...         pass
        >>> loop.totals().clean, loop.totals().total
        ([6], 6)
    """

    def __init__(
        self,
        loader: Iterable[Any],
        judges: Sequence[nn.Module],
        *,
        call: str,
        bounds: tuple[float, float] | None = None,
        held: Sequence[nn.Module] = (),
        distributed: bool | None = None,
        generator: torch.Generator | None = None,
        progress: bool = True,
        description: str = "evaluate",
    ) -> None:
        if isinstance(judges, nn.Module) or not isinstance(judges, Sequence):
            raise ValueError(f"judges must be a sequence of models, got {judges!r}")
        if not judges and not held:
            raise ValueError("an evaluation needs a model: judges and held are both empty")
        for i, model in enumerate([*judges, *held]):
            check_model(model, f"model {i}")
        self.judges = tuple(judges)
        self.models = tuple({id(m): m for m in [*judges, *held]}.values())
        self.loader = loader
        self.call = call
        self.bounds = bounds
        self.distributed = distributed
        self.generator = generator
        self.progress = progress
        self.description = description
        self.device = model_device(self.models[0])
        self.work = WorkCount()
        self._clean = torch.zeros(len(self.judges), dtype=torch.long)
        self._total = 0
        self._shard: Shard | None = None
        self._stack = ExitStack()

    @property
    def shard(self) -> Shard:
        """This process's share of the loader (for the caller's own sums and gathers)."""
        if self._shard is None:
            raise RuntimeError("the loop has not started: use it in a with block")
        return self._shard

    def __enter__(self) -> EvaluationLoop:
        with ExitStack() as stack:
            stack.enter_context(model_state(*self.models))
            self._shard = stack.enter_context(
                shard_loader(
                    self.loader,
                    call=self.call,
                    distributed=self.distributed,
                    device=self.device,
                    generator=self.generator,
                    models=self.models,
                )
            )
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        return self._stack.__exit__(kind, error, traceback)

    def __iter__(self) -> Iterator[EvaluationBatch]:
        shard = self.shard
        for inputs, labels in shard.batches(
            self.device, progress=self.progress, description=self.description
        ):
            if self.bounds is not None:
                check_batch(inputs, labels, self.bounds)  # every input, attacked or not
            n = labels.shape[0]
            correct = torch.zeros(len(self.judges), n, dtype=torch.bool, device=labels.device)
            for j, model in enumerate(self.judges):
                correct[j] = predict_correct(model, inputs, labels)
                self.work += WorkCount.forward(n)
            self._total += n
            self._clean += correct.sum(dim=1).cpu()
            yield EvaluationBatch(inputs, labels, correct, shard.generator, shard.index)

    def totals(self, counts: Mapping[str, int | Tensor] | None = None) -> LoopTotals:
        """The global clean and total counts, work and ``counts``, in one exact sum.

        Call it on every process, after the ``with`` block.

        Args:
            counts: The caller's own integer counts (ints or integer tensors) by name.

        Raises:
            ValueError: If a name of ``counts`` clashes with the loop's own.
            TypeError: If a count is not an int or an integer tensor.
        """
        counts = dict(counts or {})
        own = {"_clean": self._clean, "_total": self._total} | {
            f"_{k}": v for k, v in self.work.counts().items()
        }
        clash = sorted(set(counts) & set(own))
        if clash:
            raise ValueError(f"counts may not use the loop's own names {clash}")
        sums = self.shard.sum(own | counts)
        work = WorkCount.from_counts({k: sums.pop(f"_{k}") for k in self.work.counts()})
        clean = sums.pop("_clean").tolist()
        total = sums.pop("_total")
        return LoopTotals(clean=clean, total=total, work=work, counts=sums)


class SanityLoop(EvaluationLoop):
    """An :class:`EvaluationLoop` under an attack, with the sanity checks every attack runs.

    The models ``named`` (judges, surrogates) are checked as handed in (eval mode) and held in
    eval mode; the adversarial examples are tallied by :attr:`threat` (pass it to
    :func:`attack_batch`); :meth:`checks` gives the outcomes over every process.
    """

    def __init__(
        self,
        loader: Iterable[Any],
        judges: Sequence[nn.Module],
        attack: Attack,
        named: Mapping[str, nn.Module],
        *,
        call: str,
        description: str,
        distributed: bool | None,
        generator: torch.Generator | None,
        progress: bool,
    ) -> None:
        self.mode_check = check_eval_mode(dict(named), [attack])
        self.threat = ThreatModelCheck(attack)
        super().__init__(
            loader, judges, call=call, bounds=attack.bounds, held=list(named.values()),
            distributed=distributed, generator=generator, progress=progress,
            description=description,
        )  # fmt: skip

    def checks(self, *more: CheckOutcome) -> tuple[CheckOutcome, ...]:
        """The eval-mode check, ``more`` and the threat checks; each failure is warned about.

        Call it on every process after :meth:`~EvaluationLoop.totals` (it sums the tallies).
        """
        self.threat.all_reduce(self.shard)
        checks = (self.mode_check, *more, *self.threat.results())
        warn_failed(checks, stacklevel=4)  # at the evaluation's caller
        return checks
