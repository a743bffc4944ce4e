"""The code blocks of the docs' pages as a reader sees them in the HTML, and a runner for them.

A block is shown if it is the body of a ``doctest``, ``testcode`` or Python ``code-block``
directive (without ``:hide:``), or a bare ``>>>`` paragraph. ``testsetup`` and
``testcleanup`` bodies are *not* shown, so a page that relies on them fails here: that is the
point. Markdown (the README) contributes its fenced ``python`` blocks.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GUIDES = sorted((REPO / "docs" / "guide").glob("*.rst"))

_DIRECTIVE = re.compile(r"^(?P<indent> *)\.\. (?P<name>[\w-]+)::\s*(?P<arg>\S*)\s*$")
_SHOWN_CODE = {"doctest", "testcode", "code-block", "code", "sourcecode"}
_HIDDEN = {"testsetup", "testcleanup"}
_PYTHON = {"", "python", "python3", "py", "pycon"}
_TORCHRUN = re.compile(r"^# (?P<script>\S+\.py) -- launch with:\s+torchrun")


@dataclass(frozen=True)
class Block:
    """One code block: its text as shown, where it starts, and how it runs."""

    source: str
    path: Path
    line: int
    kind: str  # "doctest" (a >>> session) or "code"

    @property
    def torchrun_script(self) -> str | None:
        """The script name if the block is a torchrun script (``# x.py -- launch with: ...``)."""
        match = _TORCHRUN.match(self.source)
        return match["script"] if match else None


def _body(lines: list[str], start: int, indent: int) -> tuple[list[str], list[str], int]:
    """Options and body of the directive at ``lines[start]``, and the index after it."""
    options, body, index = [], [], start + 1
    while index < len(lines):
        line = lines[index]
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        if not body and line.strip().startswith(":"):
            options.append(line.strip())
        else:
            body.append(line)
        index += 1
    return options, body, index


def rst_blocks(path: Path) -> list[Block]:
    """The code blocks a reader sees on the page of the reStructuredText file ``path``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    hidden: list[str] = []
    index = 0
    while index < len(lines):
        match = _DIRECTIVE.match(lines[index])
        if match is None:
            if lines[index].startswith(">>> "):  # a bare doctest paragraph
                end = index
                while end < len(lines) and lines[end].strip():
                    end += 1
                blocks.append(Block("\n".join(lines[index:end]) + "\n", path, index + 1, "doctest"))
                index = end
                continue
            index += 1
            continue
        name, arg = match["name"], match["arg"]
        options, body, after = _body(lines, index, len(match["indent"]))
        text = textwrap.dedent("\n".join(body)).strip("\n") + "\n"
        if name in _HIDDEN or ":hide:" in options:
            hidden.append(f"{path.name}:{index + 1} ({name})")
        elif name in _SHOWN_CODE and (name != "code-block" or arg in _PYTHON):
            kind = "doctest" if text.lstrip().startswith(">>>") else "code"
            blocks.append(Block(text, path, index + 2 + len(options), kind))
        index = after
    if hidden:
        raise AssertionError(f"code the page runs but does not show: {hidden}")
    return blocks


def markdown_blocks(path: Path) -> list[Block]:
    """The fenced ``python`` blocks of a Markdown file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        if lines[index].strip() in ("```python", "```py"):
            end = index + 1
            while lines[end].strip() != "```":
                end += 1
            blocks.append(Block("\n".join(lines[index + 1 : end]) + "\n", path, index + 2, "code"))
            index = end
        index += 1
    return blocks


RUNNER = """
import doctest, sys, traceback
blocks = {blocks!r}
alone = {alone!r}
flags = doctest.ELLIPSIS | doctest.IGNORE_EXCEPTION_DETAIL | doctest.DONT_ACCEPT_TRUE_FOR_1
failed = []


def run(kind, source, name, line, namespace):
    if kind == "code":
        try:
            exec(compile(source, f"{{name}}:{{line}}", "exec"), namespace)
        except Exception:
            traceback.print_exc()
            failed.append(f"{{name}}:{{line}}")
        return namespace
    test = doctest.DocTestParser().get_doctest(source, namespace, name, name, line - 1)
    runner = doctest.DocTestRunner(optionflags=flags)
    runner.run(test, clear_globs=False)
    if runner.failures:
        failed.append(f"{{name}}:{{line}} ({{runner.failures}} example(s))")
    return test.globs  # the DocTest ran on a copy: carry its names on


if alone:  # the page's setup (its first block), then each other block alone, each afresh
    setup, *rest = blocks
    if not rest:
        run(*setup, {{"__name__": "__main__"}})
    for block in rest:
        run(*block, run(*setup, {{"__name__": "__main__"}}))
else:
    namespace = {{"__name__": "__main__"}}
    for block in blocks:
        namespace = run(*block, namespace)
        if failed:
            break
if failed:
    sys.exit("failed: " + ", ".join(failed))
"""


def runner_script(blocks: list[Block], *, alone: bool = False) -> str:
    """A script that runs ``blocks``, the ``>>>`` sessions checked as doctests.

    With ``alone=False`` the blocks run in order in one namespace. With ``alone=True`` the
    first block is the page's setup and every other block runs right after it in a fresh
    namespace, as a reader who pastes the setup and then that one block would run it.
    """
    shown = [(b.kind, b.source, b.path.name, b.line) for b in blocks]
    return RUNNER.format(blocks=shown, alone=alone)
