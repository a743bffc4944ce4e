"""Smoke test: the Trainer-overhead benchmark runs in --quick mode and writes sound results."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "trainer_overhead.py"
VARIANTS = ["hand-written loop", "Trainer", "Trainer, progress bars"]


def test_quick_benchmark_writes_consistent_results(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--batches", "2", "--repeats", "2",
         "--warmup", "0", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    # A quick run takes the _quick names, so it can never overwrite the recorded results.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "trainer_overhead_quick.json",
        "trainer_overhead_quick.md",
    ]
    payload = json.loads((tmp_path / "trainer_overhead_quick.json").read_text())
    assert payload["config"]["quick"] is True and payload["environment"]["threads"] == 1
    rows = payload["results"]
    assert [(row["setting"], row["variant"]) for row in rows] == [
        (setting, variant) for setting in ("standard", "adversarial") for variant in VARIANTS
    ]
    for row in rows:
        epochs = row["epoch_seconds"]
        assert len(epochs["all"]) == 2 and all(t > 0 for t in epochs["all"])
        assert epochs["min"] <= epochs["median"] <= epochs["max"]
        assert math.isfinite(row["overhead"]) and row["overhead"] > -1
        if row["variant"] == "hand-written loop":
            assert row["overhead"] == 0.0  # the baseline's in-round ratio to itself
    markdown = (tmp_path / "trainer_overhead_quick.md").read_text()
    assert "Quick mode" in markdown and markdown.count("| adversarial |") == 3


def test_quick_trades_setting_writes_its_own_files(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--settings", "trades", "--batches", "1",
         "--repeats", "1", "--warmup", "0", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    # Another setting than the default two is named after it: the default record stays.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "trainer_overhead_trades_quick.json",
        "trainer_overhead_trades_quick.md",
    ]
    payload = json.loads((tmp_path / "trainer_overhead_trades_quick.json").read_text())
    rows = payload["results"]
    assert [(row["setting"], row["variant"]) for row in rows] == [
        ("trades", variant) for variant in VARIANTS
    ]
    assert all(len(row["epoch_seconds"]["all"]) == 1 for row in rows)
