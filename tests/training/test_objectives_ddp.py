"""The objectives under DDP with two gloo processes on the CPU: the replicas stay identical,
also with AWP, whose weight perturbation each process computes from its own shard."""

from __future__ import annotations

from pathlib import Path

import torch
from ddp_objectives_worker import OBJECTIVES

from conftest import launch_two_ranks, tiny_model


def test_objectives_keep_the_ranks_identical_under_ddp(tmp_path: Path) -> None:
    ranks = launch_two_ranks(Path(__file__).with_name("ddp_objectives_worker.py"), tmp_path)
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
