"""Mermaid flowchart text (GitHub and GitLab render it in Markdown).

Node ids are generated (`T`, `A0`…, `E0`…, `G`, `U`), never taken from the definition, and every
label is a quoted string in which each character Mermaid could read as syntax (quotes, brackets,
`#`, `<`, `>`, `&`, `|`, `%`, `:`, `;`, backticks, …) is written as an entity code (`#35;`): no
text of a definition can end a label, start a comment or directive, or become HTML, and Mermaid
shows it exactly as written (checked against Mermaid 11's own parser).
"""

from __future__ import annotations

from collections.abc import Mapping

from ._dot import COLORS, DASHED, EXITS_LABEL, INK, style_of
from ._model import GOAL, TRIGGER, ActionCounts, Graph, Node
from ._text import edge_text, node_text

# Every character with a meaning somewhere in Mermaid's flowchart grammar or label handling.
# Also `:`: before parsing, Mermaid cuts the last `;` of any line where `style` or `classDef`
# is followed by `:` and `#` (meant for its style statements), which would break the last
# entity code of a label that mentions them; with no raw `:` in labels that never matches.
# And the two characters of Mermaid's own entity placeholders (`ﬂ°°35¶ß`), so that text
# cannot pose as one.
_SYNTAX = frozenset('"#&<>|`%[](){}\\;:\ufb02\u00b6')

# Mermaid's class names: the DOT styles, but `end`, a Mermaid keyword, is `stop`.
_CLASSES = {
    ("stop" if style == "end" else style): f"fill:{fill},stroke:{stroke},color:{INK}"
    + (",stroke-dasharray:4 3" if style in DASHED else "")
    for style, (fill, stroke) in COLORS.items()
}


def escape(text: str) -> str:
    """Text safe inside a quoted Mermaid label."""
    return "".join(f"#{ord(char)};" if char in _SYNTAX else char for char in text)


def to_mermaid(graph: Graph, counts: Mapping[str, ActionCounts] | None = None) -> str:
    ids = _short_ids(graph)
    boxes: list[str] = []
    exits: list[str] = []
    members: dict[str, list[str]] = {name: [] for name in _CLASSES}
    for node in graph.nodes:
        text = node_text(node, counts)
        label = '"' + "<br/>".join(escape(line) for line in text.lines) + '"'
        opening, closing, css = _shape(node)
        (exits if node.kind == "exit" else boxes).append(f"{ids[node.id]}{opening}{label}{closing}")
        members[css].append(ids[node.id])
    lines = ["flowchart TD", *(f"    {box}" for box in boxes)]
    if exits:
        # Leaving can happen at any step: the exits stand apart, in one box.
        lines.append(f'    subgraph exits ["{escape(EXITS_LABEL)}"]')
        lines.extend(f"        {box}" for box in exits)
        lines.append("    end")
    for edge in graph.edges:
        label, _ = edge_text(graph, edge)
        shown = f'|"{escape(label)}"|' if label else ""
        lines.append(f"    {ids[edge.source]} -->{shown} {ids[edge.target]}")
    for name, style in _CLASSES.items():
        if members[name]:
            lines.append(f"    classDef {name} {style}")
            lines.append(f"    class {','.join(members[name])} {name}")
    return "\n".join(lines) + "\n"


def _short_ids(graph: Graph) -> dict[str, str]:
    ids: dict[str, str] = {}
    actions = ends = 0
    for node in graph.nodes:
        if node.id == TRIGGER:
            ids[node.id] = "T"
        elif node.kind == "action":
            ids[node.id], actions = f"A{actions}", actions + 1
        elif node.kind == "end":
            ids[node.id], ends = f"E{ends}", ends + 1
        else:
            ids[node.id] = "G" if node.id == GOAL else "U"
    return ids


def _shape(node: Node) -> tuple[str, str, str]:
    """(opening, closing, class) of a node."""
    style = style_of(node)
    match style:
        case "trigger" | "goal" | "unenroll":
            return "([", "])", style
        case "end":
            return "((", "))", "stop"
        case "control":
            return "{{", "}}", style
    return "(", ")", style
