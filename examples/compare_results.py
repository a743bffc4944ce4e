#!/usr/bin/env python
"""List where two ``results.json`` files of the study differ, field by field.

Usage::

    python examples/compare_results.py RUN_A/results.json RUN_B/results.json [--ignore KEY ...]

First says whether the two runs used another torch thread count or other determinism
settings (``environment.compute_settings``): results computed with other settings differ from
the first epoch on, and that is not a bug. Then prints one line per differing leaf (its JSON path and both values, shortened) and a count per
top-level section; exits with status 1 if anything outside the ignored top-level sections
differs. Used to compare a single-process run with a ``torchrun`` run (docs: "Scaling out").
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def leaves(data: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every leaf of a JSON document with its path (``a.b[2].c``)."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from leaves(value, f"{path}.{key}" if path else str(key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from leaves(value, f"{path}[{index}]")
    else:
        yield path, data


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _settings(results: dict[str, Any]) -> dict[str, Any]:
    """A run's compute settings; the thread count alone for files of older versions."""
    environment = results.get("environment", {})
    recorded = environment.get("compute_settings")
    if recorded is not None:
        return dict(recorded)
    threads = environment.get("torch_threads")
    return {} if threads is None else {"torch_threads": threads}


def settings_differences(first: dict[str, Any], second: dict[str, Any]) -> list[str]:
    """Lines that say which compute settings of two results files differ, thread count first."""
    a, b = _settings(first), _settings(second)
    lines = []
    if a.get("torch_threads") != b.get("torch_threads"):
        lines.append(
            f"different thread count: {a.get('torch_threads')} vs {b.get('torch_threads')} torch "
            "threads; results computed on the CPU differ from the first epoch on"
        )
    other = sorted(k for k in a.keys() & b.keys() if k != "torch_threads" and a[k] != b[k])
    if other:
        lines.append(
            "different compute settings: "
            + ", ".join(f"{key} {a[key]} vs {b[key]}" for key in other)
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument(
        "--ignore", nargs="*", default=[], help="top-level sections whose differences are expected"
    )
    parser.add_argument("--show", type=int, default=20, help="differences printed per section")
    args = parser.parse_args(argv)
    first_run, second_run = json.loads(args.first.read_text()), json.loads(args.second.read_text())
    for line in settings_differences(first_run, second_run):
        print(line)
    first = dict(leaves(first_run))
    second = dict(leaves(second_run))
    differing = sorted(p for p in first.keys() | second.keys() if first.get(p) != second.get(p))
    sections = Counter(p.split(".")[0].split("[")[0] for p in differing)
    shown: Counter[str] = Counter()
    for path in differing:
        section = path.split(".")[0].split("[")[0]
        shown[section] += 1
        if shown[section] <= args.show:
            print(f"{path}: {_short(first.get(path))} -> {_short(second.get(path))}")
    print(f"{len(first)} leaves compared; differing per section: {dict(sections) or 'none'}")
    unexpected = set(sections) - set(args.ignore)
    if unexpected:
        print(f"differences outside the ignored sections: {sorted(unexpected)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
