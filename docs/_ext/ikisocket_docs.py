"""Sphinx helpers of the ikisocket docs: generated pieces and an offline-safe build.

* ``ikisocket-state-diagram``: the connection state machine, drawn from
  :data:`ikisocket_core.TRANSITIONS` at build time (Mermaid text and a table),
  so the picture cannot drift from the code. A transition without a note in
  :data:`TRANSITION_NOTES` is a build warning (an error under ``-W``).
* :func:`missing_module_pages`: reference pages of modules that do not import
  right now (an adapter not written yet, an optional dependency missing) are
  excluded from the build instead of failing it.
* The ``toctree`` directive is replaced by one that drops glob entries which
  match no document. Section indexes list pages written by other people as
  globs (``chat*``), so the build passes before and after those pages exist.
* :func:`third_party_ignores`: without intersphinx inventories (offline),
  references to the standard library and to h11, wsproto, trio and anyio
  cannot resolve; these patterns make ``nitpicky`` ignore exactly those.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
import re
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.directives.other import TocTree
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging
from sphinx.util.matching import patfilter

import ikisocket_core
from ikisocket_core import ConnectionState
from ikisocket_core._state import TRANSITIONS

logger = logging.getLogger(__name__)

#: Reference page (relative to ``docs/``, without suffix) -> the module it documents.
MODULE_PAGES: dict[str, str] = {
    "reference/core": "ikisocket_core",
    "reference/protocol": "ikisocket_core.protocol",
    "reference/testing": "ikisocket_core.testing",
    "reference/asyncio": "ikisocket_adapters.asyncio",
    "reference/trio": "ikisocket_adapters.trio",
    "reference/anyio": "ikisocket_adapters.anyio",
    "reference/asgi": "ikisocket_adapters.asgi",
    "reference/redis": "ikisocket_adapters.redis",
    "reference/cli": "ikisocket_adapters.cli",
}

#: Names outside ikisocket that docstrings and signatures mention.
THIRD_PARTY = (
    "abc",
    "anyio",
    "argparse",
    "asyncio",
    "collections",
    "contextlib",
    "dataclasses",
    "enum",
    "h11",
    "http",
    "json",
    "logging",
    "pathlib",
    "re",
    "redis",
    "selectors",
    "socket",
    "ssl",
    "trio",
    "types",
    "typing",
    "uuid",
    "uvloop",
    "wsproto",
)

#: Builtins and typing names that appear unqualified in signatures.
UNQUALIFIED = (
    "Any",
    "Awaitable",
    "AsyncIterator",
    "BaseException",
    "Callable",
    "Exception",
    "Iterable",
    "Iterator",
    "KeyError",
    "Literal",
    "Mapping",
    "MutableMapping",
    "ModuleType",
    "Sequence",
    "TaskGroup",
    "TracebackType",
    "UnicodeDecodeError",
    "ValueError",
    "TypeError",
    "AssertionError",
    "RuntimeError",
    "OSError",
    "bytearray",
    "memoryview",
    "Path",
    "SSLContext",
    "Server",
    "Transport",
)

#: What each move of the state machine means to a listener, by (state, input) values.
TRANSITION_NOTES: dict[tuple[str, str], str] = {
    ("connecting", "accept"): (
        "the request was accepted: the connection is registered, the route callback "
        "runs, then ``connect``"
    ),
    ("connecting", "reject"): "refused with an HTTP status before the upgrade; no listener runs",
    ("connecting", "peer_gone"): "the client left before the upgrade; no listener runs",
    ("open", "server_close"): (
        "the server closed it (``kws.close()``, ``hub.close()``, ``hub.close_all()``, a "
        "shutdown): it leaves routing, ``close`` fires, the close frame is sent. When the "
        "server closes it because the peer is at fault (``idle_timeout``), ``disconnect`` "
        "fires instead"
    ),
    ("open", "peer_gone"): (
        "the peer closed it, the transport dropped, a keepalive timed out or the peer "
        "broke the protocol: it leaves routing and ``disconnect`` fires"
    ),
    ("closing", "peer_gone"): (
        "the closing handshake finished (or ``close_timeout`` passed); nothing fires"
    ),
}


def module_importable(name: str) -> bool:
    """Whether ``name`` imports without error.

    Args:
        name: A dotted module name.

    Returns:
        ``True`` when the import works.
    """
    try:
        importlib.import_module(name)
    except Exception:
        return False
    return True


def missing_module_pages(docs_dir: Path) -> list[str]:
    """The ``exclude_patterns`` entries for reference pages whose module does not import.

    Args:
        docs_dir: The ``docs/`` directory.

    Returns:
        Paths relative to ``docs_dir`` (with their suffix).
    """
    excluded: list[str] = []
    for page, module in MODULE_PAGES.items():
        if not module_importable(module):
            excluded.extend(
                f"{page}{suffix}"
                for suffix in (".md", ".rst")
                if (docs_dir / f"{page}{suffix}").exists()
            )
    return excluded


def third_party_ignores() -> list[tuple[str, str]]:
    """``nitpick_ignore_regex`` entries for names only intersphinx could resolve.

    Returns:
        ``(reftype, target)`` regular expressions.
    """
    modules = "|".join(THIRD_PARTY)
    names = "|".join(UNQUALIFIED)
    return [
        (r"py:.*", rf"({modules})(\..+)?"),
        (r"py:.*", rf"({names})"),
    ]


def missing_module_ignores() -> list[tuple[str, str]]:
    """``nitpick_ignore_regex`` entries for ikisocket modules that do not import right now.

    Prose that mentions ``ikisocket_adapters.anyio.serve`` must not fail the
    build while that module is still being written.

    Returns:
        ``(reftype, target)`` regular expressions.
    """
    ignores: list[tuple[str, str]] = []
    for module in MODULE_PAGES.values():
        if not module_importable(module):
            ignores.append((r"py:.*", module.replace(".", r"\.") + r"(\..+)?"))
    return ignores


def mermaid_state_diagram() -> str:
    """The state machine of :data:`ikisocket_core.TRANSITIONS` as a Mermaid diagram.

    Returns:
        Mermaid ``stateDiagram-v2`` source.
    """
    lines = ["stateDiagram-v2", f"    [*] --> {ConnectionState.CONNECTING.name}"]
    for (state, event), target in TRANSITIONS.items():
        lines.append(f"    {state.name} --> {target.name}: {event.value}")
    lines.append(f"    {ConnectionState.CLOSED.name} --> [*]")
    return "\n".join(lines)


class StateDiagram(Directive):
    """``.. ikisocket-state-diagram::``: the Mermaid text and a table of every transition."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        """Build the nodes.

        Returns:
            A literal block (the Mermaid source) and a table.
        """
        source = mermaid_state_diagram()
        block = nodes.literal_block(source, source)
        block["language"] = "text"

        table = nodes.table(classes=["ikisocket-transitions"])
        group = nodes.tgroup(cols=4)
        table += group
        for width in (14, 14, 14, 58):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        group += head
        head += self._row(["From", "Input", "To", "What it means"])
        body = nodes.tbody()
        group += body
        for (state, event), target in TRANSITIONS.items():
            note = TRANSITION_NOTES.get((state.value, event.value))
            if note is None:
                logger.warning(
                    "TRANSITIONS has %s --%s--> %s but TRANSITION_NOTES does not explain it",
                    state.name,
                    event.value,
                    target.name,
                    location=self.state_machine.get_source_and_line(self.lineno),
                )
                note = ""
            body += self._row([state.name, event.value, target.name, note])
        return [block, table]

    def _row(self, cells: list[str]) -> nodes.row:
        row = nodes.row()
        for text in cells:
            entry = nodes.entry()
            paragraph = nodes.paragraph()
            # ``literal`` text between double backquotes, as in reST.
            for i, part in enumerate(text.split("``")):
                if part:
                    paragraph += nodes.literal(part, part) if i % 2 else nodes.Text(part)
            entry += paragraph
            row += entry
        return row


class OptionalGlobTocTree(TocTree):
    """``toctree`` whose glob entries may match nothing (they are then left out).

    Everything else is Sphinx's own ``toctree``: explicit entries that do not
    exist are still warnings.
    """

    def run(self) -> list[nodes.Node]:
        """Drop empty glob entries, then build the toctree as Sphinx does.

        Returns:
            The toctree nodes.
        """
        if "glob" in self.options:
            env = self.state.document.settings.env
            current = env.docname
            # Sphinx gives each document to the first entry naming it: follow suit.
            remaining = set(env.found_docs) - {current}
            content: StringList = self.content
            kept = StringList()
            for i, entry in enumerate(content):
                stripped = entry.strip()
                if stripped and any(c in stripped for c in "*?[") and "<" not in stripped:
                    matched = set(patfilter(remaining, _join(current, stripped)))
                    if not matched:
                        continue
                    remaining -= matched
                elif stripped:
                    remaining.discard(_join(current, stripped.removesuffix(".md")))
                kept.append(entry, *content.info(i))
            self.content = kept
        return super().run()


def _join(current: str, entry: str) -> str:
    """Resolve a toctree entry relative to the current document, as Sphinx does."""
    if entry.startswith("/"):
        return entry[1:]
    base = current.rpartition("/")[0]
    return f"{base}/{entry}" if base else entry


_FACTORY_DEFAULT = re.compile(r"(\w+)(: [^=]+)? = <factory>")


def _dataclass_factories(  # noqa: PLR0917 (Sphinx calls event handlers positionally)
    app: Sphinx,
    what: str,
    name: str,
    obj: Any,
    options: Any,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str | None, str | None] | None:
    """Show ``field(default_factory=dict)`` defaults as ``dict()``, not ``<factory>``.

    ``<factory>`` is not Python, so Sphinx would fall back to splitting the
    signature on commas and break annotations such as ``tuple[str, int]``.
    """
    if signature is None or "<factory>" not in signature or not dataclasses.is_dataclass(obj):
        return None
    factories = {
        f.name: getattr(f.default_factory, "__name__", "factory")
        for f in dataclasses.fields(obj)
        if f.default_factory is not dataclasses.MISSING
    }

    def spell(m: re.Match[str]) -> str:
        return f"{m.group(1)}{m.group(2) or ''} = {factories.get(m.group(1), 'factory')}()"

    return _FACTORY_DEFAULT.sub(spell, signature), return_annotation


def _reexported_doc_comments() -> dict[str, list[str]]:
    """The ``#:`` comments of data that ``ikisocket_core`` re-exports from private modules.

    Autodoc looks for a data object's doc comment in the module being documented;
    for ``ikisocket_core.EVENT_MESSAGE`` it is in ``ikisocket_core._events``.
    """
    docs: dict[str, list[str]] = {}
    for info in pkgutil.iter_modules(ikisocket_core.__path__):
        if not info.name.startswith("_"):
            continue
        name = f"ikisocket_core.{info.name}"
        module = importlib.import_module(name)
        analyzer = ModuleAnalyzer.for_module(name)
        for (scope, attr), lines in analyzer.find_attr_docs().items():
            if not scope and attr in getattr(module, "__all__", ()):
                docs[f"ikisocket_core.{attr}"] = list(lines)
    return docs


_REEXPORTED: dict[str, list[str]] = {}


def _fill_reexported(  # noqa: PLR0917 (Sphinx calls event handlers positionally)
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Give ``.. autodata:: EVENT_MESSAGE`` (in ``ikisocket_core``) its ``#:`` comment."""
    # Without it autodoc falls back to the docstring of the value's type (``str``, ``dict``).
    if what == "data" and name in _REEXPORTED:
        lines[:] = [*_REEXPORTED[name], ""]


