"""Kept only for ``autoattack.py`` until it moves to the shared harness; use ``_harness``.

Delete this module once ``autoattack.py`` imports ``cpu_name`` (or ``environment``) from
``_harness``: no other script uses it.
"""

from __future__ import annotations

from _harness import cpu_name  # benchmarks/ is on sys.path when a script runs

__all__ = ["cpu_name"]
