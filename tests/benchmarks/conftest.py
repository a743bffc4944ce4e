"""Import the benchmark scripts (``benchmarks/*.py``, not a package) as modules in tests."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def load_benchmark() -> Iterator[Callable[[str], ModuleType]]:
    """``load_benchmark("attack_loop")`` imports ``benchmarks/attack_loop.py``.

    The scripts import each other by their bare names (as a script's folder is on
    ``sys.path``); those modules are dropped again afterwards, so no test sees another's.
    """
    before = set(sys.modules)
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module
    finally:
        sys.path.remove(str(BENCHMARKS))
        for name in set(sys.modules) - before:
            path = getattr(sys.modules[name], "__file__", None) or ""
            if Path(path).parent == BENCHMARKS:
                del sys.modules[name]
