"""Smoke test: the AutoAttack benchmark runs in --quick mode and writes sound results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "autoattack.py"


def test_quick_benchmark_writes_consistent_results(tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--torchattacks-steps",
            "2",
            "--like-for-like",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads((tmp_path / "autoattack.json").read_text())
    markdown = (tmp_path / "autoattack.md").read_text()
    assert report["standard_budgets"] is False
    n, correct = report["samples"], report["clean_correct"]
    ours, theirs = report["advkit"], report["torchattacks"]
    assert 0 <= ours["robust"] <= correct <= n and 0 <= theirs["robust"] <= n
    after = list(ours["after_member"].values())
    assert list(ours["after_member"]) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert after == sorted(after, reverse=True) and after[-1] == ours["robust"]
    assert report["time_ratio"] > 0 and report["apgd_ce"]["ratio_to_floor"] > 0
    assert "| advkit AutoAttack |" in markdown and "reduced budgets" in markdown
    # --like-for-like adds torchattacks at advkit's steps (3 in --quick) to the same run.
    equal = report["torchattacks_equal_budget"]
    assert theirs["steps"] == 2 and equal["steps"] == report["config"]["steps"] == 3
    assert 0 <= equal["robust"] <= n and equal["time_ratio"] > 0
    assert "at equal budgets" in markdown
