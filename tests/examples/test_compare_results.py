"""examples/compare_results.py: the thread count and determinism settings come first."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))

from compare_results import main, settings_differences  # noqa: E402


def _results(threads: int, accuracy: float, **settings: object) -> dict:
    compute = {"torch_threads": threads, "deterministic_algorithms": False, **settings}
    return {
        "environment": {"torch_threads": threads, "compute_settings": compute},
        "models": {"pgd": {"clean": accuracy}},
    }


def test_a_different_thread_count_is_said_before_the_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(_results(2, 0.72)))
    second.write_text(json.dumps(_results(1, 0.70, deterministic_algorithms=True)))
    assert main([str(first), str(second), "--ignore", "environment"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("different thread count: 2 vs 1 torch threads")
    assert lines[1] == "different compute settings: deterministic_algorithms False vs True"
    assert "models.pgd.clean: 0.72 -> 0.7" in lines[2:]


def test_same_settings_say_nothing_and_older_files_compare_their_thread_count() -> None:
    assert settings_differences(_results(2, 0.5), _results(2, 0.6)) == []
    old = {"environment": {"torch_threads": 4}}  # a results.json without compute_settings
    (line,) = settings_differences(old, _results(2, 0.5))
    assert line.startswith("different thread count: 4 vs 2")
    assert settings_differences({}, {}) == []
