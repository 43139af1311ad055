"""Read the three formats back, to check what a renderer wrote rather than search its text.

- Mermaid: a strict reader of the subset the renderer writes (any other line is an error), which
  decodes Mermaid's entity codes (`#35;`) the way Mermaid does.
- DOT: read by Graphviz itself (its JSON output, through the renderer's own in-process
  Graphviz), so quoting is judged by the real parser.
- SVG: parsed by xml.etree.
"""

from __future__ import annotations

import html
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from crmflow.graphs._svg import layout

SVG = "{http://www.w3.org/2000/svg}"

_ID = r"[A-Z][0-9]*"
_LABEL = r'"([^"]*)"'
_SHAPES = {"([": "])", "((": "))", "{{": "}}", "(": ")"}
_NODE = re.compile(rf"^({_ID})(\(\[|\(\(|\{{\{{|\(){_LABEL}(\]\)|\)\)|\}}\}}|\))$")
_EDGE = re.compile(rf"^({_ID}) -->(?:\|{_LABEL}\|)? ({_ID})$")
_SUBGRAPH = re.compile(rf"^subgraph exits \[{_LABEL}\]$")
_CLASSDEF = re.compile(r"^classDef ([a-z]+) [a-z:#0-9,\- ]+$")
_CLASS = re.compile(rf"^class ({_ID}(?:,{_ID})*) ([a-z]+)$")
_ENTITY = re.compile(r"#\w+;")
# Characters that must never stand raw in a label (they are written as entity codes).
RAW_FORBIDDEN = set('"#&<>|`%[](){}\\;:\ufb02\u00b6')


@dataclass
class Mermaid:
    nodes: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    """id -> (shape opening, label lines decoded)"""
    edges: list[tuple[str, str, str]] = field(default_factory=list)
    exits: list[str] = field(default_factory=list)
    exits_title: str | None = None
    classes: dict[str, str] = field(default_factory=dict)


def _preprocess(line: str) -> str:
    """What Mermaid does to a line before parsing it (`encodeEntities` in Mermaid 11): it cuts
    the last `;` of a style or classDef statement, found by these patterns anywhere in a line."""
    for pattern in (r"style.*:\S*#.*;", r"classDef.*:\S*#.*;"):
        line = re.sub(pattern, lambda m: m.group(0)[:-1], line)
    return line


def decode(label: str) -> str:
    """A label as Mermaid shows it: entity codes (`#35;`, `#quot;`) go through Mermaid's
    placeholders (`ﬂ°°35¶ß`), which become HTML entities that the browser decodes."""
    label = re.sub(
        r"#(\w+);",
        lambda m: ("ﬂ°°" if m.group(1).isdigit() else "ﬂ°") + m.group(1) + "¶ß",
        label,
    )
    return html.unescape(label.replace("ﬂ°°", "&#").replace("ﬂ°", "&").replace("¶ß", ";"))


def _check_raw(label: str) -> None:
    bare = _ENTITY.sub("", label).replace("<br/>", "")
    leaked = RAW_FORBIDDEN & set(bare)
    assert not leaked, f"raw {sorted(leaked)} in label {label!r}"


def read_mermaid(text: str) -> Mermaid:
    lines = text.split("\n")
    assert lines[0] == "flowchart TD", lines[0]
    assert lines[-1] == "", "ends with a newline"
    out = Mermaid()
    in_exits = False
    for raw in lines[1:-1]:
        line = raw.strip()
        if not line.startswith("classDef "):
            line = _preprocess(line)
        indent = len(raw) - len(raw.lstrip(" "))
        assert indent == (8 if in_exits and line != "end" else 4), raw
        if m := _NODE.match(line):
            node_id, opening, label, closing = m.groups()
            assert _SHAPES[opening] == closing, raw
            assert node_id not in out.nodes, f"node {node_id} twice"
            _check_raw(label)
            out.nodes[node_id] = (opening, [decode(part) for part in label.split("<br/>")])
            if in_exits:
                out.exits.append(node_id)
        elif m := _EDGE.match(line):
            source, label, target = m.groups()
            _check_raw(label or "")
            out.edges.append((source, target, decode(label or "")))
        elif m := _SUBGRAPH.match(line):
            assert not in_exits and out.exits_title is None
            in_exits, out.exits_title = True, decode(m.group(1))
        elif line == "end":
            assert in_exits
            in_exits = False
        elif _CLASSDEF.match(line):
            pass
        elif m := _CLASS.match(line):
            for node_id in m.group(1).split(","):
                out.classes[node_id] = m.group(2)
        else:
            raise AssertionError(f"not in the Mermaid subset: {raw!r}")
    assert not in_exits
    for source, target, _ in out.edges:
        assert source in out.nodes and target in out.nodes
    return out


@dataclass
class Dot:
    nodes: dict[str, dict[str, str]]
    """name -> attributes as Graphviz read them (escStrings decoded: `\\n` is a line break)"""
    edges: list[tuple[str, str, dict[str, str]]]
    graph: dict[str, str]


def _unescape(value: str) -> str:
    """An attribute as Graphviz shows it: escString (`\\` a backslash, `\n` a line break; the
    renderer writes no other escape), then HTML entities (`&amp;`), which labels decode."""
    value = re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)
    return re.sub(
        r"&(#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);",
        lambda m: html.unescape(m.group(0)),
        value,
    )


def read_dot(text: str) -> Dot:
    data = json.loads(layout(text, "json0"))
    objects = data.get("objects", [])
    names = [obj["name"] for obj in objects]
    nodes = {
        obj["name"]: {k: _unescape(v) for k, v in obj.items() if isinstance(v, str)}
        for obj in objects
        if "nodes" not in obj  # clusters list their nodes; nodes do not
    }
    edges = [
        (
            names[edge["tail"]],
            names[edge["head"]],
            {k: _unescape(v) for k, v in edge.items() if isinstance(v, str)},
        )
        for edge in data.get("edges", [])
    ]
    graph = {k: _unescape(v) for k, v in data.items() if isinstance(v, str)}
    return Dot(nodes, edges, graph)


def read_svg(text: str) -> ET.Element:
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<svg ')
    assert "<!DOCTYPE" not in text and "<!--" not in text
    return ET.fromstring(text)


def svg_groups(root: ET.Element, **attrs: str) -> list[ET.Element]:
    return [
        g
        for g in root.iter(f"{SVG}g")
        if all(g.get(name.replace("_", "-")) == value for name, value in attrs.items())
    ]


def svg_lines(group: ET.Element) -> list[str]:
    return [text.text or "" for text in group.findall(f"{SVG}text")]


def svg_title(group: ET.Element) -> str:
    title = group.find(f"{SVG}title")
    assert title is not None
    return title.text or ""
