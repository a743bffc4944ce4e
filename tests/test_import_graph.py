"""The import graph of advkit runs one way: read with ``ast``, without importing anything.

Fails on (a) a cycle between files, (b) a cycle between packages, (c) an import of an advkit
module inside a function or method, (d) an import of another package's private (underscore)
module or name, and (e) an edge against the floor order below. ``if TYPE_CHECKING:`` imports
count as annotations only: they are left out of the runtime graph (cycles and floors), but
must still not reach into another package's private names.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "advkit"

BASE = "base"
FLOORS: dict[str, int] = {
    # The base layer: argument checks, model-state guards, progress, atomic and checksummed
    # files, the torchrun process context. Its modules may import each other (no cycles).
    BASE: 0,
    "models": 1,
    "data": 1,
    "pruning": 2,  # graph, plan, apply, io: the base layer and models only
    "attacks": 2,
    "evaluation": 3,
    "certification": 4,  # randomized smoothing; training's smoothing objectives use it
    "training": 5,
    "recipes": 6,  # prune-and-fine-tune schedule, robust pruning, robust importances
    "advkit": 7,  # the package's __init__: re-exports everything
}
"""Floor of each package: an import must go to a strictly lower floor (or stay inside its own
package; base modules may import each other). Packages on one floor do not import each other."""


@dataclass(frozen=True)
class Edge:
    """One import of an advkit module: ``source`` imports ``target`` (both module names)."""

    source: str
    target: str
    names: tuple[str, ...]
    line: int
    in_function: bool
    type_checking: bool

    def where(self, root: Path) -> str:
        return f"{self.source} -> {self.target} {list(self.names)} (line {self.line})"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path) -> dict[str, Path]:
    """Every module under ``root`` (a package folder), by dotted name."""
    return {module_name(path, root): path for path in sorted(root.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return any(
        (isinstance(n, ast.Name) and n.id == "TYPE_CHECKING")
        or (isinstance(n, ast.Attribute) and n.attr == "TYPE_CHECKING")
        for n in ast.walk(test)
    )


def edges(root: Path) -> list[Edge]:
    """Every import of a module of ``root``'s package, with where it is made."""
    known = modules(root)
    top = root.name
    found: list[Edge] = []

    def add(source: str, target: str, names: tuple[str, ...], node: ast.stmt, f: bool, t: bool):
        found.append(Edge(source, target, names, node.lineno, f, t))

    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]

        def visit(
            node: ast.AST, in_function: bool, type_checking: bool, name=name, package=package
        ) -> None:
            for child in ast.iter_child_nodes(node):
                f = in_function or isinstance(
                    child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
                )
                if isinstance(child, ast.If) and _is_type_checking(child.test):
                    for stmt in child.body:
                        visit(ast.Module(body=[stmt], type_ignores=[]), f, True)
                    for stmt in child.orelse:
                        visit(ast.Module(body=[stmt], type_ignores=[]), f, type_checking)
                    continue
                if isinstance(child, ast.Import):
                    for alias in child.names:
                        if alias.name == top or alias.name.startswith(top + "."):
                            add(name, alias.name, (), child, f, type_checking)
                elif isinstance(child, ast.ImportFrom):
                    if child.level:
                        base = package.split(".")[: len(package.split(".")) - child.level + 1]
                        target = ".".join(base + ([child.module] if child.module else []))
                    else:
                        target = child.module or ""
                    if target == top or target.startswith(top + "."):
                        plain = tuple(
                            a.name for a in child.names if f"{target}.{a.name}" not in known
                        )
                        if plain or target != package:
                            add(name, target, plain, child, f, type_checking)
                        for alias in child.names:  # ``from pkg import submodule``
                            if f"{target}.{alias.name}" in known:
                                add(name, f"{target}.{alias.name}", (), child, f, type_checking)
                visit(child, f, type_checking)

        visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), False, False)
    return found


def package_of(module: str, root: Path) -> str:
    """The package a module belongs to: a subpackage, a top-level module, or the base layer."""
    parts = module.split(".")
    if len(parts) == 1:
        return parts[0]
    first = parts[1]
    if first.startswith("_"):
        return BASE
    return first


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (or a self-loop), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def connect(node: str) -> None:  # Tarjan, recursive: the graph is small
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(found)


def runtime_graph(all_edges: list[Edge], key) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for edge in all_edges:
        if edge.type_checking:
            continue
        a, b = key(edge.source), key(edge.target)
        if a != b or edge.source == edge.target:
            graph.setdefault(a, set()).add(b)
    return graph


def file_cycles(root: Path) -> list[str]:
    all_edges = edges(root)
    graph = runtime_graph(all_edges, lambda m: m)
    # An edge into a package's __init__ from inside that package does not form a cycle that
    # matters (the package is being imported already): keep only edges between files.
    for source, targets in graph.items():
        targets -= {t for t in targets if source.startswith(t + ".")}
    return [
        " -> ".join(component)
        + "\n    "
        + "\n    ".join(
            e.where(root)
            for e in all_edges
            if not e.type_checking and e.source in component and e.target in component
        )
        for component in cycles(graph)
    ]


