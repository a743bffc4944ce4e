"""The objectives under DDP with two gloo processes on the CPU: the replicas stay identical,
also with AWP, whose weight perturbation each process computes from its own shard."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ddp_objectives_worker import OBJECTIVES

from conftest import launch_two_ranks, tiny_model


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the two ranks of one launch (for all the tests here) wrote to."""
    folder = tmp_path_factory.mktemp("ddp_objectives")
    launch_two_ranks(Path(__file__).with_name("ddp_objectives_worker.py"), folder)
    return folder


def _ranks(out: Path) -> list[dict]:
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


def test_objectives_keep_the_ranks_identical_under_ddp(out: Path) -> None:
    ranks = _ranks(out)
    for name in OBJECTIVES:
        first, second = ranks[0][name], ranks[1][name]
        assert first["distributed"] == second["distributed"] == 2
        assert first["record"] == second["record"], name  # globally reduced metrics
        for key, tensor in first["state"].items():
            assert torch.equal(second["state"][key], tensor), (name, key)
        start = tiny_model(seed=0).state_dict()
        assert any(
            not torch.equal(start[k], v) for k, v in first["state"].items() if v.is_floating_point()
        ), name


def test_each_rank_saves_its_own_generator_state(out: Path) -> None:
    """The Trainer's generator under DDP: saved per process in rank order, like the global
    random states (test_generator.py checks each rank takes its own back); the replicas stay
    identical while their random starts differ."""
    ranks = _ranks(out)
    first, second = ranks[0]["generator"], ranks[1]["generator"]
    for key, tensor in first["state"].items():
        assert torch.equal(second["state"][key], tensor), key
    saved = torch.load(out / "generator" / "last.pt", weights_only=True)["generator"]
    assert len(saved) == 2
    assert torch.equal(saved[0], first["generator"]) and torch.equal(saved[1], second["generator"])
    assert not torch.equal(saved[0], saved[1])
