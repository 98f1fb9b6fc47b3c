"""Sphinx configuration of the ikisocket documentation.

Build it with ``make docs`` or ``sphinx-build -W -n -b html docs docs/_build/html``.

The build works offline: intersphinx inventories are only fetched when
``IKISOCKET_DOCS_INTERSPHINX=1`` is set. Without them, references to the
standard library and to third-party projects cannot resolve, so ``nitpicky``
ignores exactly those names (and nothing of ikisocket's own).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE / "_ext"))

from ikisocket_docs import missing_module_pages, third_party_ignores  # noqa: E402

import ikisocket_core  # noqa: E402

project = "ikisocket"
author = "ikisocket for Python contributors"
copyright = "ikisocket for Python contributors"
release = ikisocket_core.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "myst_parser",
    "ikisocket_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = [
    "_build",
    "Thumbs.db",
    ".DS_Store",
    # Reference pages of adapter modules that cannot be imported right now
    # (not written yet, or their optional dependency is not installed).
    *missing_module_pages(HERE),
]

# -- strictness ----------------------------------------------------------------------------
nitpicky = True
nitpick_ignore: list[tuple[str, str]] = [
    # Docstrings that name the hub without its module (``:class:`Hub```), where the
    # current module is not ``ikisocket_core``.
    ("py:class", "Hub"),
    ("py:meth", "Hub.tick"),
    # ``Websocket.off``'s annotation: ``Listener`` is imported for type checking only.
    ("py:class", "Listener"),
    # ``emit_event``'s annotation: on Python 3.10 Sphinx leaves this alias (documented with
    # ``autodata``) unresolved in signatures, as it does ``Listener``.
    ("py:class", "AckCallback"),
]
nitpick_ignore_regex: list[tuple[str, str]] = [
    # The type variables of the decorator overloads (``on``, ``websocket``).
    (r"py:class", r"ikisocket_core\._(hub|dispatch)\.[LR]"),
    (r"py:class", r"ikisocket_core\._websocket\._L"),
    (r"py:class", r"ikisocket_core\._socketio\._mount\.H"),
    # The virtual Socket.IO client's constructor takes its (private) shared session.
    (r"py:class", r"ikisocket_core\._socketio\._testclient\._Wire"),
    (r"py:class", r"ikisocket_core\._socketio\._polling\.Waiter"),
]

# -- intersphinx ---------------------------------------------------------------------------
INTERSPHINX_ONLINE = os.environ.get("IKISOCKET_DOCS_INTERSPHINX") == "1"
_INVENTORIES = {
    "python": ("https://docs.python.org/3", None),
    "h11": ("https://h11.readthedocs.io/en/latest", None),
    "wsproto": ("https://python-hyper.org/projects/wsproto/en/stable", None),
    "trio": ("https://trio.readthedocs.io/en/stable", None),
    "anyio": ("https://anyio.readthedocs.io/en/stable", None),
}
intersphinx_mapping = _INVENTORIES if INTERSPHINX_ONLINE else {}
intersphinx_timeout = 10
if not INTERSPHINX_ONLINE:
    nitpick_ignore_regex += third_party_ignores()

# -- autodoc and napoleon ------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = False
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# ``Attributes:`` sections become ``:ivar:`` fields, so dataclass fields that
# autodoc also documents are not described twice.
napoleon_use_ivar = True
napoleon_use_rtype = False

# -- MyST ----------------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# -- HTML ----------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"ikisocket {release}"
html_static_path: list[str] = []
pygments_style = "sphinx"
