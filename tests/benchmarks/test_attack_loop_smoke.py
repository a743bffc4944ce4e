"""The attack-loop benchmark runs end to end in its quick mode and writes well-formed results.

The fast paths and their accuracy study are ``attack_fast_paths.py``'s (its own smoke test).

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
    assert set(payload) == {"benchmark", "complete", "config", "environment", "cases", "audit"}
    assert payload["complete"] is True  # partial saves during the run end in a complete one
    assert payload["config"]["device"] == "cpu" and payload["config"]["quick"] is True
    environment = payload["environment"]
    assert environment["threads"] == 1  # the harness's record of what --threads set
    assert isinstance(environment["torch"], str) and environment["device"] == "cpu"
    assert "ONEDNN_MAX_CPU_ISA" in environment["isa_env"]
    assert "torchattacks" in environment


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


def test_loop_audit(results) -> None:
    payload, _ = results
    audit = payload["audit"]
    assert audit["parameter_grads_written"] is False
    assert audit["requires_grad_restored"] is True
    assert audit["output_has_graph"] is False
    assert audit["host_syncs_call_n_steps"] is None  # counted on CUDA only
    assert _positive(audit["eager_floor_frozen_vs_trainable_params"])


def test_markdown_has_every_section(results) -> None:
    payload, markdown = results
    for heading in ("# Attack loop benchmark", "## Loop audit"):
        assert heading in markdown
    assert "## Fast paths" not in markdown
    table_rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(table_rows) == len(payload["cases"]) + 1  # and the header


def test_quick_runs_write_quick_paths_unless_told(load_benchmark) -> None:
    module = load_benchmark("attack_loop")
    parser = module.parser_with_common_options("test")
    json_path, md_path = module.output_paths(parser.parse_args(["--quick"]), "attack_loop_cpu")
    assert (json_path.name, md_path.name) == (
        "attack_loop_cpu_quick.json",
        "attack_loop_cpu_quick.md",
    )
    assert json_path.parent.name == "results"
    recorded, _ = module.output_paths(parser.parse_args([]), "attack_loop_cpu")
    assert recorded.name == "attack_loop_cpu.json"
    given = parser.parse_args(["--quick", "--json", "/tmp/x.json"])
    assert str(module.output_paths(given, "attack_loop_cpu")[0]) == "/tmp/x.json"
