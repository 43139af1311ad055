"""The three formats: every example renders, every label appears where it belongs, counts show,
the output is the same bytes every time, and the SVG is what the dashboard needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from graph_readers import (
    SVG,
    read_dot,
    read_mermaid,
    read_svg,
    svg_groups,
    svg_lines,
    svg_title,
)

from crmflow.definitions import WorkflowDefinition, load_definition_text
from crmflow.graphs import FORMATS, ActionCounts, Format, build_graph, render

TOUR_EDGES = [
    ("route", "sales", "big account"),
    ("route", "end:route", "no email"),
    ("route", "plan", "otherwise"),
    ("sales", "wait-open", "go to"),
    ("plan", "ab", '"enterprise"'),
    ("plan", "wait-open", '"team" / otherwise'),
    ("ab", "wait-open", "30%"),
    ("ab", "end:ab", "70%"),
    ("wait-open", "thanks", "email_opened"),
    ("wait-open", "reminder", "timeout 3d"),
    ("reminder", "end:reminder", ""),
    ("thanks", "end:thanks", ""),
]
EXIT_LINES = {
    "goal met": ["goal met", 'lifecycle_stage = "customer"'],
    "unenrolled": [
        "unenrolled",
        "when in list churned",
        "on joining suppression list do-not-contact",
        "when the criteria stop matching",
    ],
}
COUNTS = {
    "route": ActionCounts(reached=120, waiting=0, failed=0),
    "sales": ActionCounts(reached=30, waiting=2, failed=1),
    "wait-open": ActionCounts(reached=90, waiting=41, failed=0),
    "not-an-action": ActionCounts(reached=5),
}


def _mermaid_edges(text: str) -> list[tuple[str, str, str]]:
    """(source, target, label) by action id, `end:ID` for the end after action ID."""
    chart = read_mermaid(text)
    name = {node_id: lines[0] for node_id, (_, lines) in chart.nodes.items()}
    for source, target, _ in chart.edges:
        if chart.nodes[target][0] == "((":
            name[target] = f"end:{name[source]}"
    return [(name[s], name[t], label) for s, t, label in chart.edges if s != "T"]


def test_every_example_renders_in_every_format(example: WorkflowDefinition) -> None:
    actions = {action.id for action in example.actions}
    chart = read_mermaid(render(example, "mermaid"))
    assert {lines[0] for opening, lines in chart.nodes.values() if opening != "(("} >= actions
    dot = read_dot(render(example, "dot"))
    assert {node["id"] for node in dot.nodes.values()} >= {f"action-{a}" for a in actions}
    root = read_svg(render(example, "svg"))
    assert {g.get("data-action") for g in root.iter(f"{SVG}g") if g.get("data-action")} == actions


def test_mermaid_has_every_label(tour: WorkflowDefinition) -> None:
    text = render(tour, "mermaid")
    chart = read_mermaid(text)
    assert sorted(_mermaid_edges(text)) == sorted(TOUR_EDGES)
    assert chart.exits_title == "leaves at any step"
    assert sorted(chart.nodes[node_id][1][0] for node_id in chart.exits) == sorted(EXIT_LINES)
    for node_id in chart.exits:
        lines = chart.nodes[node_id][1]
        assert lines == EXIT_LINES[lines[0]]
    shapes = {lines[0]: opening for opening, lines in chart.nodes.values()}
    assert shapes["route"] == "{{" and shapes["sales"] == "(" and shapes["end"] == "(("
    assert chart.nodes["T"][1] == [
        "criteria trigger",
        'contact records where lifecycle_stage = "lead" and seats > 10',
        "re-enrolls on event form_submitted",
    ]


def test_dot_has_every_label(tour: WorkflowDefinition) -> None:
    dot = read_dot(render(tour, "dot"))

    def short(name: str) -> str:
        return name.removeprefix("action:")

    edges = [
        (short(tail), short(head), attrs.get("label", ""))
        for tail, head, attrs in dot.edges
        if attrs.get("style") != "invis" and tail != "trigger"
    ]
    assert sorted(edges) == sorted(TOUR_EDGES)
    assert dot.nodes["exit:goal"]["label"].split("\n") == EXIT_LINES["goal met"]
    assert dot.nodes["exit:unenroll"]["label"].split("\n") == EXIT_LINES["unenrolled"]
    assert dot.nodes["action:wait-open"]["label"] == (
        "wait-open\nwait_for_event email_opened (timeout 3d)"
    )
    # Tooltips carry the full text for viewers that show them.
    route_edge = next(a for t, h, a in dot.edges if (t, h) == ("action:route", "action:sales"))
    assert route_edge["tooltip"] == "route → sales: big account (big account: seats >= 100)"
    assert dot.graph["label"] == "Tour of the graph (tour)"


def test_svg_has_every_label(tour: WorkflowDefinition) -> None:
    root = read_svg(render(tour, "svg"))
    edges = []
    for group in svg_groups(root, **{"class": "edge flow"}):
        source = group.get("data-source", "").removeprefix("action:")
        target = group.get("data-target", "").removeprefix("action:")
        if source != "trigger":
            edges.append((source, target, " ".join(svg_lines(group))))
    assert sorted(edges) == sorted(TOUR_EDGES)
    for node_id, lines in (("exit:goal", "goal met"), ("exit:unenroll", "unenrolled")):
        (group,) = svg_groups(root, data_node=node_id)
        assert svg_lines(group) == EXIT_LINES[lines]
        assert group.get("data-kind") == "exit"
    (exits,) = svg_groups(root, data_kind="exits")
    assert svg_title(exits) == "leaves at any step"


@pytest.mark.parametrize("fmt", FORMATS)
def test_counts_appear_on_every_action(tour: WorkflowDefinition, fmt: Format) -> None:
    text = render(tour, fmt, counts=COUNTS)
    expected = {action.id: COUNTS.get(action.id, ActionCounts()).text() for action in tour.actions}
    if fmt == "mermaid":
        chart = read_mermaid(text)
        shown = {
            lines[0]: lines[-1]
            for node_id, (_, lines) in chart.nodes.items()
            if node_id.startswith("A")
        }
    elif fmt == "dot":
        dot = read_dot(text)
        shown = {
            name.removeprefix("action:"): attrs["label"].split("\n")[-1]
            for name, attrs in dot.nodes.items()
            if name.startswith("action:")
        }
    else:
        root = read_svg(text)
        shown = {}
        for group in svg_groups(root, data_kind="action"):
            (counts_line,) = [t for t in group.findall(f"{SVG}text") if t.get("class") == "counts"]
            shown[group.get("data-action", "")] = counts_line.text or ""
            failed = COUNTS.get(group.get("data-action", ""), ActionCounts()).failed
            assert counts_line.get("fill") == ("#b3261e" if failed else "#2f6b45")
    assert shown == expected
    assert expected["sales"] == "30 reached · 2 waiting · 1 failed"
    assert expected["thanks"] == "0 reached · 0 waiting · 0 failed"
    assert "not-an-action" not in text


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_counts_no_counts_line(tour: WorkflowDefinition, fmt: Format) -> None:
    assert "reached" not in render(tour, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_output_is_deterministic(tour: WorkflowDefinition, fmt: Format) -> None:
    first = render(tour, fmt, counts=COUNTS)
    other = load_definition_text(
        "key: o\nname: O\nenrollment: {trigger: manual}\n"
        "actions: [{id: x, type: delay, duration: 1d}]\n"
    )
    render(other, fmt)  # a layout in between must leave nothing behind
    assert render(build_graph(tour), fmt, counts=dict(reversed(COUNTS.items()))) == first


def test_output_is_the_same_in_another_process(tour: WorkflowDefinition) -> None:
    here = {fmt: render(tour, fmt) for fmt in FORMATS}
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); from conftest import TOUR; "
        "from crmflow.definitions import load_definition_text; from crmflow.graphs import render; "
        "d = load_definition_text(TOUR, source_name='tour.yaml'); "
        "print(json.dumps({f: render(d, f) for f in ('mermaid', 'dot', 'svg')}))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert json.loads(out.stdout) == here


def test_svg_scales_and_is_self_contained(tour: WorkflowDefinition) -> None:
    text = render(tour, "svg", counts=COUNTS)
    root = read_svg(text)
    assert root.tag == f"{SVG}svg"
    assert "width" not in root.attrib and "height" not in root.attrib
    x, y, width, height = map(float, root.get("viewBox", "").split())
    assert (x, y) == (0, 0) and width > 0 and height > 0
    assert root.get("role") == "img" and root.get("aria-label") == "Tour of the graph (tour)"
    assert root.get("data-workflow") == "tour"
    tags = {element.tag.removeprefix(SVG) for element in root.iter()}
    assert tags <= {"svg", "g", "title", "text", "path", "polygon", "ellipse"}, tags
    for element in root.iter():
        for name, value in element.attrib.items():
            assert "href" not in name and not name.startswith("on"), name
            assert "url(" not in value and "http" not in value.replace(SVG, ""), value
    assert {t.get("font-family") for t in root.iter(f"{SVG}text")} == {
        "Helvetica, Arial, 'DejaVu Sans', sans-serif"
    }


def test_svg_nodes_carry_stable_ids_and_data(tour: WorkflowDefinition) -> None:
    root = read_svg(render(tour, "svg"))
    actions = svg_groups(root, data_kind="action")
    assert [g.get("data-action") for g in actions] == [a.id for a in tour.actions]
    for group, action in zip(actions, tour.actions, strict=True):
        assert group.get("id") == f"action-{action.id}"
        assert group.get("data-type") == action.type
        assert group.get("class") == (
            "node control"
            if action.type in ("branch", "value_branch", "split", "wait_for_event")
            else "node action"
        )
        assert svg_lines(group) == [action.id, action.summary()]
        assert svg_title(group) == f"{action.id} ({action.type})\n{action.summary()}"
        (first, *_) = group.findall(f"{SVG}text")
        assert first.get("font-weight") == "bold"
    (trigger,) = svg_groups(root, id="trigger")
    assert trigger.get("data-kind") == "trigger"
    assert [g.get("id") for g in svg_groups(root, data_kind="end")] == [
        "end-route",
        "end-ab",
        "end-reminder",
        "end-thanks",
    ]


def test_long_text_is_clipped_with_the_full_text_in_the_tooltip() -> None:
    long = "a very long criteria value " * 8
    branch = long.strip()[:128].strip()  # names are at most 128 characters
    definition = load_definition_text(
        "key: long\nname: Long\nenrollment:\n  trigger: criteria\n"
        f"  criteria: {{property: note, op: eq, value: '{long}'}}\n"
        "actions:\n"
        "  - id: b\n    type: branch\n    branches:\n"
        f"      - {{name: '{branch}', when: {{in_list: x}}, next: end}}\n"
    )
    root = read_svg(render(definition, "svg"))
    (trigger,) = svg_groups(root, id="trigger")
    shown = svg_lines(trigger)[1]
    assert shown.endswith("…") and len(shown) <= 64
    assert f'contact records where note = "{long}"' in svg_title(trigger)
    (edge,) = [g for g in svg_groups(root, data_source="action:b")]
    assert " ".join(svg_lines(edge)).endswith("…")
    assert branch in svg_title(edge)
    chart = read_mermaid(render(definition, "mermaid"))
    assert chart.nodes["T"][1][1] == shown


def test_unknown_format_is_refused(tour: WorkflowDefinition) -> None:
    with pytest.raises(ValueError, match="unknown format 'png': use one of mermaid, dot, svg"):
        render(tour, "png")  # type: ignore[arg-type]
