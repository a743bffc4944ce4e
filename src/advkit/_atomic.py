"""Atomic, durable file writes whose leftovers a later write cleans up.

A file is written to a temporary file in the same folder, flushed and fsynced, then renamed
over the destination (``os.replace`` is atomic on POSIX and Windows) and the folder is fsynced,
so a write interrupted at any point (even ``kill -9``) leaves the previous file intact. The
temporary file is named ``.<name>.<kind>.<pid>.<random>.tmp``: a process killed mid-write
cannot delete it, so every later write of the same ``kind`` removes the temporary files in
its folder whose writing process no longer runs on this machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO

_TEMP = re.compile(r"^\..+\.(?P<kind>[a-z-]+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")


def temp_name(path: Path, kind: str) -> Path:
    """A fresh temporary path next to ``path``, tagged with ``kind`` and this process's id."""
    return path.with_name(f".{path.name}.{kind}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True  # our own writes clean up after themselves
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else (or cannot tell): leave it alone
    return True


def remove_stale_temps(folder: Path, kind: str) -> list[Path]:
    """Delete the temporary files of ``kind`` in ``folder`` left by processes that are gone.

    Returns:
        The paths removed.
    """
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            match = _TEMP.match(entry.name)
            if match is None or match["kind"] != kind or _running(int(match["pid"])):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def atomic_write(path: Path, kind: str, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file atomically with ``write(file)``; see the module docstring.

    Args:
        path: Destination; its folder must exist.
        kind: Tag of this kind of file (lowercase letters and dashes).
        write: Writes the content to the open binary file.

    Returns:
        ``path``.
    """
    remove_stale_temps(path.parent, kind)
    tmp = temp_name(path, kind)
    try:
        with open(tmp, "xb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)
    return path


def fsync_directory(directory: Path) -> None:
    """Make a rename durable; not possible (nor needed) on every platform."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)
