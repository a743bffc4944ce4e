"""The README and the installation page: extras, CPU-only installs, no file outside the repo."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[2]
CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"


def _package(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()


def test_the_table_of_extras_lists_what_each_extra_installs() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    page = (REPO / "docs" / "installation.rst").read_text()
    table = page[page.index("Optional extras") : page.index("Building this documentation")]
    rows: dict[str, str] = {}
    for line in table.splitlines():
        match = re.match(r"^``(\w+)``\s+(.*)$", line)
        if match:
            current = match[1]
            rows[current] = match[2]
        elif line.startswith(" " * 15) and line.strip() and rows:
            rows[current] += " " + line.strip()
    assert set(rows) == set(extras)
    for extra, requirements in extras.items():
        listed = {name.strip().lower() for name in re.split(r"[,:]| for ", rows[extra])}
        missing = {_package(r) for r in requirements} - listed
        assert not missing, f"the {extra!r} row does not list {sorted(missing)}"


@pytest.mark.parametrize("document", ["README.md", "docs/installation.rst"])
def test_every_install_command_has_a_cpu_only_line_next_to_it(document: str) -> None:
    lines = (REPO / document).read_text().splitlines()
    commands = [  # command lines (not prose) that install advkit without the CPU index
        i
        for i, line in enumerate(lines)
        if line.strip().startswith(("python3", "pip install"))
        and "pip install -e" in line
        and CPU_INDEX not in line
    ]
    assert commands
    for index in commands:
        follower = lines[index + 2] if index + 2 < len(lines) else ""
        # The next line is a comment naming the alternative, the one after it the command.
        assert "CPU-only" in lines[index + 1], f"{document}:{index + 1}: no CPU-only line after it"
        assert CPU_INDEX in follower and "pip install -e" in follower
        assert follower.split(CPU_INDEX, 1)[1].strip().startswith("&& pip install -e")
        expected = lines[index].strip().split("pip install -e", 1)[1]
        assert follower.strip().endswith("pip install -e" + expected)


def test_no_document_names_a_file_outside_the_repository() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "*.md", "*.rst", "*.py", "*.txt"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    outside = re.compile(r"/work/|\.\./shared/|shared/tools/|cpu_factor\.py|/home/\w+/")
    here = Path(__file__).relative_to(REPO).as_posix()
    found = [
        f"{name}:{number}: {line.strip()}"
        for name in tracked
        if name != here
        for number, line in enumerate((REPO / name).read_text(errors="replace").splitlines(), 1)
        if outside.search(line)
    ]
    assert not found, "\n".join(found)
