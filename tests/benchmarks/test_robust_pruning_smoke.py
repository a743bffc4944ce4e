"""Smoke test: the robust-pruning benchmark runs in --quick mode and writes sound results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "robust_pruning.py"
IMPORTANCES = ["random", "L1", "adversarial Taylor", "learned (HYDRA-style)"]


def _run(*args: str) -> None:
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]


def test_quick_benchmark_writes_quick_results(tmp_path: Path) -> None:
    _run("--out", str(tmp_path))
    # A quick run takes the _quick names, so it can never overwrite the recorded result.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "robust_pruning_quick.json",
        "robust_pruning_quick.md",
    ]
    report = json.loads((tmp_path / "robust_pruning_quick.json").read_text())
    config, results = report["config"], report["results"]
    assert config["quick"] is True and report["environment"]["threads"] == 1
    # Without --cache a quick run trains its starting model (clean, then PGD) and keeps nothing.
    assert results["start"]["cached"] is False and results["start"]["checkpoint"] is None
    assert set(results["start"]["clean_phase"]) >= {"clean", "robust", "seconds"}
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


def test_second_run_loads_the_cached_starting_model(tmp_path: Path, load_benchmark) -> None:
    bench = load_benchmark("robust_pruning")
    cache = tmp_path / "cache"
    first, second = (bench.run(bench.QUICK, 0, cache) for _ in range(2))
    assert first["start"]["cached"] is False and second["start"]["cached"] is True
    assert [p.suffix for p in cache.iterdir()] == [".pt"]  # one checkpoint, no partial file
    # The same weights and evaluation samples: the unpruned model's counts are identical, every
    # row reseeds so the pruned rows repeat exactly, and the clean phase's record is carried over.
    for split in ("clean", "robust"):
        assert second["baseline"][split] == first["baseline"][split]
        assert [r[split] for r in second["rows"]] == [r[split] for r in first["rows"]]
    assert second["start"]["clean_phase"] == first["start"]["clean_phase"]