def package_cycles(root: Path) -> list[str]:
    all_edges = edges(root)
    key = lambda m: package_of(m, root)  # noqa: E731
    graph = runtime_graph(all_edges, key)
    return [
        " <-> ".join(component)
        + "\n    "
        + "\n    ".join(
            e.where(root)
            for e in all_edges
            if not e.type_checking
            and key(e.source) in component
            and key(e.target) in component
            and key(e.source) != key(e.target)
        )
        for component in cycles(graph)
    ]


def inner_imports(root: Path) -> list[str]:
    return [e.where(root) for e in edges(root) if e.in_function]


def private_imports(root: Path) -> list[str]:
    """Imports of another package's underscore module or underscore name."""
    bad = []
    for e in edges(root):
        source_pkg, target_pkg = package_of(e.source, root), package_of(e.target, root)
        if source_pkg == target_pkg and source_pkg != BASE:
            continue
        if source_pkg == BASE and e.source == e.target:
            continue
        private_module = any(part.startswith("_") for part in e.target.split(".")[2:])
        private_names = [n for n in e.names if n.startswith("_") and n != "__version__"]
        if private_module or private_names:
            bad.append(e.where(root))
    return bad


def floor_violations(root: Path, floors: dict[str, int] = FLOORS) -> list[str]:
    bad = []
    for e in edges(root):
        if e.type_checking:
            continue
        source, target = package_of(e.source, root), package_of(e.target, root)
        if source == target:
            continue
        if source not in floors or target not in floors:
            missing = source if source not in floors else target
            bad.append(f"{e.where(root)}: package {missing!r} has no floor in FLOORS")
        elif floors[target] >= floors[source]:
            bad.append(
                f"{e.where(root)}: {source} (floor {floors[source]}) imports "
                f"{target} (floor {floors[target]})"
            )
    return bad


def _report(title: str, items: list[str]) -> str:
    return f"{len(items)} {title}:\n  " + "\n  ".join(items)


# --- the rules, on advkit itself ---------------------------------------------------------------


def test_the_scanner_sees_advkit() -> None:
    found = edges(SRC)
    assert len(modules(SRC)) > 90
    assert any(e.source == "advkit.attacks.base" and e.target == "advkit._checks" for e in found)
    assert any(
        e.target == "advkit.training" and e.source.startswith("advkit.recipes") for e in found
    )


def test_no_cycle_between_files() -> None:
    found = file_cycles(SRC)
    assert not found, _report("import cycles between files", found)


def test_no_cycle_between_packages() -> None:
    found = package_cycles(SRC)
    assert not found, _report("import cycles between packages", found)


def test_no_advkit_import_inside_a_function() -> None:
    found = inner_imports(SRC)
    assert not found, _report("imports of advkit modules inside functions", found)


def test_no_import_of_another_packages_private_names() -> None:
    found = private_imports(SRC)
    assert not found, _report("imports of another package's private module or name", found)


def test_imports_follow_the_floors() -> None:
    found = floor_violations(SRC)
    assert not found, _report("imports against the floor order", found)


# --- the checker catches what it is meant to catch ---------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "advkit"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    return root


def test_the_checker_finds_each_kind_of_fault(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "_checks.py": "def check_int(x): return x\n",
            "attacks/base.py": (
                "from advkit._checks import check_int\n"
                "from advkit.evaluation.robust import accuracy\n"  # against the floors
                "from advkit.training._finite import _inner\n"  # private module and name
            ),
            "evaluation/robust.py": (
                "from advkit.attacks import base\n"
                "def accuracy():\n"
                "    from advkit.training import loop\n"  # inside a function
            ),
            "training/_finite.py": "_inner = 1\n",
            "training/loop.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from advkit.recipes import schedule\n",
            "recipes/schedule.py": "import advkit.training.loop\n",
            "pruning/a.py": "from advkit.pruning.b import x\n",
            "pruning/b.py": "from advkit.pruning.a import y\n",
        },
    )
    assert any("advkit.pruning.a" in c and "advkit.pruning.b" in c for c in file_cycles(root))
    assert any(c.startswith("attacks <-> evaluation") for c in package_cycles(root))
    assert inner_imports(root) == [
        "advkit.evaluation.robust -> advkit.training [] (line 3)",
        "advkit.evaluation.robust -> advkit.training.loop [] (line 3)",
    ]
    assert private_imports(root) == [
        "advkit.attacks.base -> advkit.training._finite ['_inner'] (line 3)"
    ]
    against = floor_violations(root)
    assert any("attacks (floor 2) imports evaluation (floor 3)" in v for v in against)
    assert any("evaluation (floor 3) imports training (floor 5)" in v for v in against)
    # The TYPE_CHECKING import of recipes from training is an annotation: no cycle, no floor.
    assert not any("recipes" in c for c in package_cycles(root))
    assert not any("training (floor 5) imports recipes" in v for v in against)


@pytest.mark.parametrize("floors", [{**FLOORS, "pruning": 1}])
def test_a_package_without_a_floor_or_on_a_shared_floor_is_reported(
    tmp_path: Path, floors: dict[str, int]
) -> None:
    root = _tree(
        tmp_path,
        {
            "models.py": "x = 1\n",
            "pruning/graph.py": "from advkit.models import x\n",
            "extra/a.py": "from advkit.models import x\n",
        },
    )
    found = floor_violations(root, floors)
    assert any("pruning (floor 1) imports models (floor 1)" in v for v in found)
    assert any("package 'extra' has no floor" in v for v in found)
