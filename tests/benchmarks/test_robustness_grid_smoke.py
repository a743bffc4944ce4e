"""Smoke test: the robustness-grid benchmark runs in --quick mode and writes sound results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from advkit.evaluation import GridResult

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "robustness_grid.py"


def test_quick_benchmark_writes_consistent_results(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads((tmp_path / "robustness_grid.json").read_text())
    markdown = (tmp_path / "robustness_grid.md").read_text()

    config = report["config"]
    cells = len(config["eps_255"]) * len(config["steps"])
    assert set(report["modes"]) == {"plain", "batched", "batched_early_stop"}
    assert report["identical_accuracies"] is True
    plain = report["modes"]["plain"]
    batched = report["modes"]["batched"]
    early = report["modes"]["batched_early_stop"]
    for mode in (plain, batched, early):
        assert mode["counts"] == plain["counts"]
        assert mode["seconds"] > 0
    # The plain loop makes one batched call per cell, step and batch; the grid one per row.
    batches = -(-config["eval_samples"] // config["batch_size"])
    assert plain["work"]["grad_calls"] == batches * len(config["eps_255"]) * sum(config["steps"])
    # The grid computes every cell's first gradient (at the clean inputs) once.
    correct = report["clean_accuracy"]["correct"]
    assert plain["work"]["grad_samples"] == correct * len(config["eps_255"]) * sum(config["steps"])
    assert batched["work"]["grad_samples"] == plain["work"]["grad_samples"] - (cells - 1) * correct
    assert early["work"]["grad_samples"] <= batched["work"]["grad_samples"]

    grid = GridResult.from_dict(report["grid"])
    assert len(grid.eps) * len(grid.steps) == cells
    assert [[c.correct for c in row] for row in grid.robust] == plain["counts"]
    assert grid.clean.to_dict() == report["clean_accuracy"]
    assert "| plain |" in markdown and "| batched_early_stop |" in markdown
