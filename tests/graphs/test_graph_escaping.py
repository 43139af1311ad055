"""Text from a definition is untrusted: in every format it stays inside its label, exactly as
written, and never becomes syntax, markup, a link or a script."""

from __future__ import annotations

import json
from typing import Any

import pytest
from graph_readers import SVG, read_dot, read_mermaid, read_svg, svg_groups, svg_lines, svg_title

from crmflow.definitions import WorkflowDefinition
from crmflow.graphs import build_graph, render

NAME = 'Evil "name" </title><script>alert(1)</script> #35; %%{init: {}}%% \\N'
BRANCH = 'x"]; click A call alert(1); A["'
MARKUP = "</text></g><script>x</script>"
CASE = '"q" #35; a|b [c] {d}'
EVENT = 'e</title><a href="http://x.example">'
SUBJECT = 'Hi \\l\\N "there" <b>&amp;'
LIST = '%%{init: {"theme": "forest"}}%%'
VALUE = '"]) --> X[pwned'
CONTROL = "bell\x07 and escape\x1b"
STYLE = "classDef x fill:#f00; style y"  # Mermaid rewrites lines that look like styles
PLACEHOLDER = "ﬂ°°60¶ßscriptﬂ°°62¶ß"  # Mermaid's own stand-in for an entity code


def _hostile() -> WorkflowDefinition:
    document: dict[str, Any] = {
        "key": "evil",
        "name": NAME,
        "enrollment": {
            "trigger": "criteria",
            "criteria": {"property": "plan", "op": "eq", "value": VALUE},
        },
        "actions": [
            {
                "id": "b",
                "type": "branch",
                "branches": [
                    {"name": BRANCH, "when": {"in_list": LIST}, "next": "v"},
                    {"name": MARKUP, "when": {"in_list": "x"}, "next": "end"},
                    {"name": "control", "when": {"in_list": "y"}, "next": "m"},
                ],
                "otherwise": "c",
            },
            {
                "id": "v",
                "type": "value_branch",
                "property": "p",
                "cases": {CASE: "w"},
                "otherwise": "end",
            },
            {
                "id": "w",
                "type": "wait_for_event",
                "event": EVENT,
                "timeout": "1d",
                "on_timeout": "l",
            },
            {"id": "m", "type": "send_email", "subject": SUBJECT, "body": "x"},
            {"id": "l", "type": "add_to_list", "list": LIST},
            {"id": "s", "type": "set_property", "property": "p", "value": f"{PLACEHOLDER}{STYLE}"},
            {"id": "c", "type": "custom", "handler": "end"},
        ],
        "goal": {"criteria": {"not_in_list": MARKUP}},
        "settings": {"suppression_lists": ["]]>", "<!--"]},
    }
    definition = WorkflowDefinition.model_validate(document)
    # Names with control characters are refused today; a version stored before that rule may
    # still hold one, and the graph must show it safely.
    branch = definition.actions[0]
    cases = [*branch.branches[:2], branch.branches[2].model_copy(update={"name": CONTROL})]
    actions = [branch.model_copy(update={"branches": cases}), *definition.actions[1:]]
    return definition.model_copy(update={"actions": actions})


HOSTILE = _hostile()
SHOWN_CONTROL = "bell\ufffd and escape\ufffd"  # XML 1.0 cannot carry control characters
EDGE_LABELS = {
    BRANCH, MARKUP, SHOWN_CONTROL, json.dumps(CASE), json.dumps(EVENT), "timeout 1d", "otherwise"
}  # fmt: skip


def _shown(text: str, limit: int = 64) -> str:
    """A line as the picture shows it: control characters replaced, clipped to 64."""
    text = "".join("\ufffd" if ord(c) < 0x20 else c for c in text)
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _expected_node_lines() -> dict[str, list[str]]:
    lines = {f"action:{a.id}": [a.id, _shown(a.summary())] for a in HOSTILE.actions}
    lines["exit:goal"] = ["goal met", f'not in list "{MARKUP}"']
    lines["exit:unenroll"] = ["unenrolled", 'on joining suppression list "]]>", "<!--"']
    return lines


def test_the_hostile_text_is_in_the_summaries() -> None:
    summaries = [a.summary() for a in HOSTILE.actions]
    assert f"send_email {json.dumps(SUBJECT)}" in summaries
    assert f"add_to_list {LIST}" in summaries


def test_mermaid_keeps_every_text_inside_its_label() -> None:
    graph = build_graph(HOSTILE)
    chart = read_mermaid(render(graph, "mermaid"))  # strict: any stray syntax fails here
    assert len(chart.nodes) == len(graph.nodes)
    assert len(chart.edges) == len(graph.edges)
    by_title = {lines[0]: lines for _, lines in chart.nodes.values()}
    for node_id, lines in _expected_node_lines().items():
        assert by_title[lines[0]] == lines, node_id
    assert {label for _, _, label in chart.edges} >= EDGE_LABELS


def test_dot_keeps_every_text_inside_its_string() -> None:
    graph = build_graph(HOSTILE)
    dot = read_dot(render(graph, "dot"))  # read back by Graphviz itself
    assert dot.graph["label"] == f"{NAME} (evil)"
    assert set(dot.nodes) == {node.id for node in graph.nodes}
    for node_id, lines in _expected_node_lines().items():
        assert dot.nodes[node_id]["label"] == "\n".join(lines), node_id
    assert {attrs.get("label", "") for _, _, attrs in dot.edges} >= EDGE_LABELS
    assert len([e for e in dot.edges if e[2].get("style") != "invis"]) == len(graph.edges)


def test_svg_keeps_every_text_as_text() -> None:
    text = render(HOSTILE, "svg")
    root = read_svg(text)  # well-formed XML
    assert "<script" not in text and "<a " not in text
    tags = {element.tag.removeprefix(SVG) for element in root.iter()}
    assert tags <= {"svg", "g", "title", "text", "path", "polygon", "ellipse"}, tags
    for element in root.iter():
        assert not [name for name in element.attrib if "href" in name or name.startswith("on")]
    for node_id, lines in _expected_node_lines().items():
        (group,) = svg_groups(root, data_node=node_id)
        assert svg_lines(group) == lines, node_id
    edge_labels = {" ".join(svg_lines(g)) for g in svg_groups(root, **{"class": "edge flow"})}
    assert edge_labels >= EDGE_LABELS
    (trigger,) = svg_groups(root, id="trigger")
    words = f"contact records where plan = {json.dumps(VALUE)}"
    assert svg_title(trigger) == f"criteria trigger\n{words}"
    assert root.get("aria-label") == f"{NAME} (evil)"


@pytest.mark.parametrize("fmt", ["mermaid", "dot", "svg"])
def test_control_characters_never_reach_the_output(fmt: str) -> None:
    text = render(HOSTILE, fmt)  # type: ignore[arg-type]
    assert not [c for c in text if ord(c) < 0x20 and c not in "\n"]
