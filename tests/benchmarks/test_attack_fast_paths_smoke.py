"""The fast-path benchmark runs end to end in its quick mode and writes well-formed results.

Only the shape and sanity of the results are checked, never a timing.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "attack_fast_paths.py"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("attack_fast_paths")
    json_path, md_path = out / "quick.json", out / "quick.md"
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--device", "cpu", "--threads", "1",
         "--json", str(json_path), "--markdown", str(md_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(json_path.read_text()), md_path.read_text()


def _positive(value: object) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_top_level_sections(results) -> None:
    payload, _ = results
    assert payload["benchmark"] == "attack_fast_paths"
    assert set(payload) == {
        "benchmark", "complete", "config", "environment", "fast_paths", "accuracy",
    }  # fmt: skip
    assert payload["complete"] is True
    assert payload["config"]["quick"] is True and payload["environment"]["threads"] == 1


def test_fast_paths_cover_autocast_and_channels_last(results) -> None:
    payload, _ = results
    rows = payload["fast_paths"]
    assert {row["path"] for row in rows} >= {
        "fp32", "autocast bfloat16", "channels_last", "channels_last + bfloat16",
    }  # fmt: skip
    for row in rows:
        assert _positive(row["ms"]) and _positive(row["speedup_vs_fp32"])
        assert 0.0 <= row["sign_flip_fraction"] <= 1.0
        assert row["output_channels_last"] is row["channels_last"]
        assert len(row["times_s"]) == payload["config"]["repeats"]
    fp32 = next(row for row in rows if row["path"] == "fp32")
    assert fp32["sign_flip_fraction"] == 0.0 and fp32["output_vs_fp32"]["identical"] is True
    channels_last = next(row for row in rows if row["path"] == "channels_last")
    assert channels_last["output_vs_fp32"]["max_abs_diff"] < 1e-3


def test_accuracy_study(results) -> None:
    payload, _ = results
    study = payload["accuracy"]
    assert 0.0 <= study["clean_accuracy"] <= 1.0
    assert study["test_images"] == payload["config"]["study_test"]
    reference = study["paths"][0]
    assert reference["path"] == "fp32" and reference["sign_flip_fraction"] == 0.0
    for row in study["paths"]:
        assert set(row["robust_accuracy"]) == set(reference["robust_accuracy"])
        assert all(0.0 <= acc <= 1.0 for acc in row["robust_accuracy"].values())
        assert all(delta == 0.0 for delta in reference["robust_accuracy_delta_pp"].values())


def test_markdown_has_every_section(results) -> None:
    payload, markdown = results
    for heading in ("# Attack loop fast paths", "## Fast paths", "## Accuracy effect"):
        assert heading in markdown
    table_rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(table_rows) == len(payload["fast_paths"]) + len(payload["accuracy"]["paths"]) + 2


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_recorded_configs_time_torch_compile_on_a_fast_path_case(load_benchmark, device) -> None:
    # The CPU config once named a compile case that was not among its fast-path cases, so
    # torch.compile was silently never timed.
    module = load_benchmark("attack_fast_paths")
    cfg = module.Config.for_device(device, quick=False, cpu_fp16=False)
    assert cfg.compile and cfg.compile_case in cfg.fast_cases
    assert any(p.compiled for p in module.fast_paths_for(cfg, cfg.compile_case))


def test_recorded_results_render(load_benchmark) -> None:
    # The recorded files were split from the one attack-loop run; each script renders its part.
    results = SCRIPT.parent / "results"
    loop, fast = load_benchmark("attack_loop"), load_benchmark("attack_fast_paths")
    for device in ("cpu", "cuda"):
        recorded = json.loads((results / f"attack_fast_paths_{device}.json").read_text())
        assert (
            fast.to_markdown(recorded) == (results / f"attack_fast_paths_{device}.md").read_text()
        )
        recorded = json.loads((results / f"attack_loop_{device}.json").read_text())
        assert loop.to_markdown(recorded) == (results / f"attack_loop_{device}.md").read_text()
