"""DDP with two gloo processes on the CPU: same weights on both ranks, global metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ddp_worker import EPOCHS, LOCAL_BATCH, bn_free_model, datasets, make_trainer
from torch.utils.data import DataLoader

from advkit import IFGSM
from conftest import launch_two_ranks

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.fixture(scope="module")
def ddp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ddp")


@pytest.fixture(scope="module")
def ranks(ddp_dir: Path) -> list[dict]:
    return launch_two_ranks(WORKER, ddp_dir)


@pytest.fixture(scope="module")
def reference() -> dict:
    """One process, batches of 2 x LOCAL_BATCH: the union of both ranks' batches, step by step."""
    train_set, val_set = datasets()
    trainer = make_trainer(bn_free_model(), distributed=False)
    history = trainer.fit(
        DataLoader(train_set, batch_size=2 * LOCAL_BATCH),
        DataLoader(val_set, batch_size=2 * LOCAL_BATCH),
        epochs=EPOCHS,
    )
    final = trainer.evaluate(
        DataLoader(val_set, batch_size=2 * LOCAL_BATCH), attack=IFGSM(eps=8 / 255, steps=3)
    )
    return {"state": trainer.model.state_dict(), "history": history.epochs, "final": final}


def test_both_ranks_end_with_identical_weights_and_buffers(ranks: list[dict]) -> None:
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 for r in ranks)
    for key in ("state", "bn_state"):
        first, second = ranks[0][key], ranks[1][key]
        assert first.keys() == second.keys()
        for name in first:
            assert torch.equal(first[name], second[name]), f"{key}.{name} differs between ranks"
    # BatchNorm running statistics are there and were synchronized, not left per-rank.
    assert any("running_mean" in name for name in ranks[0]["bn_state"])


def test_metrics_are_global_and_match_one_process(ranks: list[dict], reference: dict) -> None:
    assert ranks[0]["history"] == ranks[1]["history"]
    assert ranks[0]["final"] == ranks[1]["final"]
    # Every rank reports the counts of the whole validation set, not of its half.
    assert ranks[0]["final"]["samples"] == reference["final"]["samples"] == 32
    for got, want in zip(ranks[0]["history"], reference["history"], strict=True):
        assert got.keys() == want.keys()
        for name in want:
            assert got[name] == pytest.approx(want[name], rel=1e-4, abs=1e-6), (name, got, want)
    for name, value in reference["final"].items():
        assert ranks[0]["final"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


def test_ddp_training_equals_one_process_on_the_global_batch(
    ranks: list[dict], reference: dict
) -> None:
    for name, tensor in reference["state"].items():
        torch.testing.assert_close(ranks[0]["state"][name], tensor, rtol=1e-4, atol=1e-5)


def test_only_rank_zero_writes_checkpoints(ranks: list[dict]) -> None:
    assert ranks[0]["writes"] == ["last.pt"] * EPOCHS
    assert ranks[1]["writes"] == []


def test_no_ddp_wrapper_outlives_the_interpreter(ranks: list[dict], ddp_dir: Path) -> None:
    """A DDP wrapper freed during interpreter finalization aborts the process now and then
    (gloo work objects release tensors without the GIL): each Trainer drops its wrapper at exit,
    although the worker keeps its Trainers referenced to the end."""
    assert [(ddp_dir / f"rank{r}.exit").read_text() for r in range(2)] == ["0", "0"]


def test_the_process_group_advkit_created_is_destroyed_at_exit(tmp_path: Path) -> None:
    """A group left to the interpreter's finalization aborted a quarter of the two-process runs
    of the scaling guide's evaluate.py ("terminate called without an active exception"): the
    group resolve_context creates is destroyed by an exit hook while Python is whole."""
    worker = Path(__file__).with_name("exit_worker.py")
    ranks = launch_two_ranks(worker, tmp_path, timeout=120)
    assert [rank["group_alive_at_exit"] for rank in ranks] == [False, False]
