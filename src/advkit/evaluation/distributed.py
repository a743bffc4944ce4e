"""Evaluation under ``torchrun``: every process evaluates a shard, every process gets the sum.

Inside a process group of ``W`` processes (``torchrun --nproc_per_node W``, gloo on the CPU,
NCCL on GPUs) every evaluation function of :mod:`advkit.evaluation` shards its loader, and the
result each process returns is the result on the whole loader:

- **Whole batches, round robin.** Process ``r`` evaluates the loader's batches ``r``,
  ``r + W``, ``r + 2W``, ... A ``DataLoader`` over a map-style data set is rebuilt around this
  process's batches of indices, so a process reads only its own images. There is no
  ``DistributedSampler`` and no padding: every sample is evaluated exactly once, whatever the
  data set size. Every process passes the same, unsharded loader (a loader with a
  ``DistributedSampler`` is refused, since it already holds only a share).
- **Exact global results.** Counts (correct, robust, per-cell counts, sanity-check tallies,
  work) are integers summed with ``all_reduce``; the worst excess over the eps-ball is a
  maximum. Accuracies, Wilson intervals and sanity checks are computed from the global counts,
  so they equal the single-process result on the same loader exactly.
- **Randomness per batch.** A ``generator`` handed to an evaluation is drawn from once, the
  same way on every process; each batch's random starts then come from a generator seeded by
  that draw and the batch's index in the whole loader. A seeded evaluation therefore gives the
  same result with any number of processes (and a different one for another batch size, as
  before). Without a ``generator``, random starts come from each process's global RNG and
  depend on the number of processes.
- **The same model and data everywhere.** At the start the processes compare what they were
  called with (the function, the attack, the number of batches, the order of the samples, the
  generator's draw), the models' weights (:func:`weights_checksum`, exact, computed on the
  device) and the data (a checksum of the first sample of a map-style loader; for any other
  iterable, which every process reads whole, a checksum of every batch's inputs and labels,
  compared at the end), and all stop with a ``ValueError`` naming the difference: loaders of
  the same length over different data, or models initialized without a common seed, would
  otherwise give every process a mixed result.
- **No hang.** Processes talk only when an evaluation starts and ends, never per batch, and on
  gloo every collective is preceded by a barrier with a timeout (environment variable
  ``ADVKIT_EVAL_TIMEOUT``, a finite number of seconds, default 600) whose error names the
  evaluation and the ranks that did not arrive: a process that stalls inside the model's
  forward pass or a data worker, or never calls the evaluation, stops the others with a
  ``RuntimeError`` instead of leaving them waiting. The processes must therefore finish their
  shares within that time of each other. An exception on one process (a malformed batch) is
  exchanged at the end, so the others stop too with its message (or, if they are more than
  the timeout behind, with the timeout's). NCCL has no such barrier: there a process waits
  until the process group's timeout (``timeout`` of ``init_process_group``, 10 minutes by
  default), when NCCL's watchdog aborts it with a collective-timeout error.

Pass ``distributed=False`` to an evaluation function to evaluate the whole loader in this
process alone (for instance on rank 0 only); ``None`` (the default) shards exactly when more
than one process runs, as :class:`~advkit.training.Trainer` does.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset

from advkit._checks import check_model, check_pair
from advkit._process import ProcessContext, resolve_context, samplers
from advkit._progress import Progress

__all__ = ["TIMEOUT_ENV", "Shard", "shard_loader", "weights_checksum"]

TIMEOUT_ENV = "ADVKIT_EVAL_TIMEOUT"
"""Environment variable: seconds the processes wait for each other at each collective of an
evaluation (its start, its end, every exchange of results; gloo only; default 600; a finite
number > 0)."""

_DEFAULT_TIMEOUT_S = 600.0
_MAX_TIMEOUT_S = 7 * 24 * 3600.0
_SEED_BITS = 62
_MISSING = re.compile(r"Ranks? ([\d, ]+?) failed to pass monitoredBarrier")


def _timeout() -> timedelta:
    text = os.environ.get(TIMEOUT_ENV)
    if text is None:
        return timedelta(seconds=_DEFAULT_TIMEOUT_S)
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not (seconds > 0 and math.isfinite(seconds)) or seconds > _MAX_TIMEOUT_S:
        raise ValueError(
            f"environment variable {TIMEOUT_ENV} must be a finite number of seconds > 0 (at "
            f"most {_MAX_TIMEOUT_S:g}, a week), got {text!r}: every wait of an evaluation "
            "must end, so that a stalled process is reported instead of hanging the others"
        )
    return timedelta(seconds=seconds)


def _batch_seed(base: int, index: int) -> int:
    digest = hashlib.sha256(f"{base}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> (64 - _SEED_BITS)


def _order_digest(index_batches: Sequence[Sequence[int]]) -> str:
    """A digest of the loader's batches of sample indices: equal iff the same order."""
    digest = hashlib.sha256()
    for indices in index_batches:
        digest.update(torch.as_tensor(list(indices), dtype=torch.long).numpy().tobytes())
        digest.update(b"|")
    return digest.hexdigest()[:16]


