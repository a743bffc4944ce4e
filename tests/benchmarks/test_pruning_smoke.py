"""Smoke test: the pruning benchmark runs in --quick mode and writes sound results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "pruning.py"
VARIANTS = ["unpruned", "pruned 20%", "pruned 40%", "masked 40% (torch prune)"]


def test_quick_benchmark_writes_quick_results(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--repeats", "2", "--warmup", "0",
         "--threads", "1", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    # A quick run takes the _quick names, so it can never overwrite the recorded results.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pruning_quick.json", "pruning_quick.md"]
    payload = json.loads((tmp_path / "pruning_quick.json").read_text())
    config, rows = payload["config"], payload["results"]
    assert config["quick"] is True and config["batch_sizes"] == [1] and config["warmup"] == 0
    assert payload["environment"]["threads"] == 1
    assert payload["environment"]["cpu_calibration"] is None  # a smoke run skips it
    assert payload["environment"]["compute_settings"]["torch_threads"] == 1
    assert [row["variant"] for row in rows] == VARIANTS
    base = rows[0]
    # Physical pruning removes parameters and FLOPs; masking keeps every shape.
    assert base["params"] > rows[1]["params"] > rows[2]["params"]
    assert base["flops"] > rows[1]["flops"] > rows[2]["flops"]
    assert rows[3]["params"] == base["params"] and rows[3]["flops"] == base["flops"]
    assert rows[3]["masked_params"] > 0 and base["masked_params"] == 0
    for row in rows:
        latency = row["latency_ms"]["1"]
        assert latency["n"] == 2 and latency["median"] == pytest.approx(latency["mean"])
        assert row["speedup"]["1"] > 0
    assert base["speedup"]["1"] == 1.0  # the in-round ratio of the baseline to itself
    markdown = (tmp_path / "pruning_quick.md").read_text()
    assert "Quick mode" in markdown and markdown.count("x |") == len(VARIANTS)


def test_zoo_rounds_alternate_and_report_median_times(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--zoo", "timm", "--quick", "--models", "resnet18",
         "--rounds", "2", "--threads", "1", "--tp-timeout", "120",
         "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    payload = json.loads((tmp_path / "pruning_zoo_timm_quick.json").read_text())
    assert payload["rounds"] == 2
    (row,) = payload["rows"]
    for library in ("advkit", "tp"):
        result = row[library]
        assert "error" not in result, result
        readings = result["cpu_seconds_rounds"]
        assert len(readings) == 2 and result["cpu_seconds"] == pytest.approx(sum(readings) / 2)
        assert result["params_after"] < result["params_before"]
    markdown = (tmp_path / "pruning_zoo_timm_quick.md").read_text()
    assert "medians over 2 round(s)" in markdown
    ratio = row["advkit"]["cpu_seconds"] / row["tp"]["cpu_seconds"]
    assert (
        f"Analysis time where both run (1 models): median of the per-model ratios advkit / TP {ratio:.3f}"
        in markdown
    )


def test_zoo_rounds_refuse_zero() -> None:
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--zoo", "--rounds", "0"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert completed.returncode == 2 and "--rounds must be >= 1, got 0" in completed.stderr
