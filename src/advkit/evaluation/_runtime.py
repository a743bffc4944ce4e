"""The plumbing every evaluation shares: work counts, clean predictions, and rendering
(Markdown tables, JSON). The loader's batches come from :meth:`~advkit.evaluation.Shard.batches`;
model checks from ``advkit._checks``, plots from ``advkit._plot``."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from advkit._checks import check_int, check_logits, check_run_dtypes
from advkit.attacks import AttackResult, CheckOutcome, ModelWork

_CALLS = ("grad_calls", "grad_samples", "forward_calls", "forward_samples")
_ROWS = ("forward_rows", "gradient_rows", "backward_rows")


@dataclass(frozen=True)
class WorkCount:
    """The passes through the model an evaluation made.

    Attributes:
        grad_calls: Batched forward+backward passes made by the attacks.
        grad_samples: Sum of the batch sizes of those passes.
        forward_calls: Gradient-free batched forward passes made by the evaluation itself
            (clean predictions, and in a grid the last iterates of the cells that ride on
            another cell's trajectory); the attacks' own closing forward passes are not
            included.
        forward_samples: Sum of the batch sizes of those forward passes.
        rows: Every row that went through the model, exactly: the evaluation's own forward
            passes and all of the attacks' (a black-box attack's queries, closing passes and
            checks included), as :class:`~advkit.attacks.ModelWork`;
            ``rows.forward_equivalents`` is the cost in the unit of the benchmarks. ``None``
            for a result file written before advkit counted rows.
    """

    grad_calls: int = 0
    grad_samples: int = 0
    forward_calls: int = 0
    forward_samples: int = 0
    rows: ModelWork | None = field(default_factory=ModelWork)

    def __post_init__(self) -> None:
        for name in _CALLS:
            check_int(getattr(self, name), f"work {name}", minimum=0)
        if self.rows is not None and not isinstance(self.rows, ModelWork):
            raise TypeError(
                f"work rows must be a ModelWork or None, got {type(self.rows).__name__}"
            )

    @classmethod
    def forward(cls, rows: int) -> WorkCount:
        """One gradient-free forward pass of ``rows`` samples made by the evaluation."""
        return cls(forward_calls=1, forward_samples=rows, rows=ModelWork(forward_rows=rows))

    @classmethod
    def of_attack(cls, result: AttackResult) -> WorkCount:
        """An attack's work: its declared gradient passes and every row it counted."""
        return cls(result.grad_calls, result.grad_samples, rows=result.work)

    def __add__(self, other: WorkCount) -> WorkCount:
        rows = None if self.rows is None or other.rows is None else self.rows + other.rows
        return WorkCount(**{k: getattr(self, k) + getattr(other, k) for k in _CALLS}, rows=rows)

    def counts(self) -> dict[str, int]:
        """Every count by name, flat (the rows' as ``forward_rows``, ...; 0 when unknown)."""
        rows = self.rows or ModelWork()
        return {k: getattr(self, k) for k in _CALLS} | {k: getattr(rows, k) for k in _ROWS}

    @classmethod
    def from_counts(cls, counts: dict[str, int]) -> WorkCount:
        """Inverse of :meth:`counts` (the rows known)."""
        rows = ModelWork(*(counts[k] for k in _ROWS))
        return cls(**{k: counts[k] for k in _CALLS}, rows=rows)

    def to_dict(self) -> dict[str, Any]:
        """The counts by name, the rows as a dict of their own (``None`` if unknown)."""
        rows = None if self.rows is None else asdict(self.rows)
        return {k: getattr(self, k) for k in _CALLS} | {"rows": rows}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkCount:
        """Inverse of :meth:`to_dict`; a file without ``rows`` (written before advkit counted
        them) reads with ``rows=None``.

        Raises:
            TypeError: If ``data`` is not a dict or a count is not an int.
            ValueError: If a count is missing or negative.
        """
        counts = {k: field_of(data, k, "WorkCount") for k in _CALLS}
        rows = data.get("rows")
        if rows is not None:
            rows = ModelWork(*(field_of(rows, k, "WorkCount rows") for k in _ROWS))
            for name in _ROWS:
                check_int(getattr(rows, name), f"work rows {name}", minimum=0)
        return cls(**counts, rows=rows)


def model_device(model: nn.Module) -> torch.device | None:
    """The device of the model's first parameter or buffer, or ``None`` if it has neither."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return None


def predict_correct(model: nn.Module, inputs: Tensor, labels: Tensor) -> Tensor:
    """Per-sample bool: the model's top class is the label (one gradient-free forward pass)."""
    check_run_dtypes(model, inputs, {})
    with torch.no_grad():
        logits = model(inputs)
    check_logits(logits, inputs.shape[0], labels)
    return logits.argmax(dim=1) == labels


