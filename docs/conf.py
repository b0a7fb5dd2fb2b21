"""Sphinx configuration of the jaxdiff documentation (MyST Markdown pages, autodoc / autosummary API pages).

Build: ``pip install -e ".[docs]" && sphinx-build -W --keep-going -n -b html docs docs/_build/html``.
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "jaxdiff"
author = "the jaxdiff authors"
copyright = "2026, the jaxdiff authors"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "README.md"]
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True, "show-inheritance": True, "ignore-module-all": True, "undoc-members": True}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_google_docstring = True

# Cross-references to jaxdiff's own objects must resolve (-n); those to other libraries are not checked.
nitpicky = True
nitpick_ignore_regex = [(r"py:.*", r"^(?!jaxdiff(\.|$)).*")]
# Results files are included as they were written: their heading levels are theirs.
suppress_warnings = ["myst.header", "myst.xref_missing"]

html_theme = "sphinx_book_theme"
html_title = "jaxdiff"
html_theme_options = {"show_toc_level": 2}
napoleon_use_ivar = True  # a class's "Attributes:" section as fields (dataclass fields are documented once)
