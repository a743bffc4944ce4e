"""Smoke test: the APGD-floor benchmark runs in --quick mode and writes sound results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "apgd_floor.py"


def test_quick_benchmark_writes_quick_results(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--output-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    # A quick run takes the _quick names, so it can never overwrite a recorded result.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "apgd_floor_quick.json",
        "apgd_floor_quick.md",
    ]
    payload = json.loads((tmp_path / "apgd_floor_quick.json").read_text())
    config, results = payload["config"], payload["results"]
    assert config["quick"] is True and payload["environment"]["threads"] == 1
    # Labels are the model's predictions: every sample attacked at its start and every step.
    assert results["grad_samples"] == (config["steps"] + 1) * config["batch"]
    times = results["seconds"]
    assert sorted(times) == ["apgd", "floor"]
    assert all(len(values) == config["rounds"] for values in times.values())
    expected = [a / f for a, f in zip(times["apgd"], times["floor"], strict=True)]
    assert results["ratio_per_round"] == expected
    assert min(expected) <= results["ratio"] <= max(expected)
    assert "APGD / floor" in (tmp_path / "apgd_floor_quick.md").read_text()
