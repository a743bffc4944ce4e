"""The front door, examples/quickstart.py, runs as a newcomer runs it and prints sound numbers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "quickstart.py"
INTERVAL = r"(\d+\.\d) \[(\d+\.\d), (\d+\.\d)\]%"
EVALUATION = re.compile(
    rf"^(?P<name>.+?)\s+clean {INTERVAL}\s+robust {INTERVAL}\s+params (?P<params>[\d,]+)"
    r"\s+checks passed: (?P<passed>True|False)$"
)


@pytest.fixture(scope="module")
def output() -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", "1")  # as the suite's tests: one intra-op thread
    completed = subprocess.run(
        [sys.executable, str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=1500,  # ~1 min on a quiet machine; a shared one can be 10x slower
        check=False,
        env=env,
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Warning" not in completed.stderr, completed.stderr[-3000:]
    return completed.stdout


def test_the_file_stays_short() -> None:
    assert len(SCRIPT.read_text().splitlines()) <= 80


@pytest.mark.slow
@pytest.mark.timeout(1600)
def test_it_says_the_data_are_synthetic_and_the_model_normalizes(output: str) -> None:
    lines = output.splitlines()
    assert lines[0].startswith("SYNTHETIC demo data")
    assert lines[1].startswith("first layer: Normalize(mean=[0.485")


@pytest.mark.slow
@pytest.mark.timeout(1600)
def test_pgd_stays_in_its_ball_and_fools_some_samples(output: str) -> None:
    match = re.search(
        r"max \|x_adv - x\| = (\d+\.\d+)/255, correct (\d+) -> (\d+) of (\d+)", output
    )
    assert match is not None, output
    radius, clean, adversarial, total = float(match[1]), *map(int, match.groups()[1:])
    assert 0 < radius <= 2.0 + 1e-6  # eps 2/255, printed rounded to 1/100 of a level
    assert adversarial <= clean <= total == 100


@pytest.mark.slow
@pytest.mark.timeout(1600)
def test_three_evaluations_with_intervals_that_make_sense(output: str) -> None:
    rows = [m for m in map(EVALUATION.match, output.splitlines()) if m is not None]
    assert [m["name"] for m in rows] == [
        "trained",
        "pruned 40% of layer4.conv1",
        "pruned + adversarial epoch",
    ]
    for row in rows:
        clean, clean_low, clean_high, robust, robust_low, robust_high = map(
            float, row.groups()[1:7]
        )
        assert clean_low <= clean <= clean_high and robust_low <= robust <= robust_high
        assert robust <= clean <= 100.0
        assert row["passed"] == "True"
    assert float(rows[0].group(2)) > 10.0  # better than chance (10 classes) after training
    params = [int(row["params"].replace(",", "")) for row in rows]
    assert params == [11_181_642, 7_874_582, 7_874_582]  # ResNet-18; 40% of layer4.conv1 gone
    loss = re.search(r"adversarial fine-tuning: train loss (\d+\.\d+)", output)
    assert loss is not None and 0 < float(loss[1]) < 10
