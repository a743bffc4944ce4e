"""Smoke test: the robust-pruning benchmark runs in --quick mode and writes sound results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "robust_pruning.py"
IMPORTANCES = ["random", "L1", "adversarial Taylor", "learned (HYDRA-style)"]


def test_quick_benchmark_writes_quick_results(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    # A quick run takes the _quick names, so it can never overwrite the recorded result.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "robust_pruning_quick.json",
        "robust_pruning_quick.md",
    ]
    report = json.loads((tmp_path / "robust_pruning_quick.json").read_text())
    config, results = report["config"], report["results"]
    assert config["quick"] is True and report["environment"]["threads"] == 1
    rows = results["rows"]
    assert [(row["ratio"], row["importance"]) for row in rows] == [
        (ratio, name) for ratio in config["ratios"] for name in IMPORTANCES
    ]
    base = results["baseline"]
    for row in rows:
        assert row["params"] < base["params"] and row["flops"] < base["flops"]
        for split in ("clean", "robust"):
            entry = row[split]
            assert entry["total"] == base[split]["total"]
            assert entry["low"] <= entry["value"] <= entry["high"]
        assert row["robust"]["correct"] <= row["clean"]["correct"]
    # Every importance prunes to the same widths at one ratio (the same share of each group).
    assert len({json.dumps(row["widths"], sort_keys=True) for row in rows}) == 1
    markdown = (tmp_path / "robust_pruning_quick.md").read_text()
    assert "Quick mode" in markdown and markdown.count("| 50% |") == len(IMPORTANCES)
