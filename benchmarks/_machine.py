"""Kept for ``pruning.py`` until it moves to the shared harness; use ``_harness`` instead."""

from __future__ import annotations

from _harness import cpu_name  # benchmarks/ is on sys.path when a script runs

__all__ = ["cpu_name"]
