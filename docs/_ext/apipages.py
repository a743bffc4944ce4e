"""Write the API reference pages from the packages' ``__all__``, so new public names appear.

At ``config-inited`` (before Sphinx looks for source files) this writes, under
``docs/api/generated/``:

- ``advkit.<package>.rst`` for every public subpackage or module that defines ``__all__``: its
  docstring and an ``autosummary`` table (with ``:toctree:``, so each name gets a stub page)
  grouped into classes, functions, exceptions and constants;
- ``advkit.rst``: the top-level names, each linked to the page of the subpackage that owns it;
- ``toctree.inc``: the toctree that ``docs/api/index.rst`` includes.

Packages that do not exist yet are skipped; a package that exists but fails to import is an
error. ``docs/check_api.py`` imports :func:`public_packages` and :func:`home_of` from here so the
check and the pages agree on what "public" means.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = "advkit"
# Reading order of the reference; public subpackages not listed here follow alphabetically.
PREFERRED_ORDER = (
    "attacks",
    "models",
    "pruning",
    "training",
    "evaluation",
    "certification",
    "recipes",
    "data",
)
GENERATED = Path(__file__).resolve().parent.parent / "api" / "generated"

KIND_TITLES = {
    "class": "Classes",
    "function": "Functions",
    "exception": "Exceptions",
    "data": "Constants and type aliases",
}


def _import_if_present(name: str) -> ModuleType | None:
    """Import ``name``; ``None`` only if that very module does not exist (yet)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name == name:
            return None
        raise


def public_packages() -> list[ModuleType]:
    """The public submodules of advkit that declare ``__all__``, in reading order.

    A module counts if its name has no leading underscore and it defines ``__all__``: a folder
    that is still being written (no ``__init__`` or no ``__all__`` yet) has no public names.
    """
    root = importlib.import_module(ROOT)
    found = {info.name for info in pkgutil.iter_modules(root.__path__)}
    found |= {
        name for name in getattr(root, "__all__", ()) if inspect.ismodule(getattr(root, name))
    }
    names = [name for name in PREFERRED_ORDER if name in found]
    names += sorted(name for name in found - set(PREFERRED_ORDER) if not name.startswith("_"))
    modules = (_import_if_present(f"{ROOT}.{name}") for name in names)
    return [module for module in modules if module is not None and hasattr(module, "__all__")]


def kind_of(obj: Any) -> str:
    """The section a public object is listed in."""
    if inspect.isclass(obj):
        return "exception" if issubclass(obj, BaseException) else "class"
    if inspect.isroutine(obj):
        return "function"
    return "data"


def home_of(name: str, packages: list[ModuleType]) -> ModuleType | None:
    """The first subpackage that exports the top-level ``advkit.<name>`` under the same name."""
    obj = getattr(importlib.import_module(ROOT), name)
    for package in packages:
        if name in package.__all__ and getattr(package, name, None) is obj:
            return package
    return None


def _own_names(packages: list[ModuleType]) -> list[str]:
    """Top-level names that no subpackage exports: documented on the ``advkit`` page itself."""
    root = importlib.import_module(ROOT)
    return [
        name
        for name in root.__all__
        if name != "__version__"
        and not inspect.ismodule(getattr(root, name))
        and home_of(name, packages) is None
    ]


def _title(text: str, char: str = "=") -> str:
    return f"{text}\n{char * len(text)}\n"


def _autosummary(names: list[str], toctree: bool) -> str:
    options = "   :toctree: .\n   :nosignatures:\n" if toctree else "   :nosignatures:\n"
    return ".. autosummary::\n" + options + "\n" + "".join(f"   {n}\n" for n in names) + "\n"


def package_page(package: ModuleType) -> str:
    """The page of one subpackage: its docstring, then its ``__all__`` grouped by kind."""
    groups: dict[str, list[str]] = {kind: [] for kind in KIND_TITLES}
    for name in package.__all__:
        groups[kind_of(getattr(package, name))].append(name)
    parts = [
        _title(f"``{package.__name__}``"),
        f"\n.. automodule:: {package.__name__}\n\n.. currentmodule:: {package.__name__}\n\n",
    ]
    for kind, names in groups.items():
        if names:
            parts += [_title(KIND_TITLES[kind], "-"), "\n", _autosummary(names, toctree=True)]
    return "".join(parts)


def root_page(packages: list[ModuleType]) -> str:
    """The ``advkit`` page: re-exported names link to their subpackage's pages."""
    root = importlib.import_module(ROOT)
    exported: list[str] = []
    modules: list[str] = []
    own = _own_names(packages)
    for name in root.__all__:
        obj = getattr(root, name)
        if inspect.ismodule(obj):
            modules.append(obj.__name__)
        elif name != "__version__" and (home := home_of(name, packages)) is not None:
            # Relative to the current module ``advkit``, as autosummary wants it.
            exported.append(f"~{home.__name__.removeprefix(ROOT + '.')}.{name}")
    parts = [
        _title(f"``{ROOT}``"),
        f"\n.. automodule:: {ROOT}\n\n.. currentmodule:: {ROOT}\n\n",
        ".. py:data:: __version__\n   :type: str\n",
        f"   :value: {root.__version__!r}\n\n   The installed version of advkit.\n\n",
    ]
    if exported:
        parts += [
            _title("Names at the top level", "-"),
            "\nImport these as ``advkit.<name>``; each is documented in its subpackage.\n\n",
            _autosummary(exported, toctree=False),
        ]
    if own:
        parts += [_title("Defined here", "-"), "\n", _autosummary(own, toctree=True)]
    if modules:
        listed = "".join(f"- :mod:`{module}`\n" for module in modules)
        parts += [_title("Subpackages", "-"), "\n", listed, "\n"]
    return "".join(parts)


def _write_if_changed(path: Path, text: str) -> None:
    # Rewriting an unchanged page would make Sphinx re-read it on every incremental build.
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def write_pages(*_: Any) -> None:
    """Write every API page and the toctree include (a ``config-inited`` handler)."""
    GENERATED.mkdir(parents=True, exist_ok=True)
    packages = public_packages()
    wanted = {f"{ROOT}.rst": root_page(packages)}
    wanted |= {f"{package.__name__}.rst": package_page(package) for package in packages}
    for name, text in wanted.items():
        _write_if_changed(GENERATED / name, text)
    entries = [ROOT] + [package.__name__ for package in packages]
    toctree = ".. toctree::\n   :maxdepth: 1\n\n" + "".join(f"   generated/{e}\n" for e in entries)
    _write_if_changed(GENERATED / "toctree.inc", toctree)
    # Pages and stubs left by an earlier build for names since removed would be orphans.
    stubs = {f"{p.__name__}.{name}.rst" for p in packages for name in p.__all__}
    stubs |= {f"{ROOT}.{name}.rst" for name in _own_names(packages)}
    for stale in GENERATED.glob(f"{ROOT}.*.rst"):
        if stale.name not in wanted and stale.name not in stubs:
            stale.unlink()


def setup(app: Any) -> dict[str, Any]:
    # config-inited runs before Sphinx lists the source files, so the pages are found, and
    # before autosummary's builder-inited handler, so their stubs are generated too.
    app.connect("config-inited", write_pages)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
