"""Graphviz DOT text: what `--format dot` prints, and what the SVG is laid out from.

Every name and value is a double-quoted DOT string with `\\` and `"` escaped, so no text of a
definition can end a string, and a backslash stays a backslash (Graphviz would otherwise read
`\\N`, `\\G`, `\\l`… in labels as its own escapes); `&` is written `&amp;`, since Graphviz
reads HTML entities in labels (`&lt;` would show as `<`). Labels are plain text, never HTML-like.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise

from ._model import FLOW_CONTROL, GOAL, ActionCounts, Graph, Node
from ._text import edge_text, graph_title, node_text

FONT = "Helvetica,Arial,sans-serif"
EXITS_LABEL = "leaves at any step"

# (fill, stroke) of each style of box; Mermaid uses the same
COLORS = {
    "trigger": ("#e7effc", "#3b6bb5"),
    "action": ("#ffffff", "#7a8799"),
    "control": ("#fff6db", "#b8891f"),
    "end": ("#eceff3", "#7a8799"),
    "goal": ("#e3f4e8", "#2f8a4c"),
    "unenroll": ("#fde8e6", "#c0463a"),
}
DASHED = frozenset({"goal", "unenroll"})
INK = "#1b2a41"
_EDGE = "#5b6b7f"


def quote(text: str) -> str:
    """A DOT double-quoted string of `text`; newlines become DOT's `\\n` line breaks."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("&", "&amp;")
    return '"' + escaped.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\n") + '"'


def dom_id(node_id: str) -> str:
    """The SVG element id of a node: `action-ID`, `end-ID`, `trigger`, `exit-goal`…"""
    return node_id.replace(":", "-")


def style_of(node: Node) -> str:
    """`trigger`, `action`, `control` (an action that waits or decides), `end`, `goal` or
    `unenroll`: the DOT `class` and the colours of the box."""
    if node.kind == "exit":
        return "goal" if node.id == GOAL else "unenroll"
    if node.kind == "action":
        return "control" if node.action_type in FLOW_CONTROL else "action"
    return node.kind


def to_dot(
    graph: Graph,
    counts: Mapping[str, ActionCounts] | None = None,
    *,
    font: str = FONT,
    tooltips: bool = True,
) -> str:
    """The graph in DOT. `font` is the font Graphviz measures text with; `tooltips` adds the
    full text of each node and edge (Graphviz shows it on hover in its own SVG)."""
    out = [f"digraph {quote(graph.key)} {{"]
    out.append(
        "  graph "
        + _attrs(
            {
                "label": graph_title(graph),
                "labelloc": "t",
                "fontname": font,
                "fontsize": "14",
                "fontcolor": INK,
                "rankdir": "TB",
                "nodesep": "0.35",
                "ranksep": "0.45",
                "outputorder": "edgesfirst",
            }
        )
        + ";"
    )
    out.append(
        "  node "
        + _attrs(
            {
                "shape": "box",
                "style": "rounded,filled",
                "fontname": font,
                "fontsize": "12",
                "margin": "0.15,0.08",
            }
        )
        + ";"
    )
    out.append(
        "  edge "
        + _attrs({"fontname": font, "fontsize": "10", "color": _EDGE, "fontcolor": _EDGE})
        + ";"
    )
    for node in graph.nodes:
        text = node_text(node, counts)
        style = style_of(node)
        fill, stroke = COLORS[style]
        attrs: dict[str, str] = {
            "id": dom_id(node.id),
            "class": style,
            "label": "\n".join(text.lines),
            "fillcolor": fill,
            "color": stroke,
            "fontcolor": INK,
        }
        if node.kind == "end":
            attrs.update(shape="circle", style="filled", fontsize="10", margin="0.02")
        elif style in DASHED:
            attrs["style"] = "rounded,filled,dashed"
        elif node.kind == "trigger":
            attrs["penwidth"] = "1.6"
        if tooltips:
            attrs["tooltip"] = text.tooltip
        out.append(f"  {quote(node.id)} {_attrs(attrs)};")
    for index, edge in enumerate(graph.edges):
        label, tooltip = edge_text(graph, edge)
        attrs = {"id": f"edge-{index}", "class": "flow"}
        if label:
            attrs["label"] = label
        if tooltips:
            attrs["tooltip"] = tooltip
        out.append(f"  {quote(edge.source)} -> {quote(edge.target)} {_attrs(attrs)};")
    exits = [quote(node.id) for node in graph.nodes if node.kind == "exit"]
    if exits:
        # Leaving can happen at any step: the exits stand apart, stacked in one box.
        cluster = {
            "id": "exits",
            "label": EXITS_LABEL,
            "style": "dashed,rounded",
            "color": "#9aa5b5",
            "fontsize": "10",
            "fontcolor": _EDGE,
        }
        out.append(f"  subgraph {quote('cluster_exits')} {{")
        out.append(f"    graph {_attrs(cluster)};")
        out.extend(f"    {node};" for node in exits)
        out.extend(f'    {a} -> {b} [style="invis"];' for a, b in pairwise(exits))
        out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


def _attrs(attrs: Mapping[str, str]) -> str:
    return "[" + ", ".join(f"{name}={quote(value)}" for name, value in attrs.items()) + "]"
