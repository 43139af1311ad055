"""Property-based: for generated valid definitions of every shape, full of hostile text, every
format renders without error and says the same thing: one box per node, one arrow per edge,
one `data-action` group per action."""

from __future__ import annotations

from graph_readers import SVG, read_dot, read_mermaid, read_svg
from graph_strategies import definitions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crmflow.definitions import WorkflowDefinition
from crmflow.graphs import ActionCounts, build_graph, render

counts = st.dictionaries(
    st.sampled_from(["a0", "a1", "step-2_x", "a3", "nope"]),
    st.builds(
        ActionCounts,
        reached=st.integers(0, 10**9),
        waiting=st.integers(0, 10**6),
        failed=st.integers(0, 10**6),
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(definition=definitions(), action_counts=st.one_of(st.none(), counts))
def test_every_format_renders_every_definition(
    definition: WorkflowDefinition, action_counts: dict[str, ActionCounts] | None
) -> None:
    graph = build_graph(definition)
    assert [n.action_id for n in graph.nodes if n.kind == "action"] == [
        a.id for a in definition.actions
    ]

    chart = read_mermaid(render(graph, "mermaid", action_counts))
    assert len(chart.nodes) == len(graph.nodes)
    assert len(chart.edges) == len(graph.edges)

    dot = read_dot(render(graph, "dot", action_counts))
    assert set(dot.nodes) == {node.id for node in graph.nodes}
    assert len([e for e in dot.edges if e[2].get("style") != "invis"]) == len(graph.edges)

    root = read_svg(render(graph, "svg", action_counts))
    actions = [g.get("data-action") for g in root.iter(f"{SVG}g") if g.get("data-action")]
    assert actions == [a.id for a in definition.actions]
    drawn = [g for g in root.iter(f"{SVG}g") if "node" in g.get("class", "").split()]
    assert len(drawn) == len(graph.nodes)
