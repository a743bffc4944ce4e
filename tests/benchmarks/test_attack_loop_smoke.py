"""The attack-loop benchmark runs end to end in its quick mode and writes well-formed results.

Only the shape and sanity of the results are checked, never a timing.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "attack_loop.py"
HAS_TORCHATTACKS = importlib.util.find_spec("torchattacks") is not None
ATTACKS = ["FGSM", "I-FGSM", "PGD", "MI-FGSM"]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("attack_loop")
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
    assert payload["benchmark"] == "attack_loop"
    assert set(payload) == {
        "benchmark", "complete", "config", "environment", "cases", "fast_paths", "accuracy",
        "audit",
    }  # fmt: skip
    assert payload["complete"] is True  # partial saves during the run end in a complete one
    assert payload["config"]["device"] == "cpu" and payload["config"]["quick"] is True
    assert payload["environment"]["threads"] == 1
    assert isinstance(payload["environment"]["torch"], str)


def test_one_row_per_attack_and_case_with_positive_figures(results) -> None:
    payload, _ = results
    cases = payload["config"]["cases"]
    rows = payload["cases"]
    assert [row["attack"] for row in rows] == ATTACKS * len(cases)
    repeats = payload["config"]["repeats"]
    for row in rows:
        assert row["steps"] == (1 if row["attack"] == "FGSM" else payload["config"]["steps"])
        for key in ("advkit_ms", "floor_ms", "ms_per_step", "images_per_s", "floor_ratio"):
            assert _positive(row[key]), (key, row[key])
        assert math.isclose(row["ms_per_step"] * row["steps"], row["advkit_ms"])
        assert all(len(times) == repeats for times in row["times_s"].values())
        memory = row["peak_memory_bytes"]
        assert memory["advkit"] is None or (
            isinstance(memory["advkit"], int) and memory["advkit"] >= 0
        )


@pytest.mark.skipif(not HAS_TORCHATTACKS, reason="torchattacks is not installed")
def test_torchattacks_columns_and_identity(results) -> None:
    payload, _ = results
    for row in payload["cases"]:
        assert _positive(row["torchattacks_ms"]) and _positive(row["vs_torchattacks"])
        agreement = row["torchattacks_agreement"]
        assert agreement["identical"] == (agreement["num_different"] == 0)
        assert agreement["max_abs_diff"] >= 0.0
        if row["attack"] in ("FGSM", "I-FGSM"):
            assert agreement["expected_identical"] is True
            assert agreement["identical"] is True, row
        else:
            # Rounding of torchattacks' projection: tiny differences, never a different attack.
            assert agreement["max_abs_diff"] < 1e-3


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
    fp32 = next(row for row in rows if row["path"] == "fp32")
    assert fp32["sign_flip_fraction"] == 0.0 and fp32["output_vs_fp32"]["identical"] is True
    channels_last = next(row for row in rows if row["path"] == "channels_last")
    assert channels_last["output_vs_fp32"]["max_abs_diff"] < 1e-3


def test_accuracy_study_and_audit(results) -> None:
    payload, _ = results
    study = payload["accuracy"]
    assert 0.0 <= study["clean_accuracy"] <= 1.0
    reference = study["paths"][0]
    assert reference["path"] == "fp32" and reference["sign_flip_fraction"] == 0.0
    for row in study["paths"]:
        assert set(row["robust_accuracy"]) == set(reference["robust_accuracy"])
        assert all(0.0 <= acc <= 1.0 for acc in row["robust_accuracy"].values())
        assert all(delta == 0.0 for delta in reference["robust_accuracy_delta_pp"].values())
    audit = payload["audit"]
    assert audit["parameter_grads_written"] is False
    assert audit["requires_grad_restored"] is True
    assert audit["output_has_graph"] is False
    assert audit["host_syncs_call_n_steps"] is None  # counted on CUDA only
    assert _positive(audit["eager_floor_frozen_vs_trainable_params"])


def test_markdown_has_every_section(results) -> None:
    payload, markdown = results
    for heading in (
        "# Attack loop benchmark",
        "## Fast paths",
        "## Accuracy effect",
        "## Loop audit",
    ):
        assert heading in markdown
    table_rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(table_rows) >= len(payload["cases"]) + len(payload["fast_paths"])


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_recorded_configs_time_torch_compile_on_a_fast_path_case(device: str) -> None:
    # The CPU config once named a compile case that was not among its fast-path cases, so
    # torch.compile was silently never timed.
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec = importlib.util.spec_from_file_location("attack_loop_bench", SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
        sys.modules.pop("attack_loop_bench", None)
    cfg = module.Config.for_device(device, quick=False, cpu_fp16=False)
    assert cfg.compile and cfg.compile_case in cfg.fast_cases
    assert any(p.compiled for p in module.fast_paths_for(cfg, cfg.compile_case))
