"""Sphinx configuration: MyST Markdown pages, furo theme, Google-style docstrings via napoleon."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

project = "tlcore"
author = "the tlcore developers"
copyright = "2026, the tlcore developers"  # noqa: A001 - Sphinx's name

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown"}
master_doc = "index"
exclude_patterns = ["_build", "dev", "Thumbs.db", ".DS_Store"]
html_theme = "furo"
html_title = "tlcore"
html_static_path: list[str] = []
html_extra_path = ["model_table.html"] if os.path.exists(os.path.join(os.path.dirname(__file__), "model_table.html")) else []

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
nitpicky = False
