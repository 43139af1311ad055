"""The action graph of a definition, as plain data every renderer draws the same way.

Nodes: the trigger, one per action, one `end` per action that can end the enrollment, and the
exits (goal, unenrollment), which have no edges: an enrollment can leave at any step, so the
renderers group them beside the trigger ("leaves at any step"). Edges: from the trigger to the
first action, then one per (action, target), labelled with every outcome that takes it (branch
names, value cases, split percents, the awaited event and its timeout, `go to` for a jump);
outcomes that reach the same target share one edge, so a value_branch with 200 cases into two
actions draws two arrows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

from crmflow.conditions import describe_condition
from crmflow.definitions import (
    END,
    Action,
    BranchAction,
    EventFilter,
    SplitAction,
    ValueBranchAction,
    WaitForEventAction,
    WorkflowDefinition,
    format_duration,
)
from crmflow.schedules import describe_schedule

NodeKind = Literal["trigger", "action", "end", "exit"]

TRIGGER = "trigger"
GOAL = "exit:goal"
UNENROLL = "exit:unenroll"
_BARE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@/-]*$")  # as crmflow.conditions writes names
FLOW_CONTROL = frozenset({"delay", "wait_for_event", "branch", "value_branch", "split"})
"""Action types that decide or wait rather than act: drawn in another colour."""


def action_node_id(action_id: str) -> str:
    return f"action:{action_id}"


def end_node_id(action_id: str) -> str:
    return f"end:{action_id}"


@dataclass(frozen=True)
class Node:
    """A box of the picture. `title` and `lines` are full text: renderers clip them."""

    id: str
    """Unique and stable: `trigger`, `action:ID`, `end:ID` (the end after action ID),
    `exit:goal`, `exit:unenroll`."""
    kind: NodeKind
    title: str
    lines: tuple[str, ...] = ()
    action_id: str | None = None
    action_type: str | None = None


@dataclass(frozen=True)
class Edge:
    """An arrow. `label` is short (full text, clipped by renderers); `note` says more, for
    tooltips (a branch's condition in words)."""

    source: str
    target: str
    label: str = ""
    note: str = ""


@dataclass(frozen=True)
class Graph:
    """What `build_graph` makes of a definition: nodes and edges in a stable order."""

    key: str
    name: str
    version: int | None
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]

    @property
    def title(self) -> str:
        version = f" v{self.version}" if self.version is not None else ""
        return f"{self.name} ({self.key}{version})"

    def node(self, node_id: str) -> Node:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)


@dataclass(frozen=True)
class ActionCounts:
    """Enrollments of one action: how many reached it, wait there now, failed there."""

    reached: int = 0
    waiting: int = 0
    failed: int = 0

    def text(self) -> str:
        return f"{self.reached} reached · {self.waiting} waiting · {self.failed} failed"


@dataclass(frozen=True)
class _Outcome:
    target: str  # an action id or END
    label: str = ""
    note: str = ""


def build_graph(definition: WorkflowDefinition, *, version: int | None = None) -> Graph:
    """The graph of a (valid) definition; `version` only goes into the title."""
    nodes: list[Node] = [_trigger(definition)]
    edges: list[Edge] = [Edge(TRIGGER, action_node_id(definition.actions[0].id))]
    for index, action in enumerate(definition.actions):
        following = definition.actions[index + 1].id if index + 1 < len(definition.actions) else END
        nodes.append(
            Node(
                id=action_node_id(action.id),
                kind="action",
                title=action.id,
                lines=(action.summary(),),
                action_id=action.id,
                action_type=action.type,
            )
        )
        grouped: dict[str, list[_Outcome]] = {}
        for outcome in _outcomes(action, definition.next_of(action.id), following):
            grouped.setdefault(outcome.target, []).append(outcome)
        if END in grouped:
            nodes.append(Node(id=end_node_id(action.id), kind="end", title="end"))
        for target, outcomes in grouped.items():
            edges.append(
                Edge(
                    source=action_node_id(action.id),
                    target=end_node_id(action.id) if target == END else action_node_id(target),
                    label=" / ".join(o.label for o in outcomes if o.label),
                    note="; ".join(o.note for o in outcomes if o.note),
                )
            )
    nodes.extend(_exits(definition))
    return Graph(
        key=definition.key,
        name=definition.name,
        version=version,
        nodes=tuple(nodes),
        edges=tuple(edges),
    )


