"""Sphinx configuration of the advkit documentation.

Builds offline (no intersphinx inventories are fetched) and warning-free with ``-W``. The API
pages are written from the packages' ``__all__`` by the local extension ``_ext/apipages.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
# A fresh clone documents its own sources even before ``pip install -e .``.
sys.path.insert(0, str(DOCS.parent / "src"))

import advkit  # noqa: E402

project = "advkit"
author = "advkit developers"
copyright = "2026, advkit developers"
version = release = advkit.__version__

extensions = [
    "apipages",
    "apilinks",
    "attrsection",
    "classsig",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
]

templates_path = ["_templates"]
exclude_patterns = ["_build"]
root_doc = "index"

# -- API reference -------------------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_typehints_format = "short"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True

# Offline build: references to torch, the standard library and private type aliases stay plain
# text (an intersphinx inventory would need the network); see ``_ext/apilinks.py``. Any other
# reference that does not resolve is an error.
nitpicky = True
# Third-party names that appear only in annotations (under TYPE_CHECKING) or in docstrings
# inherited from torch, so the resolver cannot look them up at run time.
nitpick_ignore_regex = [(r"py:.*", r"(Module|Figure|Axes)")]

# -- doctest -------------------------------------------------------------------------------------
# Docstring examples are written for the namespace of the module that defines the object, as
# ``python -m doctest`` and ``pytest --doctest-modules`` run them; every API stub page calls
# this helper in its ``testsetup`` to reproduce that namespace.
doctest_global_setup = """
import torch

torch.manual_seed(0)


def _advkit_module_namespace(namespace, fullname):
    import importlib

    module_name, _, attribute = fullname.rpartition(".")
    home = getattr(getattr(importlib.import_module(module_name), attribute), "__module__", None)
    if not (isinstance(home, str) and home.startswith("advkit")):
        home = module_name
    module = importlib.import_module(home)
    namespace.update(
        {key: value for key, value in vars(module).items() if not key.startswith("__")}
    )
"""
doctest_test_doctest_blocks = "default"

# -- HTML ----------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"advkit {release}"
html_static_path: list[str] = []
