"""Stage caching: every stage's output lives in its own folder, keyed by the settings it used.

A stage's key hashes the settings that affect its numbers and the keys of the stages it builds
on, so changing ``--prune-epochs`` recomputes the pruning stages and everything downstream of
them, and nothing else. A stage is complete once its ``stage.json`` is written (atomically, as
the last step); a folder without it, or with another key, is stale and is cleared before the
stage runs again. Training stages also keep a Trainer checkpoint after every epoch, so an
interrupted stage resumes at its last finished epoch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .processes import barrier, is_main

__all__ = ["StageCache", "StageRecord", "stage_key", "write_json"]

logger = logging.getLogger("study")

_STAGE_FILE = "stage.json"


def stage_key(settings: Mapping[str, Any], parents: tuple[str, ...] = ()) -> str:
    """A short hash of ``settings`` (JSON-serializable) and the keys of the parent stages."""
    text = json.dumps({"settings": settings, "parents": list(parents)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_json(data: Any, path: Path) -> None:
    """Write ``data`` as indented JSON, atomically (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class StageRecord:
    """How a stage went in this run: computed or taken from the cache, and how long it took.

    ``computed`` holds the wall and CPU seconds of the run that computed a cached stage.
    """

    name: str
    key: str
    status: str
    seconds: float
    cpu_seconds: float
    computed: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields by name (``cpu_seconds``: CPU time of this process, all threads)."""
        record: dict[str, Any] = {
            "key": self.key,
            "status": self.status,
            "seconds": round(self.seconds, 2),
            "cpu_seconds": round(self.cpu_seconds, 2),
        }
        if self.computed is not None:
            record["computed_seconds"] = self.computed["seconds"]
            record["computed_cpu_seconds"] = self.computed["cpu_seconds"]
        return record


@dataclass
class StageCache:
    """The stage folders under ``root / "stages"`` and the log of this run's stages."""

    root: Path
    records: dict[str, StageRecord] = field(default_factory=dict)

    def folder(self, name: str) -> Path:
        """The folder of stage ``name``."""
        return self.root / "stages" / name

    def cached(self, name: str, key: str, files: tuple[str, ...] = ()) -> dict[str, Any] | None:
        """What stage ``name`` stored if it completed with ``key``, else ``None``.

        The stored dict holds ``result`` and ``timing``. A stage whose ``files`` are not all
        in its folder counts as not completed.
        """
        path = self.folder(name) / _STAGE_FILE
        if not path.is_file() or not all((self.folder(name) / f).is_file() for f in files):
            return None
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        if not isinstance(stored, dict) or stored.get("key") != key or "result" not in stored:
            return None
        return stored

    def prepare(self, name: str, key: str) -> Path:
        """The folder of a stage about to run; cleared if it holds another key's leftovers.

        Leftovers of the same key (a Trainer checkpoint of an interrupted run) are kept so
        the stage can resume from them.
        """
        folder = self.folder(name)
        marker = folder / "key.txt"
        if folder.exists() and (not marker.is_file() or marker.read_text().strip() != key):
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        marker.write_text(key + "\n")
        return folder

    def run(
        self,
        name: str,
        settings: Mapping[str, Any],
        compute: Callable[[Path], dict[str, Any]],
        parents: tuple[str, ...] = (),
        files: tuple[str, ...] = (),
    ) -> tuple[dict[str, Any], str]:
        """Return stage ``name``'s result and key, computing it unless it is cached.

        Under torchrun every process calls it: all of them compute the stage (training and
        evaluation are shared among them), rank 0 alone clears the folder and writes files,
        and the others wait for it.

        Args:
            name: The stage (also its folder's name).
            settings: What affects the result (JSON-serializable).
            compute: Called with the stage folder when the stage must run; returns the
                JSON-serializable result. Files it needs later go into the folder.
            parents: Keys of the stages this one builds on.
            files: Files ``compute`` writes into the folder that later stages read.
        """
        key = stage_key(settings, parents)
        start, cpu_start = time.perf_counter(), time.process_time()
        stored = self.cached(name, key, files)
        barrier()  # every process has looked before rank 0 may clear the folder
        if stored is not None:
            logger.info("stage %s: cached (key %s)", name, key)
            self.records[name] = StageRecord(
                name,
                key,
                "cached",
                time.perf_counter() - start,
                time.process_time() - cpu_start,
                stored.get("timing"),
            )
            return stored["result"], key
        logger.info("stage %s: computing (key %s)", name, key)
        folder = self.folder(name)
        if is_main():
            self.prepare(name, key)
        barrier()
        result = compute(folder)  # under torchrun: every process, writing files on rank 0
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        timing = {"seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2)}
        barrier()  # the stage's files are complete before it is marked done
        if is_main():
            write_json(
                {"key": key, "settings": settings, "timing": timing, "result": result},
                folder / _STAGE_FILE,
            )
        barrier()
        self.records[name] = StageRecord(name, key, "computed", seconds, cpu_seconds)
        logger.info("stage %s: done in %.1f s", name, seconds)
        return result, key

    def summary(self) -> dict[str, dict[str, Any]]:
        """Every stage of this run by name: key, status and seconds."""
        return {name: record.to_dict() for name, record in self.records.items()}
