"""Smoke test: the certification benchmark runs in --quick mode and writes sound results.

Only the shape and sanity of the results are checked, never an accuracy or a timing.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "certify.py"


def test_quick_benchmark_writes_consistent_results(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["certify_quick.json", "certify_quick.md"]
    payload = json.loads((tmp_path / "certify_quick.json").read_text())
    for case in payload["speed"]:
        assert case["rows"] == case["inputs"] * (case["n0"] + case["n"])
        assert case["passes"] == -(-case["rows"] // case["batch_size"])
        assert case["throughput_ratio"] > 0
    rows = payload["table"]
    assert [(r["sigma"], r["recipe"]) for r in rows] == [
        (s, name) for s in (0.12, 0.25, 0.5) for name in ("gaussian", "smoothadv", "consistency")
    ]
    for row in rows:
        result = row["result"]
        assert result["radii"] == [0.0, 0.25, 0.5, 0.75, 1.0]
        counts = result["certified"]
        assert all(b <= a for a, b in itertools.pairwise(counts))
        assert counts[0] + result["abstained"] <= result["total"] == 20
    attacked = [row["result"] for row in rows if row["result"]["empirical"] is not None]
    assert len(attacked) == 1 and attacked[0]["checks"][0]["passed"] is True
