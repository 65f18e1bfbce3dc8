"""Sphinx configuration of the Contacts API documentation.

Three parts of the site are generated at build time so that they cannot drift from the code
(the files land in ``docs/_generated``, which is not committed):

* ``settings.rst`` -- every field of :class:`app.config.Settings` with its ``#:`` comment;
* ``http.rst`` -- every operation of the OpenAPI schema exported from ``create_app()``;
* ``modules.rst`` + ``modules/*.rst`` -- one autodoc page per public module of ``app``.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS))

import warnings  # noqa: E402

import app  # noqa: E402 - needs the path set above

# autodoc inspects every attribute of the models, including SQLAlchemy's declarative internals.
warnings.filterwarnings("ignore", message="Unmanaged access of declarative attribute")

project = "Contacts API"
author = "Contacts API contributors"
copyright = "2026, Contacts API contributors"
release = version = app.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "_ext.generate",
]

# The generated settings and HTTP pages are pulled in with ``.. include::``, not as documents.
exclude_patterns = ["_build", "_ext", "_generated/*.rst", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

# -- autodoc / napoleon ---------------------------------------------------------------------
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_member_order = "bysource"
# ``ignore-module-all``: a module that re-exports names in ``__all__`` (``app.models``) must not
# document them a second time -- each object is documented where it is defined.
autodoc_default_options = {"members": True, "show-inheritance": True, "ignore-module-all": True}
# The names that only exist under TYPE_CHECKING stay strings; never chase them as references.
nitpicky = False
# Annotations that stay strings (``from __future__ import annotations`` with TYPE_CHECKING
# imports) are resolved by name, and some names exist twice on purpose -- the ``Contact`` model
# and the ``Contact`` DTO. Sphinx then warns "more than one target found" and links the first;
# that is not a documentation error, so it must not fail the ``-W`` build.
suppress_warnings = ["ref.python"]
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True

# -- HTML -----------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"Contacts API {release}"
html_static_path: list[str] = []
pygments_style = "sphinx"
pygments_dark_style = "monokai"
