"""Check that every public name of advkit is in the built API reference, with its docstring.

Run after the HTML build, from the repository root::

    sphinx-build -W --keep-going -b html docs docs/_build/html
    python docs/check_api.py [--html docs/_build/html]

The public names are ``advkit.__all__`` and the ``__all__`` of every public subpackage (the
same list ``docs/_ext/apipages.py`` writes the pages from). A name counts as documented if the
build's object inventory (``objects.inv``) lists it under its public name and its entry on the
page has text of its own: a docstring, or for an alias such as ``BIM = IFGSM`` a link to the
documented object. Exits with status 1 and lists every name that fails, else prints a summary.
"""

from __future__ import annotations

import argparse
import html
import importlib
import inspect
import re
import sys
import zlib
from pathlib import Path
from types import ModuleType

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent / "src"))  # a fresh clone checks its own sources

from apipages import ROOT, home_of, public_packages  # noqa: E402

_INVENTORY_HEADER = b"# Sphinx inventory version 2"
_ENTRY = re.compile(r"(?P<name>.+?)\s+(?P<role>\S+:\S+)\s+-?\d+\s+(?P<uri>\S*)\s+(?P<shown>.*)")


def read_inventory(path: Path) -> dict[str, tuple[str, str]]:
    """``name -> (role, uri)`` of every object in a Sphinx ``objects.inv`` (version 2)."""
    with path.open("rb") as file:
        header = [file.readline() for _ in range(4)]
        if not header[0].startswith(_INVENTORY_HEADER):
            raise ValueError(f"{path} is not a version 2 Sphinx inventory: {header[0]!r}")
        body = zlib.decompress(file.read()).decode("utf-8")
    objects: dict[str, tuple[str, str]] = {}
    for line in body.splitlines():
        match = _ENTRY.match(line)
        if match is None:
            continue
        name, uri = match["name"], match["uri"]
        if uri.endswith("$"):
            uri = uri[:-1] + name
        objects.setdefault(name, (match["role"], uri))
    return objects


def expected_names() -> dict[str, object]:
    """Every public full name that must have an API entry, with its object."""
    root = importlib.import_module(ROOT)
    packages = public_packages()
    expected: dict[str, object] = {}
    for package in packages:
        expected[package.__name__] = package
        for name in package.__all__:
            expected[f"{package.__name__}.{name}"] = getattr(package, name)
    for name in root.__all__:
        obj = getattr(root, name)
        if inspect.ismodule(obj):
            expected[obj.__name__] = obj
        else:
            home = home_of(name, packages) if name != "__version__" else None
            # A re-exported name is documented once, in the subpackage that owns it.
            full = f"{home.__name__}.{name}" if home is not None else f"{ROOT}.{name}"
            expected[full] = obj
    return expected


def _description(page: str, anchor: str) -> str:
    """The HTML of the ``<dd>`` that follows the ``<dt id=anchor>`` on a page, nested parts cut."""
    start = page.find(f'id="{anchor}"')
    if start < 0:
        return ""
    opened = page.find("<dd>", page.find("</dt>", start))
    if opened < 0:
        return ""
    # Only the object's own text: stop at the first nested description list (its members).
    nested = page.find("<dl", opened)
    closed = page.find("</dd>", opened)
    end = min(i for i in (nested, closed) if i >= 0) if max(nested, closed) >= 0 else len(page)
    return page[opened + len("<dd>") : end]


_BASES = re.compile(r"<p>\s*Bases:.*?</p>", re.DOTALL)
_ALIAS = re.compile(r"<p>\s*alias of.*?</p>", re.DOTALL)


def has_docstring(description: str) -> bool:
    """Whether an entry shows text of its own, or is an alias linking to a documented object.

    autodoc adds a "Bases: ..." line to classes and an "alias of ..." line to aliases; neither
    is a docstring. A type alias (``ModelMode = Literal[...]``) needs one; a class alias
    (``BIM = IFGSM``) is documented by the class it links to.
    """
    description = _BASES.sub("", description)
    for alias in _ALIAS.findall(description):
        if 'class="reference internal"' in alias:
            return True
        description = description.replace(alias, "")
    return bool(html.unescape(re.sub(r"<[^>]+>", " ", description)).strip())


def check(html_dir: Path) -> list[str]:
    """Every problem found, one line each; empty if every public name is documented."""
    inventory_path = html_dir / "objects.inv"
    if not inventory_path.is_file():
        return [f"{inventory_path} not found: build the HTML docs first"]
    inventory = read_inventory(inventory_path)
    pages: dict[str, str] = {}
    problems: list[str] = []
    for full_name, obj in expected_names().items():
        if full_name not in inventory:
            problems.append(f"{full_name}: missing from the API reference")
            continue
        if isinstance(obj, ModuleType):
            if not (obj.__doc__ or "").strip():
                problems.append(f"{full_name}: the module has no docstring")
            continue
        _, uri = inventory[full_name]
        page_name, _, anchor = uri.partition("#")
        if page_name not in pages:
            pages[page_name] = (html_dir / page_name).read_text(encoding="utf-8")
        description = _description(pages[page_name], anchor)
        if not has_docstring(description):
            problems.append(f"{full_name}: on {page_name} but without a docstring")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--html",
        type=Path,
        default=DOCS / "_build" / "html",
        help="the HTML build folder (default: docs/_build/html)",
    )
    args = parser.parse_args(argv)
    problems = check(args.html)
    if problems:
        print(f"{len(problems)} public name(s) not properly in the API reference:")
        for problem in problems:
            print(f"  {problem}")
        return 1
    print(f"All {len(expected_names())} public names of {ROOT} are in the API reference.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
