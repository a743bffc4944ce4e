"""Make the offline, nitpicky build resolve what the source docstrings and annotations name.

Every public object is documented once, under its public name (``advkit.data.stratified_split``).
Docstrings and annotations, however, name things as the code sees them:

- by their defining module (``advkit.data.split.stratified_split``): linked to the public page;
- relative to a public name (``Attack.run`` from another subpackage): linked likewise;
- objects outside advkit (``Tensor``, ``nn.Module``, ``fnmatch.fnmatchcase``), or private type
  aliases of annotations (``Mode = Literal["min", "max"]``): shown as plain text, since the build
  fetches no intersphinx inventory and aliases have no page;
- napoleon reads a property docstring ``"Per-sample bool: ..."`` as a type; such a "type" is not
  a Python name and is shown as text.

Anything else that does not resolve still warns, so a typo in a reference fails the build.

The constants re-exported by a package (``advkit.data.CLASSES``) have their docstring in the
defining module, where autodoc does not look; :func:`reexported_constant_doc` fetches it.

A private base class that several public classes share (``_Monitor`` of ``EarlyStopping``)
has no page: :func:`public_bases` shows its own bases in its place.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import typing
from functools import cache
from types import ModuleType
from typing import Any

from apipages import ROOT, public_packages
from docutils import nodes
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docstrings import prepare_docstring

_DOTTED_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


@cache
def _public_names() -> dict[tuple[int, str], str]:
    """``(id(object), name) -> public full name`` for every package and public name.

    Classes and functions are also keyed by their ``__name__``, so a reference through any
    module finds them; constants only under their own name, since equal values may be one
    object (``id`` of an interned string or small int says nothing about which constant it is).
    """
    names: dict[tuple[int, str], str] = {}
    for package in public_packages():
        short = package.__name__.rpartition(".")[2]
        names.setdefault((id(package), short), package.__name__)
        for name in package.__all__:
            obj = getattr(package, name)
            names.setdefault((id(obj), name), f"{package.__name__}.{name}")
            if inspect.isclass(obj) or inspect.isroutine(obj):
                # An alias (BIM = IFGSM) reached by the class's own name links to the class.
                names.setdefault((id(obj), obj.__name__), f"{package.__name__}.{obj.__name__}")
    return names


def _advkit_modules() -> list[ModuleType]:
    return [m for n, m in list(sys.modules.items()) if n == ROOT or n.startswith(ROOT + ".")]


def _lookup(path: str) -> tuple[bool, Any]:
    """Import the longest module prefix of ``path`` and follow the rest as attributes."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for part in parts[split:]:
                obj = getattr(obj, part)
        except AttributeError:
            return False, None
        return True, obj
    return False, None


def _public_target(target: str, module: str | None) -> str | None:
    """The public name of what ``target`` names, read as absolute or relative to a package."""
    parts = target.split(".")
    prefixes = [""] + ([f"{module}."] if module else [])
    prefixes += [f"{package.__name__}." for package in public_packages()]
    for prefix in prefixes:
        # Try the longest head that names a public object, then append the attribute path.
        for split in range(len(parts), 0, -1):
            found, obj = _lookup(prefix + ".".join(parts[:split]))
            public = _public_names().get((id(obj), parts[split - 1])) if found else None
            if public is not None:
                return ".".join([public, *parts[split:]])
    return None


def _enclosing_package(target: str) -> str | None:
    """The documented package around the advkit module ``target`` (whose page lists its names)."""
    packages = sorted((p.__name__ for p in public_packages()), key=len, reverse=True)
    return next((p for p in packages if target.startswith(p + ".")), None)


def _is_foreign_or_alias(target: str) -> bool:
    """``target`` is private, defined outside advkit, or an advkit type alias."""
    root = target.split(".")[0]
    if root == ROOT and any(part.startswith("_") for part in target.split(".")):
        return True  # private modules and classes have no page: JsonResult's base, say
    if root != ROOT and _lookup(root)[0]:
        return True  # a module path: fnmatch.fnmatchcase, torch.nn.Module
    for module in _advkit_modules():
        found, obj = _lookup(f"{module.__name__}.{target}")
        if not found:
            continue
        if typing.get_origin(obj) is not None or isinstance(obj, typing.TypeVar):
            return True
        home = getattr(obj, "__module__", None)
        if isinstance(home, str) and home != ROOT and not home.startswith(ROOT + "."):
            return True
    return False


def resolve_missing(app: Any, env: Any, node: Any, contnode: nodes.Element) -> Any:
    """A ``missing-reference`` handler for the Python domain (see the module docstring)."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    if not _DOTTED_NAME.match(target):
        return contnode
    if node["reftype"] == "mod":
        public = _enclosing_package(target)
    else:
        public = _public_target(target, node.get("py:module"))
    if public is not None and public != target:
        domain = env.get_domain("py")
        return domain.resolve_xref(
            env, node["refdoc"], app.builder, node["reftype"], public, node, contnode
        )
    if _is_foreign_or_alias(target):
        return contnode
    return None


def _attribute_doc(module: ModuleType, name: str) -> list[str] | None:
    try:
        docs = ModuleAnalyzer.for_module(module.__name__).find_attr_docs()
    except Exception:  # a module without source (compiled) has no attribute docs to offer
        return None
    lines = docs.get(("", name))
    return list(lines) if lines else None


def reexported_constant_doc(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Give a re-exported constant its attribute docstring from the module that defines it.

    autodoc looks for the docstring after an assignment only in the documented module; for a
    package re-exporting the name it finds nothing and falls back to the docstring of the
    value's *type* (``str``, ``dict``), which is wrong. An ``autodoc-process-docstring`` handler.
    """
    if what != "data" or not name.startswith(ROOT + "."):
        return
    package_name, _, attribute = name.rpartition(".")
    own = _attribute_doc(importlib.import_module(package_name), attribute)
    if own is not None:
        return
    for module in _advkit_modules():
        if module.__name__.startswith(package_name + ".") and vars(module).get(attribute) is obj:
            found = _attribute_doc(module, attribute)
            if found is not None:
                lines[:] = prepare_docstring("\n".join(found))
                return
    type_doc = inspect.getdoc(type(obj)) or ""
    if lines and "\n".join(lines).strip() == type_doc.strip():
        lines[:] = []  # the type's docstring describes ``str``, not this constant


def _without_private(bases: list[Any]) -> list[Any]:
    shown: list[Any] = []
    for base in bases:
        private = base.__module__.startswith("advkit") and base.__name__.startswith("_")
        for kept in _without_private(list(base.__bases__)) if private else [base]:
            if kept not in shown:
                shown.append(kept)
    return shown


def public_bases(app: Any, name: str, obj: Any, options: Any, bases: list[Any]) -> None:
    """Show a class's private advkit bases as their nearest public ancestors."""
    bases[:] = _without_private(bases)


def setup(app: Any) -> dict[str, Any]:
    app.setup_extension("sphinx.ext.autodoc")
    app.connect("missing-reference", resolve_missing)
    app.connect("autodoc-process-docstring", reexported_constant_doc)
    app.connect("autodoc-process-bases", public_bases)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
