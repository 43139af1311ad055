"""`build_graph`: the nodes and labelled edges of a definition."""

from __future__ import annotations

import subprocess
import sys

from crmflow.definitions import WorkflowDefinition, load_definition_text
from crmflow.graphs import Edge, Graph, Node, build_graph


def _edges(graph: Graph) -> list[tuple[str, str, str]]:
    return [(edge.source, edge.target, edge.label) for edge in graph.edges]


def test_every_kind_of_edge_with_its_label(tour: WorkflowDefinition) -> None:
    assert _edges(build_graph(tour)) == [
        ("trigger", "action:route", ""),
        ("action:route", "action:sales", "big account"),
        ("action:route", "end:route", "no email"),
        ("action:route", "action:plan", "otherwise"),
        ("action:sales", "action:wait-open", "go to"),
        ("action:plan", "action:ab", '"enterprise"'),
        ("action:plan", "action:wait-open", '"team" / otherwise'),
        ("action:ab", "action:wait-open", "30%"),
        ("action:ab", "end:ab", "70%"),
        ("action:wait-open", "action:thanks", "email_opened"),
        ("action:wait-open", "action:reminder", "timeout 3d"),
        ("action:reminder", "end:reminder", ""),
        ("action:thanks", "end:thanks", ""),
    ]


def test_notes_say_the_branch_conditions(tour: WorkflowDefinition) -> None:
    notes = {(e.source, e.target): e.note for e in build_graph(tour).edges if e.note}
    assert notes == {
        ("action:route", "action:sales"): "big account: seats >= 100",
        ("action:route", "end:route"): "no email: email is unknown",
        ("action:wait-open", "action:thanks"): 'has done email_opened (campaign = "welcome")',
    }


def test_nodes_trigger_actions_ends_and_exits(tour: WorkflowDefinition) -> None:
    graph = build_graph(tour, version=3)
    assert graph.title == "Tour of the graph (tour v3)"
    assert [node.id for node in graph.nodes] == [
        "trigger",
        "action:route",
        "end:route",
        "action:sales",
        "action:plan",
        "action:ab",
        "end:ab",
        "action:wait-open",
        "action:reminder",
        "end:reminder",
        "action:thanks",
        "end:thanks",
        "exit:goal",
        "exit:unenroll",
    ]
    assert graph.node("trigger") == Node(
        id="trigger",
        kind="trigger",
        title="criteria trigger",
        lines=(
            'contact records where lifecycle_stage = "lead" and seats > 10',
            "re-enrolls on event form_submitted",
        ),
    )
    assert graph.node("action:sales") == Node(
        id="action:sales",
        kind="action",
        title="sales",
        lines=('notify sales@example.com "Big one"',),
        action_id="sales",
        action_type="notify",
    )
    assert graph.node("exit:goal").lines == ('lifecycle_stage = "customer"',)
    assert graph.node("exit:unenroll").lines == (
        "when in list churned",
        "on joining suppression list do-not-contact",
        "when the criteria stop matching",
    )
    # Exits can happen at any step: no edge leads to them.
    assert not [e for e in graph.edges if e.target.startswith("exit:")]


def test_each_action_summary_is_the_temporal_summary(tour: WorkflowDefinition) -> None:
    graph = build_graph(tour)
    for action in tour.actions:
        assert graph.node(f"action:{action.id}").lines == (action.summary(),)


def test_manual_and_scheduled_triggers() -> None:
    manual = load_definition_text(
        "key: m\nname: M\nobject_type: deal\nenrollment: {trigger: manual}\n"
        "actions: [{id: a, type: add_to_list, list: x}]\n"
    )
    graph = build_graph(manual)
    assert graph.node("trigger").title == "manual enrollment"
    assert graph.node("trigger").lines == ("deal records enrolled by hand",)
    assert _edges(graph) == [("trigger", "action:a", ""), ("action:a", "end:a", "")]
    assert not [node for node in graph.nodes if node.kind == "exit"]

    scheduled = load_definition_text(
        "key: s\nname: S\nenrollment:\n  trigger: schedule\n"
        "  criteria: {not: {event: signup, within: 7d, min_count: 2}}\n"
        "  schedule: {every: month, at: '09:00', on: first_monday}\n"
        "settings: {timezone: Europe/Paris}\n"
        "actions: [{id: a, type: delay, duration: 1d}]\n"
    )
    assert build_graph(scheduled).node("trigger") == Node(
        id="trigger",
        kind="trigger",
        title="scheduled",
        lines=(
            "every month on the first monday at 09:00 Europe/Paris",
            "contact records where has not done signup at least 2 times in the last 7d",
        ),
    )


def test_a_jump_to_the_following_action_is_no_go_to() -> None:
    definition = load_definition_text(
        "key: j\nname: J\nenrollment: {trigger: manual}\nactions:\n"
        "  - {id: a, type: clear_property, property: x, next: b}\n"
        "  - {id: b, type: wait_for_event, event: e, timeout: 1d}\n"
    )
    assert _edges(build_graph(definition)) == [
        ("trigger", "action:a", ""),
        ("action:a", "action:b", ""),
        # Without on_timeout both outcomes continue the same way: one arrow, both labels.
        ("action:b", "end:b", "e / timeout 1d"),
    ]
    assert not [edge.note for edge in build_graph(definition).edges if edge.note]


def test_value_branch_cases_into_one_target_share_one_edge() -> None:
    cases = ", ".join(f"v{i}: b" for i in range(200))
    definition = load_definition_text(
        "key: v\nname: V\nenrollment: {trigger: manual}\nactions:\n"
        f"  - {{id: a, type: value_branch, property: p, cases: {{{cases}}}, otherwise: end}}\n"
        "  - {id: b, type: clear_property, property: x}\n"
    )
    edges = build_graph(definition).edges
    assert [(e.source, e.target) for e in edges] == [
        ("trigger", "action:a"),
        ("action:a", "action:b"),
        ("action:a", "end:a"),
        ("action:b", "end:b"),
    ]
    assert edges[1].label == " / ".join(f'"v{i}"' for i in range(200))
    assert edges[2] == Edge("action:a", "end:a", "otherwise")


def test_graphs_package_is_pure() -> None:
    """No store, no SQLAlchemy, no Temporal: the API and dashboard can draw anywhere."""
    code = (
        "import sys, crmflow.graphs; "
        "print(sorted(m for m in ('temporalio', 'sqlalchemy', 'crmflow.store', "
        "'crmflow.services', 'crmflow.cli', 'crmflow.worker', 'crmflow.activities', "
        "'crmflow.triggers') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
