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
    # A quick run takes the _quick names, so it can never overwrite the recorded results.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "robustness_grid_quick.json",
        "robustness_grid_quick.md",
    ]
    report = json.loads((tmp_path / "robustness_grid_quick.json").read_text())
    markdown = (tmp_path / "robustness_grid_quick.md").read_text()
    assert report["environment"]["threads"] >= 1 and report["config"]["repeats"] == 1

    config = report["config"]
    cells = len(config["eps_255"]) * len(config["steps"])
    longest = max(config["steps"])
    batches = -(-config["eval_samples"] // config["batch_size"])
    correct = report["clean_accuracy"]["correct"]
    assert report["identical_accuracies"] is True
    rules = report["step_rules"]
    assert [rule["alpha_255"] for rule in rules] == config["alpha_255"] == [None, 1.0]
    for rule in rules:
        assert set(rule["modes"]) == {"plain", "batched", "batched_early_stop"}
        assert rule["identical_accuracies"] is True
        plain = rule["modes"]["plain"]
        batched = rule["modes"]["batched"]
        early = rule["modes"]["batched_early_stop"]
        for mode in (plain, batched, early):
            assert mode["counts"] == plain["counts"]
            assert mode["seconds"] > 0
        # The plain loop makes one batched call per cell, step and batch.
        steps_sum = sum(config["steps"])
        assert plain["work"]["grad_calls"] == batches * len(config["eps_255"]) * steps_sum
        assert plain["work"]["grad_samples"] == correct * len(config["eps_255"]) * steps_sum
        # Every cell's first gradient (at the clean inputs) is computed once; then each
        # attacked cell pays its later steps (with a fixed step size: the longest row only).
        attacked = {tuple(cell) for cell in rule["attacked_cells"]}
        if rule["alpha_255"] is None:
            assert len(attacked) == cells  # no two cells of the quick grid share a step size
        else:
            assert attacked == {(longest, j) for j in range(len(config["eps_255"]))}
        expected = correct * (1 + sum(s - 1 for s, _ in attacked))
        assert batched["work"]["grad_samples"] == expected
        assert rule["robust_floor"] <= early["work"]["grad_samples"]
        assert early["work"]["grad_samples"] <= batched["work"]["grad_samples"]
        grid = GridResult.from_dict(rule["grid"])
        assert len(grid.eps) * len(grid.steps) == cells
        assert [[c.correct for c in row] for row in grid.robust] == plain["counts"]
        assert grid.clean.to_dict() == report["clean_accuracy"]
    assert "| plain |" in markdown and "| batched_early_stop |" in markdown
    assert "## Step size eps/steps" in markdown and "## Step size 1/255" in markdown
