"""Evaluation under two gloo processes equals evaluation in one, and bad calls stop every rank."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sharded_worker import BATCH, SAMPLES, evaluations, sample_order

from advkit.evaluation import accuracy, shard_loader
from advkit.evaluation.distributed import _content_sum, _timeout
from conftest import launch_two_ranks, tiny_model

WORKER = Path(__file__).with_name("sharded_worker.py")
TIMEOUT_S = 4  # how long rank 0 waits for a rank that never starts the evaluation


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], dict]:
    """Two processes started the way torchrun starts them; what each saved."""
    out = tmp_path_factory.mktemp("dist-eval")
    saved = launch_two_ranks(WORKER, out, env={"ADVKIT_EVAL_TIMEOUT": str(TIMEOUT_S)}, timeout=240)
    return saved, torch.load(out / "missing.pt", weights_only=True)


@pytest.mark.parametrize("name", list(evaluations()))
def test_two_processes_return_the_single_process_result_exactly(
    ranks: tuple[list[dict[str, Any]], dict], name: str
) -> None:
    saved, _ = ranks
    single = evaluations()[name](False)
    assert saved[0]["results"][name] == single
    assert saved[1]["results"][name] == single


def test_every_sample_is_counted_once_in_the_loaders_order(
    ranks: tuple[list[dict[str, Any]], dict],
) -> None:
    saved, _ = ranks
    for size in (BATCH, 64):  # 5 uneven batches; a single batch (rank 1's share is empty)
        order, drawn = sample_order(size)  # one process
        assert torch.equal(order, torch.arange(SAMPLES))
        for rank in saved:
            assert torch.equal(rank["orders"][size][0], order)
            # Each batch's randomness is the same whichever process evaluates it.
            assert torch.equal(rank["orders"][size][1], drawn)
    assert {r["results"]["accuracy"]["total"] for r in saved} == {SAMPLES}


@pytest.mark.parametrize(
    ("case", "rank0", "rank1"),
    [
        ("lengths", "ValueError: .*number of batches .*rank 0: 5, rank 1: 10", None),
        ("calls", r"ValueError: .*differ in the call .*'accuracy\(\)'.*robust_accuracy", None),
        (
            "one_rank_fails",
            "RuntimeError: robust_accuracy.* failed on rank 1: ValueError: inputs must lie",
            "ValueError: inputs must lie",
        ),
        ("order", "ValueError: .*order of the loader's samples", None),
        ("distributed_sampler", "ValueError: .*has a DistributedSampler", None),
        ("generators", "ValueError: .*generator's state", None),
        ("other_data", "ValueError: .*differ in the loader's data", None),
        (
            "other_data_list",
            r"ValueError: .*other data on each process \(batches \[0, 1, 2, 3, 4\]",
            None,
        ),
        (
            "other_labels_list",
            r"ValueError: .*other data on each process \(batches \[4\] differ",
            None,
        ),
        ("other_weights", "ValueError: robust_accuracy.*differ in the models' weights", None),
        (
            "timeout_inf",
            "ValueError: environment variable ADVKIT_EVAL_TIMEOUT must be a finite",
            None,
        ),
        ("still_usable", "ok", None),
    ],
)
def test_bad_calls_stop_every_rank_with_a_message(
    ranks: tuple[list[dict[str, Any]], dict], case: str, rank0: str, rank1: str | None
) -> None:
    saved, _ = ranks
    assert re.match(rank0, saved[0]["bad"][case]), saved[0]["bad"][case]
    assert re.match(rank1 or rank0, saved[1]["bad"][case]), saved[1]["bad"][case]


def test_a_call_on_one_rank_only_stops_at_the_timeout(
    ranks: tuple[list[dict[str, Any]], dict],
) -> None:
    _, missing = ranks
    assert missing["missing"].startswith(
        "RuntimeError: accuracy() on rank 0: rank(s) 1 did not reach the start of the evaluation"
    )
    assert "ADVKIT_EVAL_TIMEOUT" in missing["missing"]
    assert TIMEOUT_S <= missing["seconds"] < TIMEOUT_S + 30


def test_one_process_shard_sums_exactly_and_refuses_floats() -> None:
    loader = [(torch.rand(3, 2), torch.zeros(3, dtype=torch.long))] * 2
    with shard_loader(loader, call="test") as shard:
        sizes = [y.shape[0] for _, y in shard.batches(None, progress=False, description="")]
    sums = shard.sum({"n": sum(sizes), "t": torch.tensor([True, False])})
    assert sums["n"] == 6 and torch.equal(sums["t"], torch.tensor([1, 0]))
    with pytest.raises(TypeError, match=r"sum\(\) adds counts exactly: 'x' must be an int"):
        shard.sum({"x": 0.5})
    with pytest.raises(TypeError, match=r"got Tensor of torch\.float32"):
        shard.sum({"x": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"one tensor per batch this process evaluated \(2\)"):
        shard.gather([torch.zeros(3)])


def test_distributed_true_needs_several_processes() -> None:
    with pytest.raises(ValueError, match="distributed=True needs several processes"):
        accuracy(tiny_model(), [(torch.rand(2, 3, 8, 8), torch.zeros(2))], distributed=True)


def test_a_rank_that_stalls_in_forward_stops_the_others_at_the_timeout(tmp_path: Path) -> None:
    """Rank 1 sleeps inside its first forward pass for longer than the timeout: rank 0, done
    with its share, must stop at the end of the evaluation naming rank 1, not wait for it."""
    stall_s, timeout_s = 6, 2
    env = {"ADVKIT_EVAL_TIMEOUT": str(timeout_s), "STALL_SECONDS": str(stall_s)}
    saved = launch_two_ranks(WORKER, tmp_path, env=env, timeout=120)
    fast, slow = saved
    assert re.match(
        r"RuntimeError: robust_accuracy\(IFGSM.*\) on rank 0: rank\(s\) 1 did not reach the end "
        r"of the evaluation within 2 s: that process stalled",
        fast["outcome"],
    ), fast["outcome"]
    assert timeout_s <= fast["seconds"] < stall_s  # it did not wait for the sleeper
    assert slow["outcome"].startswith("RuntimeError: robust_accuracy"), slow["outcome"]


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "0", "-3", "soon", "1e12"])
def test_the_timeout_must_be_finite_seconds(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ADVKIT_EVAL_TIMEOUT", value)
    with pytest.raises(ValueError, match="ADVKIT_EVAL_TIMEOUT must be a finite number of seconds"):
        _timeout()


def test_the_content_checksum_sees_tensors_numpy_and_nesting() -> None:
    x = torch.rand(4, 3)
    same = _content_sum((x.clone(), np.int64(3)))
    assert int(_content_sum((x, np.int64(3)))) == int(same)
    bumped = x.clone()
    bumped[2, 1] = torch.nextafter(bumped[2, 1], torch.tensor(2.0))
    assert int(_content_sum((bumped, np.int64(3)))) != int(same)  # one ulp of one input
    assert int(_content_sum((x, np.int64(4)))) != int(same)  # a NumPy label
    assert int(_content_sum((np.int64(3), x))) != int(same)  # the order of the fields
    assert int(_content_sum({"x": x, "y": 1})) != int(_content_sum({"x": x, "y": 2}))
