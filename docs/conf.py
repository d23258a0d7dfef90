"""Sphinx configuration for the flask-ssecors documentation.

Build with warnings as errors (``make docs``)::

    .venv/bin/sphinx-build -E -W -b html docs docs/_build/html

Only Sphinx's own extensions are used, and intersphinx is off: the build needs no network.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "flask-ssecors"
author = "flask-ssecors contributors"
copyright = "flask-ssecors contributors"  # noqa: A001
release = importlib.metadata.version("flask-ssecors")
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "ssecors_settings",
]

# -- autodoc ----------------------------------------------------------------------------------

autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True
autodoc_default_options = {"exclude-members": "__init__, __new__"}

# -- general ----------------------------------------------------------------------------------

root_doc = "index"
exclude_patterns = ["_build"]
pygments_style = "sphinx"
pygments_dark_style = "monokai"

# -- HTML -------------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"flask-ssecors {release}"
html_show_sourcelink = False
