"""Smoke test: the distributed-evaluation benchmark runs 1 and 2 processes in --quick mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "distributed_eval.py"


def test_quick_benchmark_runs_one_and_two_processes_with_equal_results(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads((tmp_path / "distributed_eval_quick.json").read_text())
    assert [run["processes"] for run in report["runs"]] == [1, 2]
    assert report["identical_results"] is True
    for run in report["runs"]:
        assert run["total"] == report["settings"]["samples"]
        assert run["clean"] == run["total"]  # the labels are the model's predictions
        assert run["grad_samples"] == run["clean"] * report["settings"]["steps"]
        assert len(run["seconds"]) == report["settings"]["repeats"]
    assert "| 2 |" in (tmp_path / "distributed_eval_quick.md").read_text()
