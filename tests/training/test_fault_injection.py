"""SIGKILL during saves leaves the last good file loadable and no temporary file for long."""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "fault_injection.py"
spec = importlib.util.spec_from_file_location("fault_injection", TOOL)
assert spec is not None and spec.loader is not None
fault_injection = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fault_injection)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs fork and SIGKILL")


@pytest.mark.parametrize("kind", fault_injection.KINDS)
def test_kill_during_save_at_random_moments(kind: str, tmp_path: Path) -> None:
    rng = random.Random(fault_injection.KINDS.index(kind))
    for trial in range(2):
        folder = tmp_path / str(trial)
        folder.mkdir()
        result = fault_injection.trial(kind, folder, rng, max_delay=0.3)
        assert result["ok"], result


@pytest.mark.parametrize("kind", fault_injection.KINDS)
def test_the_next_save_removes_a_dead_process_temp_file(kind: str, tmp_path: Path) -> None:
    # A process that is certainly gone: its temp file is what a kill -9 leaves.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)
    tag = "advkit-pruned" if kind == "pruned" else "advkit-checkpoint"
    other = "advkit-checkpoint" if kind == "pruned" else "advkit-pruned"
    stale = tmp_path / f".old.pt.{tag}.{pid}.0123abcd.tmp"
    foreign = tmp_path / f".old.pt.{other}.{pid}.0123abcd.tmp"
    unrelated = tmp_path / ".notes.tmp"
    for path in (stale, foreign, unrelated):
        path.write_bytes(b"x" * 100)
    fault_injection.save(kind, tmp_path / "new.pt", seed=0)
    assert not stale.exists()
    assert foreign.exists() and unrelated.exists()  # another kind's, or not ours at all
