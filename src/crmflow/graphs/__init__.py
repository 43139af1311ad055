"""The action graph of a workflow as a picture: Mermaid, Graphviz DOT or SVG.

    graph = build_graph(definition)              # nodes and edges, plain data
    text = render(graph, "mermaid")              # or "dot", "svg"; a definition works too
    svg = render(definition, "svg", counts={"welcome": ActionCounts(reached=12, waiting=3)})

The picture shows the trigger (criteria or schedule in words) at the top, every action with its
id and its summary (the text the Temporal UI shows), arrows labelled with branch names, value
cases, split percents, the awaited event and its timeout, `go to` for a jump; an `end` after
each action that can end the enrollment; and, beside the trigger, the ways an enrollment leaves
at any step: goal (its criteria) and unenrollment (`unenroll_when`, suppression lists, criteria
no longer met).

Pure: reads only the definition (no store, no Temporal), so it works on an unpublished file.
The same input gives the same bytes in every format, so a picture can be committed and diffed.
Every text of the definition is escaped for the format: it cannot end a label, add a node or
inject markup.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

from crmflow.definitions import WorkflowDefinition

from ._dot import to_dot
from ._mermaid import to_mermaid
from ._model import ActionCounts, Edge, Graph, Node, NodeKind, build_graph
from ._svg import to_svg

Format = Literal["mermaid", "dot", "svg"]
FORMATS: tuple[Format, ...] = get_args(Format)

__all__ = [
    "FORMATS",
    "ActionCounts",
    "Edge",
    "Format",
    "Graph",
    "Node",
    "NodeKind",
    "build_graph",
    "render",
]


def render(
    graph: Graph | WorkflowDefinition,
    fmt: Format = "mermaid",
    counts: Mapping[str, ActionCounts] | None = None,
) -> str:
    """The picture in `fmt`. With `counts` (by action id; an action missing from it counts 0,
    ids that are not actions of the graph are ignored) each action also shows how many
    enrollments reached it, wait there now and failed there."""
    if isinstance(graph, WorkflowDefinition):
        graph = build_graph(graph)
    match fmt:
        case "mermaid":
            return to_mermaid(graph, counts)
        case "dot":
            return to_dot(graph, counts)
        case "svg":
            return to_svg(graph, counts)
    raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