T = TypeVar("T", bound="JsonResult")
T_co = TypeVar("T_co", covariant=True)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table; the first column is left-aligned, the rest right."""
    align = [":--"] + ["--:"] * (len(header) - 1)
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def checks_markdown(checks: Sequence[CheckOutcome]) -> str:
    """The sanity checks as a Markdown bullet list."""
    marks = {True: "pass", False: "**FAIL**", None: "n/a"}
    return "\n".join(f"- {check.name}: {marks[check.passed]} ({check.detail})" for check in checks)


def field_of(data: Any, key: str, kind: str) -> Any:
    """``data[key]`` of a serialized ``kind``, with a clear error if ``data`` is no dict or lacks it."""
    if not isinstance(data, dict):
        raise TypeError(f"a serialized {kind} must be a dict, got {type(data).__name__}")
    if key not in data:
        raise ValueError(f"a serialized {kind} needs the field {key!r}; it has {sorted(data)}")
    return data[key]


def read_nested(where: str, read: Callable[[Any], T_co], data: Any) -> T_co:
    """``read(data)``, its errors prefixed with ``where`` (e.g. ``"robust[1][0]"``)."""
    try:
        return read(data)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{where}: {err}") from None


def read_list(data: Any, where: str) -> list[Any]:
    """``data`` if it is a JSON list."""
    if not isinstance(data, list | tuple):
        raise TypeError(f"{where} must be a list, got {type(data).__name__}")
    return list(data)


def check_same_total(estimate: Any, clean: Any, name: str) -> None:
    """Raise ``ValueError`` unless ``estimate`` counts as many samples as ``clean``."""
    if estimate.total != clean.total:
        raise ValueError(
            f"{name} counts {estimate.total} samples but clean {clean.total}: one evaluation "
            "counts every accuracy over the same samples"
        )


Reader = Callable[[str, Any], Any]
"""Reads one field of a result file: ``(where, value) -> field``, errors naming ``where``."""


def nested(read: Callable[[Any], Any] | None = None, depth: int = 0) -> Reader:
    """A :data:`Reader` that applies ``read`` (``None``: keep) to items ``depth`` lists deep.

    Lists become tuples; errors are prefixed with the item's place, e.g. ``robust[1][0]``.
    """

    def reader(where: str, data: Any) -> Any:
        if depth == 0:
            return data if read is None else read_nested(where, read, data)
        inner = nested(read, depth - 1)
        return tuple(inner(f"{where}[{i}]", item) for i, item in enumerate(read_list(data, where)))

    return reader


def _written(value: Any) -> Any:
    """``value`` for JSON: a record by its ``to_dict``, a tuple as a list."""
    if isinstance(value, tuple):
        return [_written(item) for item in value]
    return value.to_dict() if hasattr(value, "to_dict") else value


class JsonResult:
    """Base of the results: JSON and Markdown, and the checks every result's fields share.

    A subclass is a frozen dataclass with ``attack``, ``work`` and ``checks`` fields and a
    ``_kind``. Its files hold every field under its name (records by their ``to_dict``, tuples
    as lists); they are read back strictly, each field by its :data:`Reader` in ``_readers``
    (else as it is), a field with a default only if present, and the constructor checks the
    whole.
    """

    _kind: ClassVar[str]
    _readers: ClassVar[dict[str, Reader]] = {
        "work": nested(WorkCount.from_dict),
        "checks": nested(CheckOutcome.from_dict, 1),
    }

    def to_markdown(self) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready, after the ``kind``."""
        return {"kind": self._kind} | {
            f.name: _written(getattr(self, f.name))
            for f in fields(self)  # type: ignore[arg-type]
        }

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        """The result a :meth:`to_dict` holds, read strictly."""
        if not isinstance(data, dict):
            raise TypeError(f"expected a dict from to_dict(), got {type(data).__name__}")
        if data.get("kind") != cls._kind:
            raise ValueError(f"expected a serialized {cls._kind}, got kind={data.get('kind')!r}")
        name = cls._kind.removeprefix("advkit.")
        values = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name in data or f.default is MISSING:
                read = cls._readers.get(f.name, nested())
                values[f.name] = read(f.name, field_of(data, f.name, name))
        return cls(**values)

    def _check_shared(self) -> None:
        """Check the fields every result has: ``attack``, ``work`` and ``checks``."""
        attack, work, checks = self.attack, self.work, self.checks  # type: ignore[attr-defined]
        if not isinstance(attack, str):
            raise TypeError(f"attack must be a str, got {type(attack).__name__}")
        if not isinstance(work, WorkCount):
            raise TypeError(f"work must be a WorkCount, got {type(work).__name__}")
        for check in checks:
            if not isinstance(check, CheckOutcome):
                raise TypeError(f"checks must be CheckOutcome objects, got {type(check).__name__}")

    def to_json(self, indent: int | None = 2) -> str:
        """The result as JSON text; :meth:`from_json` reads it back."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls: type[T], text: str) -> T:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def _repr_markdown_(self) -> str:
        return self.to_markdown()