@functools.cache
def _public_names() -> frozenset[str]:
    """Every name in the ``__all__`` of a public module that imports."""
    names: set[str] = set()
    for module in MODULE_PAGES.values():
        if module_importable(module):
            names.update(getattr(importlib.import_module(module), "__all__", ()))
    return frozenset(names)


def _drop_uninformative_bases(app: Sphinx, doctree: nodes.document) -> None:
    """Remove "Bases: object" and bases that are private classes from class entries."""
    for paragraph in list(doctree.findall(nodes.paragraph)):
        text = paragraph.astext()
        if not text.startswith("Bases: "):
            continue
        targets = [ref.get("reftarget", "") for ref in paragraph.findall(addnodes.pending_xref)]
        private = bool(targets) and all(
            t.startswith(("ikisocket_core.", "ikisocket_adapters."))
            and t.rpartition(".")[2] not in _public_names()
            for t in targets
        )
        if text == "Bases: object" or private:
            paragraph.parent.remove(paragraph)


def _add_missing_ignores(app: Sphinx, config: Any) -> None:
    config.nitpick_ignore_regex = [*config.nitpick_ignore_regex, *missing_module_ignores()]
    for page, module in MODULE_PAGES.items():
        if not module_importable(module):
            logger.info("ikisocket docs: %s does not import; leaving %s out", module, page)


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directives and hooks.

    Args:
        app: The Sphinx application.

    Returns:
        Extension metadata.
    """
    app.setup_extension("sphinx.ext.autodoc")  # its events are connected below
    app.add_directive("ikisocket-state-diagram", StateDiagram)
    app.add_directive("toctree", OptionalGlobTocTree, override=True)
    app.connect("config-inited", _add_missing_ignores)
    app.connect("autodoc-process-signature", _dataclass_factories)
    _REEXPORTED.update(_reexported_doc_comments())
    app.connect("autodoc-process-docstring", _fill_reexported)
    app.connect("doctree-read", _drop_uninformative_bases)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