def _rebuilt(loader: DataLoader[Any], batch_sampler: list[list[int]]) -> DataLoader[Any]:
    """``loader`` with its batches of indices replaced, every other setting kept."""
    workers = loader.num_workers
    return DataLoader(
        loader.dataset,
        batch_sampler=batch_sampler,
        num_workers=workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context if workers else None,
        generator=loader.generator,
        prefetch_factor=loader.prefetch_factor if workers else None,
        persistent_workers=loader.persistent_workers if workers else False,
        pin_memory_device=loader.pin_memory_device,
    )


_MODULUS = 65521  # the largest prime below 2**16: position weights of the checksum
_CHUNK = 1 << 22  # elements per step of a checksum


def weights_checksum(model: nn.Module) -> str:
    """A cheap, exact checksum of a model's parameters and buffers, equal iff their bits are.

    Each tensor's bits (its floats read as integers) are summed with position weights in
    ``int64`` on the tensor's own device (integer sums are exact and do not depend on the
    order of the reduction), so nothing is copied to the host but one number per tensor; the
    names, shapes and dtypes enter the digest too.

    Args:
        model: The model.

    Returns:
        A 16-character hex digest.

    Raises:
        TypeError: If ``model`` is not an ``nn.Module``.

    Example:
        >>> import torch
        >>> from advkit.evaluation import weights_checksum
        >>> a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
        >>> _ = b.load_state_dict(a.state_dict())
        >>> weights_checksum(a) == weights_checksum(b)
        True
    """
    check_model(model)
    digest = hashlib.sha256()
    sums = []
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers()]
    for name, tensor in named:
        digest.update(f"{name}:{list(tensor.shape)}:{tensor.dtype}|".encode())
        sums.append(_tensor_sum(tensor.detach()))
    if sums:
        digest.update(torch.stack(sums).cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _tensor_sum(tensor: Tensor) -> Tensor:
    """``sum(bits[i] * (i % p + 1))`` in wrapping ``int64``, on the tensor's device."""
    flat = tensor.reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    if flat.is_complex():
        flat = torch.view_as_real(flat).reshape(-1)
    if flat.is_floating_point():
        bits = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
        flat = flat.view(bits[flat.element_size()])
    total = torch.zeros((), dtype=torch.int64, device=flat.device)
    for start in range(0, flat.numel(), _CHUNK):  # bounded memory for huge tensors
        chunk = flat[start : start + _CHUNK].to(torch.int64)
        weights = torch.arange(start, start + chunk.numel(), device=flat.device) % _MODULUS + 1
        total += (chunk * weights).sum()
    return total


def _digest_int(data: bytes) -> Tensor:
    """A 56-bit integer digest of ``data``, as an int64 tensor."""
    digest = hashlib.sha256(data).digest()
    return torch.tensor(int.from_bytes(digest[:7], "little"), dtype=torch.int64)


def _content_sum(item: Any) -> Tensor:
    """An exact int64 checksum of a batch or sample: its tensors' bits, numbers and strings."""
    if isinstance(item, Tensor):
        return _tensor_sum(item.detach()) * 31 + len(item.shape)
    if isinstance(item, bool | int | float | str | bytes):
        return _digest_int(repr(item).encode())
    if callable(getattr(item, "tobytes", None)):  # NumPy arrays and scalars, PIL images
        return _digest_int(type(item).__name__.encode() + bytes(item.tobytes()))
    if isinstance(item, Mapping):
        item = [
            value for pair in sorted(item.items(), key=lambda kv: repr(kv[0])) for value in pair
        ]
    if isinstance(item, Sequence):
        total = torch.tensor(len(item), dtype=torch.int64)
        for position, part in enumerate(item):
            total = total + _content_sum(part) * (position + 2)
        return total
    return torch.tensor(0, dtype=torch.int64)  # (an object without a stable checksum)


class Shard:
    """This process's share of a loader, and the exact sums that make the result global.

    Use it as a context manager around the loop over :meth:`batches`; after the block, make
    the per-process tallies global with :meth:`sum`, :meth:`max` and :meth:`gather`. Outside a
    process group (or with ``distributed=False``) it is the whole loader, and the reductions
    return their input. Every process must make the same calls in the same order.
    Build it with :func:`shard_loader`.

    Attributes:
        call: What was called, e.g. ``"robust_accuracy(PGD(eps=0.03, ...))"`` (for messages).
        rank: This process's index, 0 when not distributed.
        world_size: Number of processes, 1 when not distributed.
        distributed: Whether the loader is shared among several processes.
    """

    def __init__(
        self,
        loader: Iterable[Any],
        context: ProcessContext,
        call: str,
        generator: torch.Generator | None,
        models: Sequence[nn.Module] = (),
    ) -> None:
        self.call = call
        self._models = tuple(models)
        self.rank, self.world_size = context.rank, context.world_size
        self.distributed = context.distributed
        self._context = context
        self._loader = loader
        self._user_generator = generator
        self._base_seed: int | None = None
        self._index = -1  # global index of the batch being evaluated
        self._local: Iterable[Any] = loader
        self._indices: list[int] = []  # global indices of this process's batches, in order
        self._known: list[int] | None = None  # the same, when known before iterating
        self._total: int | None = None  # batches in the whole loader, when known
        self._order: str | None = None
        self._generic = False
        self._pending: list[int] = []
        self._digests: list[Tensor] = []  # checksum of every batch read (the generic case)
        self._probe: int | None = None  # checksum of the first sample, a map-style loader

    # -- setting up -------------------------------------------------------------------------

    def _open(self) -> None:
        generator = self._user_generator
        if generator is not None:
            draw = torch.randint(
                0, 2**_SEED_BITS, (1,), generator=generator, device=generator.device
            )
            self._base_seed = int(draw.item())
        if not self.distributed:
            return
        self._plan_loader()
        self._handshake()

    def _plan_loader(self) -> None:
        loader, rank, world = self._loader, self.rank, self.world_size
        if isinstance(loader, DataLoader) and any(
            isinstance(s, DistributedSampler) for s in samplers(loader)
        ):
            raise ValueError(
                f"{self.call}: the loader has a DistributedSampler, so it holds only this "
                "process's share (padded with repeated samples); pass the same unsharded "
                "loader on every process: the evaluation shards it by whole batches itself"
            )
        if (
            isinstance(loader, DataLoader)
            and loader.batch_sampler is not None
            and not isinstance(loader.dataset, IterableDataset)
        ):
            index_batches = [list(b) for b in loader.batch_sampler]
            self._total = len(index_batches)
            if index_batches and index_batches[0]:
                self._probe = int(_content_sum(loader.dataset[index_batches[0][0]]))
            self._order = _order_digest(index_batches)
            self._known = list(range(rank, self._total, world))
            self._local = _rebuilt(loader, [index_batches[i] for i in self._known])
            return
        # Any other iterable: every process reads it all and keeps its own batches.
        self._generic = True
        if not isinstance(loader, Tensor):
            with contextlib.suppress(TypeError):  # an iterable without a length
                self._total = len(loader)  # type: ignore[arg-type]

    def _handshake(self) -> None:
        """Meet the other processes (with a timeout on gloo) and compare what each was given."""
        self._meet("the start of the evaluation")
        mine = {
            "call": self.call,
            "batches": self._total,
            "order": self._order,
            "seed": self._base_seed,
            "weights": [weights_checksum(model) for model in self._models],
            "data": self._probe,
        }
        everyone = self._context.gather_objects(mine)
        labels = {
            "call": "the call",
            "batches": "the number of batches of the loader",
            "order": "the order of the loader's samples (a shuffling sampler without a common "
            "seed?)",
            "seed": "the generator's state (seed it the same way on every process)",
            "weights": "the models' weights (a checksum of every parameter and buffer): each "
            "process holds another model, so the result would mix them (seed the model's "
            "initialization, or load the same checkpoint on every process)",
            "data": "the loader's data (a checksum of its first sample): each process reads "
            "another data set, so the result would mix them (seed the data, or read the same "
            "files; an evaluation loader must not draw random transforms)",
        }
        for key, label in labels.items():
            values = [entry[key] for entry in everyone]
            if any(v != values[0] for v in values):
                shown = ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values))
                raise ValueError(
                    f"{self.call}: the processes differ in {label} ({shown}); under torchrun "
                    "every process must make the same call with the same unsharded loader"
                )

    def _meet(self, phase: str) -> None:
        """Wait for every process at ``phase``, at most :data:`TIMEOUT_ENV` seconds (gloo).

        Every collective of an evaluation is preceded by this barrier, so a process that
        stalls (in the model's forward, in a data worker) or never calls is reported by rank,
        instead of leaving the others waiting forever.
        """
        if dist.get_backend() != "gloo":
            return  # NCCL has no monitored barrier: its own watchdog timeout applies
        timeout = _timeout()
        try:
            dist.monitored_barrier(timeout=timeout, wait_all_ranks=True)
        except RuntimeError as err:
            text = str(err)
            found = _MISSING.search(text)
            if found:
                who = f"rank(s) {found.group(1).strip()}"
            elif self.rank != 0:
                who = "rank 0 (which checks on the others) or another rank"
            else:
                who = "some rank"
            raise RuntimeError(
                f"{self.call} on rank {self.rank}: {who} did not reach {phase} within "
                f"{timeout.total_seconds():g} s: that process stalled (in the model's forward "
                "pass, a data loader worker, a dead device) or does not run this evaluation. "
                "Under torchrun every process must call the same evaluation functions in the "
                f"same order (or pass distributed=False); raise {TIMEOUT_ENV} (seconds) if the "
                f"processes are merely slow ({text.splitlines()[0] if text else 'timeout'})"
            ) from None

    # -- the loop ---------------------------------------------------------------------------

    def __enter__(self) -> Shard:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if not self.distributed or (error is not None and not isinstance(error, Exception)):
            return False
        status = None if error is None else f"{type(error).__name__}: {error}"
        read = len(self._digests if self._generic else self._indices)
        data = torch.stack(self._digests).cpu().tolist() if self._digests else []
        try:
            self._meet("the end of the evaluation")
        except RuntimeError:
            if error is not None:
                return False  # this process's own exception says more than the timeout
            raise
        everyone = self._context.gather_objects((status, read, data))
        if error is not None:
            return False  # this process raises its own exception
        for rank, (text, _, _) in enumerate(everyone):
            if text is not None:  # the first process that failed
                raise RuntimeError(f"{self.call} failed on rank {rank}: {text}")
        if self._generic:
            counts = [count for _, count, _ in everyone]
            if any(c != counts[0] for c in counts):
                raise ValueError(
                    f"{self.call}: the loader yielded a different number of batches on each "
                    f"process ({counts}); every process must pass the same loader"
                )
            total = counts[0]
            digests = [data for _, _, data in everyone]
            differing = [
                index for index, values in enumerate(zip(*digests, strict=True))
                if any(v != values[0] for v in values)
            ]  # fmt: skip
            if differing:
                raise ValueError(
                    f"{self.call}: the loader yielded other data on each process (batches "
                    f"{differing[:5]}{' ...' if len(differing) > 5 else ''} differ, by a "
                    "checksum of their inputs and labels), so the result would mix them; every "
                    "process must pass the same loader over the same data (seed it)"
                )
        else:
            total = sum(count for _, count, _ in everyone)
        if total == 0:
            raise ValueError("loader yielded no batches: nothing to evaluate")
        return False

    def _mine(self) -> Iterator[Any]:
        """The generic case: every batch of the loader is read; this process keeps its own."""
        self._pending, self._digests = [], []
        for index, item in enumerate(self._loader):
            self._digests.append(_content_sum(item))
            if index % self.world_size == self.rank:
                self._pending.append(index)
                yield item

    def batches(
        self, device: torch.device | None, *, progress: bool, description: str
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """This process's ``(inputs, labels)`` batches on ``device``, checked.

        The progress bar is shown by rank 0 only. While a batch is being evaluated,
        :attr:`index` is its index in the whole loader and :attr:`generator` its generator.

        Raises:
            TypeError: If the loader is not iterable or yields something else than tensor pairs.
            ValueError: If a batch is malformed, or (not distributed) the loader is empty.
        """
        loader = self._loader
        if isinstance(loader, Tensor) or not isinstance(loader, Iterable):
            raise TypeError(
                f"loader must be an iterable of (inputs, labels) batches, got {type(loader).__name__}"
            )
        indices: Iterator[int]
        if not self.distributed:
            local, indices = loader, itertools.count()
        elif self._generic:
            local, indices = self._mine(), (self._pending.pop(0) for _ in itertools.count())
        else:
            assert self._known is not None  # internal invariant: set by _plan_loader
            if not self._known:
                return
            local, indices = self._local, iter(self._known)
        seen = 0
        # One iter() of the loader, with or without the bar (rank 0's).
        for item in Progress(local, description=description, enabled=progress and self.rank == 0):
            inputs, labels = check_pair(item, "loader", seen)
            seen += 1
            self._index = next(indices)
            self._indices.append(self._index)
            # Labels of any integer dtype (int8, int32, uint8, ...) become int64, as losses need.
            yield inputs.to(device), labels.to(device=device, dtype=torch.long)
        if seen == 0 and not self.distributed:  # (under torchrun, __exit__ checks the total)
            raise ValueError("loader yielded no batches: nothing to evaluate")

    @property
    def index(self) -> int:
        """Index, in the whole loader, of the batch being evaluated (-1 before the first)."""
        return self._index

    @property
    def generator(self) -> torch.Generator | None:
        """A generator for the batch being evaluated, seeded by the call and :attr:`index`.

        ``None`` if the evaluation was given no generator. Every access returns a fresh
        generator at the batch's seed: draw all of a batch's randomness from one access.
        """
        if self._base_seed is None or self._user_generator is None:
            return None
        seeded = torch.Generator(device=self._user_generator.device)
        return seeded.manual_seed(_batch_seed(self._base_seed, self._index))

    # -- making the result global ----------------------------------------------------------

    def _reduce_device(self) -> torch.device:
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def sum(self, values: Mapping[str, int | Tensor]) -> dict[str, Any]:
        """Integer counts summed over all processes, exactly (one ``all_reduce``).

        Args:
            values: Counts by name: Python ints or integer/bool tensors (any shape).

        Returns:
            The global counts by the same names: ints for ints, ``int64`` CPU tensors of the
            same shape for tensors.

        Raises:
            TypeError: If a value is neither an int nor an integer or bool tensor.
        """
        for name, value in values.items():
            floating = isinstance(value, Tensor) and (
                value.is_floating_point() or value.is_complex()
            )
            if floating or not isinstance(value, int | Tensor):
                raise TypeError(
                    f"sum() adds counts exactly: {name!r} must be an int or an integer tensor, "
                    f"got {type(value).__name__}"
                    + (f" of {value.dtype}" if isinstance(value, Tensor) else "")
                )
        if not self.distributed:
            return {k: v.cpu().long() if isinstance(v, Tensor) else v for k, v in values.items()}
        parts = [torch.as_tensor(v).detach().long().flatten().cpu() for v in values.values()]
        flat = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
        flat = flat.to(self._reduce_device())
        self._meet(f"the sum of {sorted(values)}")
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        chunks = flat.cpu().split([part.numel() for part in parts])
        return {
            name: chunk.view(value.shape).clone()
            if isinstance(value, Tensor)
            else int(chunk.item())
            for (name, value), chunk in zip(values.items(), chunks, strict=True)
        }

    def max(self, values: Mapping[str, float]) -> dict[str, float]:
        """Floats replaced by their maximum over all processes (one ``all_reduce``)."""
        if not self.distributed or not values:
            return dict(values)
        flat = torch.tensor([float(v) for v in values.values()], dtype=torch.float64)
        flat = flat.to(self._reduce_device())
        self._meet(f"the maximum of {sorted(values)}")
        dist.all_reduce(flat, op=dist.ReduceOp.MAX)
        return dict(zip(values, flat.cpu().tolist(), strict=True))

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every process's picklable ``obj``, in rank order (``[obj]`` when not distributed)."""
        if self.distributed:
            self._meet("an exchange of results")
        return self._context.gather_objects(obj)

    def gather(self, per_batch: Sequence[Tensor]) -> Tensor:
        """Per-sample outcomes of this process's batches, joined in the loader's global order.

        Args:
            per_batch: One tensor per batch this process evaluated, in the order
                :meth:`batches` yielded them, each with the batch's samples along dim 0.

        Returns:
            The tensors of every process's batches concatenated in the order of the whole
            loader, on the CPU (on every process).

        Raises:
            ValueError: If ``per_batch`` does not hold one tensor per evaluated batch.
        """
        if len(per_batch) != len(self._indices):
            raise ValueError(
                f"gather needs one tensor per batch this process evaluated "
                f"({len(self._indices)}), got {len(per_batch)}"
            )
        mine = [(i, t.detach().cpu()) for i, t in zip(self._indices, per_batch, strict=True)]
        if not self.distributed:
            parts = [t for _, t in mine]
        else:
            self._meet("the gather of per-sample results")
            everyone = self._context.gather_objects(mine)
            parts = [t for _, t in sorted(itertools.chain(*everyone), key=lambda item: item[0])]
        if not parts:
            raise ValueError("gather: no batch was evaluated")
        return torch.cat(parts)


def shard_loader(
    loader: Iterable[Any],
    *,
    call: str,
    distributed: bool | None = None,
    device: torch.device | None = None,
    generator: torch.Generator | None = None,
    models: Sequence[nn.Module] = (),
) -> Shard:
    """This process's share of ``loader`` for one evaluation, after meeting the others.

    Joins the process group if ``torchrun`` started several processes and none exists yet
    (gloo for a CPU ``device``, NCCL for CUDA, whose current device is set to ``device``).

    Args:
        loader: The whole loader, the same on every process.
        call: What is evaluated, compared between the processes and named in messages.
        distributed: ``None`` to shard exactly when several processes run, ``False`` to
            evaluate the whole loader here, ``True`` to require a process group.
        device: The model's device (``cuda:LOCAL_RANK`` under NCCL), or ``None``.
        generator: The evaluation's generator, drawn from once (see :attr:`Shard.generator`).
        models: The models evaluated; their weights must be the same on every process
            (compared through :func:`weights_checksum` when the processes meet).

    Returns:
        The :class:`Shard`, to be used as a context manager around the loop.

    Raises:
        ValueError: If ``distributed=True`` without several processes, the loader has a
            ``DistributedSampler``, or the processes were called differently (another
            function, attack, number of batches, sample order, generator state or model
            weights).
        RuntimeError: If on gloo not every process starts the evaluation within
            :data:`TIMEOUT_ENV` seconds.

    Example:
        >>> import torch
        >>> from advkit.evaluation import shard_loader
        >>> loader = [(torch.rand(4, 3), torch.zeros(4, dtype=torch.long))] * 3
        >>> with shard_loader(loader, call="count") as shard:
        ...     seen = sum(len(y) for _, y in shard.batches(None, progress=False, description=""))
        >>> shard.sum({"seen": seen})
        {'seen': 12}
    """
    context = resolve_context(device, distributed)
    shard = Shard(loader, context, call, generator, models)
    shard._open()
    return shard
