"""Document an attribute once when a class lists a property in its ``Attributes:`` section.

napoleon turns every entry of a Google-style ``Attributes:`` section into an attribute of the
class; autodoc then documents the property of the same name again, which Sphinx reports as a
duplicate object. The ``Attributes:`` entry wins (it is where the class's author described it),
and this ``autodoc-skip-member`` handler drops the second description.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

_ENTRY = re.compile(r"^    (\w+)\s*(\(.*\))?\s*:")


def listed_attributes(cls: type) -> set[str]:
    """The names in the ``Attributes:`` section of ``cls``'s docstring."""
    names: set[str] = set()
    inside = False
    for line in (inspect.getdoc(cls) or "").splitlines():
        if line.strip() == "Attributes:":
            inside = True
        elif inside and line.strip() and not line.startswith(" "):
            inside = False  # the next section or paragraph
        elif inside and (match := _ENTRY.match(line)):
            names.add(match.group(1))
    return names


def _owner(member: Any) -> type | None:
    """The class a property or function was defined in, from its qualified name."""
    function = member.fget if isinstance(member, property) else member
    qualname = getattr(function, "__qualname__", "")
    module = getattr(function, "__module__", None)
    if "." not in qualname or "<locals>" in qualname or not isinstance(module, str):
        return None
    owner: Any = importlib.import_module(module)
    for part in qualname.split(".")[:-1]:
        owner = getattr(owner, part, None)
    return owner if inspect.isclass(owner) else None


def skip_listed_property(
    app: Any, what: str, name: str, obj: Any, skip: bool, options: Any
) -> bool | None:
    if what != "class" or not isinstance(obj, property):
        return None
    owner = _owner(obj)
    if owner is not None and name in listed_attributes(owner):
        return True
    return None


def setup(app: Any) -> dict[str, Any]:
    app.setup_extension("sphinx.ext.autodoc")
    app.connect("autodoc-skip-member", skip_listed_property)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
