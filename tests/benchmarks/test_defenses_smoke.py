"""Smoke test: the defenses benchmark runs in --quick mode and writes sound results.

Only the shape and sanity of the results are checked, never an accuracy or a timing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "defenses.py"


def test_quick_benchmark_writes_consistent_results(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    # A quick run takes the _quick names, so it can never overwrite the recorded results.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "defenses_quick.json",
        "defenses_quick.md",
    ]
    payload = json.loads((tmp_path / "defenses_quick.json").read_text())
    config = payload["config"]
    assert config["quick"] is True and payload["environment"]["threads"] == 1

    rows = payload["defenses"]
    assert [row["dataset"] for row in rows] == ["demo"] * 3 + ["digits"] * 3
    for row in rows:
        clean, robust = row["clean"], row["robust"]
        assert clean["total"] == robust["total"] == config["eval_samples"]
        assert robust["correct"] <= clean["correct"]
        assert robust["low"] <= robust["value"] <= robust["high"]
        # Counted gradient passes: PGD-AT k + 1 per sample and epoch, TRADES and MART k + 2.
        passes = config["steps"] + (1 if row["defense"].startswith("PGD-AT") else 2)
        assert row["gradients"] == passes * row["train_samples"] * config["epochs"]

    for row in payload["fast"]:
        assert [p["epoch"] for p in row["curve"]] == list(range(1, row["epochs_run"] + 1))
        assert 0.0 <= row["final_pgd10"] <= row["final_clean"] <= 1.0
    assert payload["fast"][-1]["guard"] is not None

    free = payload["free"]["runs"]
    assert free[0]["run"].startswith("free AT")
    # Free AT: m computations per sample and epoch; PGD-AT with k steps: k + 1.
    assert free[0]["gradients_per_sample_epoch"] == config["free_replays"]
    for row, k in zip(free[1:], config["free_pgd_steps"], strict=True):
        assert row["gradients_per_sample_epoch"] == k + 1
    assert free[0]["reaches_free_at"] is not None  # free AT reaches its own final value
    markdown = (tmp_path / "defenses_quick.md").read_text()
    assert "Quick mode" in markdown and "reduced AutoAttack" in markdown
