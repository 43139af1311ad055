"""What each box and arrow says, clipped for the picture, in full for tooltips: one source of
text for every format."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

from ._model import ActionCounts, Edge, Graph, Node

GRAPH_TITLE_LIMIT = 100
TITLE_LIMIT = 48
LINE_LIMIT = 64
EDGE_LIMIT = 40
ELLIPSIS = "…"
REPLACEMENT = "\ufffd"


def one_line(text: str) -> str:
    """`text` on one line, runs of whitespace made one space, and every character that no
    format can carry (control characters, which XML 1.0 forbids; lone surrogates; U+FFFE and
    U+FFFF) shown as U+FFFD."""
    return "".join(
        REPLACEMENT
        if unicodedata.category(char) in ("Cc", "Cs") or char in "\ufffe\uffff"
        else char
        for char in " ".join(text.split())
    )


def clip(text: str, limit: int) -> str:
    """`one_line(text)`, at most `limit` characters (ending in … when cut)."""
    text = one_line(text)
    return text if len(text) <= limit else text[: limit - 1].rstrip() + ELLIPSIS


def graph_title(graph: Graph) -> str:
    return clip(graph.title, GRAPH_TITLE_LIMIT)


@dataclass(frozen=True)
class NodeText:
    lines: tuple[str, ...]
    """Display lines, clipped: the title first, the counts last when given."""
    tooltip: str
    """Everything, unclipped, one item a line."""
    counts: ActionCounts | None


def node_text(node: Node, counts: Mapping[str, ActionCounts] | None) -> NodeText:
    found = None
    if counts is not None and node.action_id is not None:
        found = counts.get(node.action_id, ActionCounts())
    lines = [clip(node.title, TITLE_LIMIT), *(clip(line, LINE_LIMIT) for line in node.lines)]
    full = [node.title, *node.lines]
    if node.action_type is not None:
        full[0] = f"{node.title} ({node.action_type})"
    if found is not None:
        lines.append(found.text())
        full.append(found.text())
    return NodeText(tuple(lines), "\n".join(map(one_line, full)), found)


def edge_text(graph: Graph, edge: Edge) -> tuple[str, str]:
    """(display label, tooltip) of an edge."""
    source, target = graph.node(edge.source).title, graph.node(edge.target).title
    tooltip = f"{source} → {target}"
    if edge.label:
        tooltip += f": {edge.label}"
    if edge.note:
        tooltip += f" ({edge.note})"
    return clip(edge.label, EDGE_LIMIT), one_line(tooltip)
