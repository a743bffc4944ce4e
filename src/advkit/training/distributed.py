"""The Trainer's process-group plumbing, kept at its documented import path.

The process context itself lives in the base layer (``advkit._process``), so that the sharded
evaluation uses it without importing the training package; this module re-exports it.
"""

from __future__ import annotations

from advkit._process import ProcessContext, release_at_exit, resolve_context

__all__ = ["ProcessContext", "release_at_exit", "resolve_context"]
