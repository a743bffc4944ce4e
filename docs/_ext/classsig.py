"""Show a class's constructor arguments when a base class defines a pass-through ``__new__``.

``advkit.attacks.Attack.__new__(cls, *args, **settings)`` records the settings for
``replace()``. autodoc takes a user-defined ``__new__`` before ``__init__`` and so shows every
attack as ``PGD(*args, **settings)``; Python's :func:`inspect.signature` follows the MRO and
finds ``PGD.__init__`` (for ``Attack`` itself, whose own ``__new__`` Python finds first, the
handler reads ``Attack.__init__``). This ``autodoc-process-signature`` handler uses Python's answer when
autodoc's is nothing but ``*args`` and ``**kwargs``.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from sphinx.util.inspect import stringify_signature

_PASS_THROUGH = re.compile(r"^\(\s*\*\w+\s*,\s*\*\*\w+\s*\)$")


def _is_pass_through(signature: inspect.Signature) -> bool:
    kinds = {parameter.kind for parameter in signature.parameters.values()}
    return kinds <= {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD}


def init_signature(
    app: Any,
    what: str,
    name: str,
    obj: Any,
    options: Any,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str, str | None] | None:
    if what not in ("class", "exception") or not signature or not _PASS_THROUGH.match(signature):
        return None
    try:
        python_signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    if _is_pass_through(python_signature):
        # The class that defines the pass-through ``__new__`` itself (``Attack``): Python stops
        # at its ``__new__``, so read its own ``__init__``, without ``self``.
        try:
            init = inspect.signature(obj.__init__)
        except (TypeError, ValueError):
            return None
        parameters = list(init.parameters.values())[1:]
        if not parameters or _is_pass_through(init.replace(parameters=parameters)):
            return None
        python_signature = init.replace(parameters=parameters)
    shown = python_signature.replace(return_annotation=inspect.Signature.empty)
    return stringify_signature(shown, show_annotation=False), return_annotation


def setup(app: Any) -> dict[str, Any]:
    app.setup_extension("sphinx.ext.autodoc")
    app.connect("autodoc-process-signature", init_signature)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