def _outcomes(action: Action, default: str, following: str) -> list[_Outcome]:
    """Where the action can go, each outcome with its label, in the definition's order.

    `default` is where it continues without a decision (its `next`, else the following action,
    else END); a `next` that skips the following action is a jump, labelled `go to`."""
    match action:
        case BranchAction():
            cases = [
                _Outcome(case.next, case.name, f"{case.name}: {describe_condition(case.when)}")
                for case in action.branches
            ]
            return [*cases, _Outcome(action.otherwise or default, "otherwise")]
        case ValueBranchAction():
            values = [
                _Outcome(target, json.dumps(value, ensure_ascii=False))
                for value, target in action.cases.items()
            ]
            return [*values, _Outcome(action.otherwise or default, "otherwise")]
        case SplitAction():
            return [_Outcome(path.next, f"{path.percent}%") for path in action.paths]
        case WaitForEventAction():
            awaited = EventFilter(event=action.event, where=action.where)
            note = describe_condition(awaited) if action.where else ""
            outcomes = [_Outcome(default, _quoted_name(action.event), note)]
            if action.timeout is not None:
                label = f"timeout {format_duration(action.timeout)}"
                outcomes.append(_Outcome(action.on_timeout or default, label))
            return outcomes
        case _:
            jump = action.next is not None and default not in (following, END)
            return [_Outcome(default, "go to" if jump else "")]


def _trigger(definition: WorkflowDefinition) -> Node:
    enrollment = definition.enrollment
    records = f"{definition.object_type} records"
    lines: list[str] = []
    if enrollment.trigger == "manual":
        title = "manual enrollment"
        lines.append(f"{records} enrolled by hand")
    elif enrollment.schedule is not None:
        title = "scheduled"
        lines.append(describe_schedule(enrollment.schedule, timezone=definition.settings.timezone))
        if enrollment.criteria is not None:
            lines.append(f"{records} where {describe_condition(enrollment.criteria)}")
    else:
        title = "criteria trigger"
        if enrollment.criteria is not None:
            lines.append(f"{records} where {describe_condition(enrollment.criteria)}")
        if (reenroll := enrollment.reenroll) is not None:
            reasons = [
                *(f"{name} changes" for name in reenroll.properties),
                *(f"event {_quoted_name(name)}" for name in reenroll.events),
                *(f"joining list {_quoted_name(name)}" for name in reenroll.lists),
            ]
            lines.append(f"re-enrolls on {', '.join(reasons)}")
    return Node(id=TRIGGER, kind="trigger", title=title, lines=tuple(lines))


def _exits(definition: WorkflowDefinition) -> list[Node]:
    exits: list[Node] = []
    if definition.goal is not None:
        exits.append(
            Node(
                id=GOAL,
                kind="exit",
                title="goal met",
                lines=(describe_condition(definition.goal.criteria),),
            )
        )
    settings = definition.settings
    reasons: list[str] = []
    if settings.unenroll_when is not None:
        reasons.append(f"when {describe_condition(settings.unenroll_when)}")
    if settings.suppression_lists:
        names = ", ".join(map(_quoted_name, settings.suppression_lists))
        reasons.append(f"on joining suppression list {names}")
    if settings.unenroll_when_criteria_unmet:
        reasons.append("when the criteria stop matching")
    if reasons:
        exits.append(Node(id=UNENROLL, kind="exit", title="unenrolled", lines=tuple(reasons)))
    return exits


def _quoted_name(name: str) -> str:
    """A list or event name as conditions write it: bare when plain, quoted otherwise."""
    return name if _BARE_NAME.match(name) else json.dumps(name, ensure_ascii=False)
