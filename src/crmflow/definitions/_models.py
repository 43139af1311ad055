"""The workflow definition (SPEC §2): enrollment, action graph, goal, settings.

Field rules live on each model; the rules that span models (the action graph, the settings
that depend on the trigger) are checked by `check_definition`, run by WorkflowDefinition's one
model validator, and by the loader on the parts that are valid when other parts are not.
"""

from __future__ import annotations

import difflib
import zoneinfo
from collections.abc import Callable, Sequence
from datetime import date
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, model_validator

from crmflow.limits import MAX_ACTIONS, MAX_ENCODED_BYTES

from ._actions import Action, BranchAction, WaitForEventAction
from ._base import DefinitionModel, Loc, is_new_definition, raise_problems
from ._conditions import Condition, ConditionReads, EventFilter, RootCondition, condition_reads
from ._durations import TimeOfDay
from ._schedules import Schedule
from ._types import (
    END,
    WEEKDAYS,
    Name,
    ObjectType,
    PropertyName,
    Weekday,
    WorkflowKey,
)

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

Trigger = Literal["criteria", "manual", "schedule"]


# -------------------------------------------------------------------------------- enrollment


class Reenroll(DefinitionModel):
    """What re-enrolls a record that already went through, while the criteria match."""

    properties: list[PropertyName] = Field(
        default_factory=list, description="A change of one of these properties re-enrolls"
    )
    events: list[Name] = Field(default_factory=list, description="A new such event re-enrolls")
    lists: list[Name] = Field(default_factory=list, description="Joining such a list re-enrolls")

    @model_validator(mode="after")
    def _not_empty(self) -> Reenroll:
        if not (self.properties or self.events or self.lists):
            raise ValueError("reenroll needs at least one of properties, events, lists")
        return self


class Enrollment(DefinitionModel):
    """How records enter the workflow."""

    trigger: Trigger = Field(description="criteria (automatic), manual, or schedule")
    criteria: RootCondition | None = Field(
        default=None, description="Who enrolls; required for criteria and schedule triggers"
    )
    enroll_existing: bool = Field(
        default=False, description="criteria only: on activation, also enroll records matching now"
    )
    reenroll: Reenroll | None = Field(
        default=None, description="criteria only; absent: a record enrolls at most once, ever"
    )
    schedule: Schedule | None = Field(
        default=None, description="When scheduled runs happen; required for trigger schedule"
    )

    @model_validator(mode="after")
    def _check(self) -> Enrollment:
        trigger = self.trigger
        problems: list[tuple[Loc, str]] = []
        if trigger in ("criteria", "schedule") and self.criteria is None:
            problems.append((("criteria",), f"required for trigger '{trigger}'"))
        if trigger == "manual" and self.criteria is not None:
            problems.append(
                (("criteria",), "not allowed for trigger 'manual': records are enrolled by hand")
            )
        if trigger == "schedule" and self.schedule is None:
            problems.append((("schedule",), "required for trigger 'schedule'"))
        if trigger != "schedule" and self.schedule is not None:
            problems.append((("schedule",), f"only for trigger 'schedule', not '{trigger}'"))
        if trigger != "criteria" and self.enroll_existing:
            problems.append((("enroll_existing",), f"only for trigger 'criteria', not '{trigger}'"))
        if trigger != "criteria" and self.reenroll is not None:
            why = (
                ": every scheduled run enrolls all matching records"
                if trigger == "schedule"
                else ""
            )
            problems.append((("reenroll",), f"only for trigger 'criteria'{why}"))
        raise_problems(problems)
        return self


class Goal(DefinitionModel):
    """A record that meets the goal leaves the workflow (status goal_met)."""

    criteria: RootCondition = Field(description="The goal condition")


# ---------------------------------------------------------------------------------- settings


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _timezone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        close = difflib.get_close_matches(name, _zone_names(), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ", e.g. Europe/Paris"
        raise ValueError(f"unknown time zone {name!r}: use an IANA name{hint}") from None
    return name


TimeZoneName = Annotated[str, AfterValidator(_timezone)]


class ExecutionWindow(DefinitionModel):
    """When actions other than delays and branches may run (local time)."""

    days: list[Weekday] = Field(min_length=1, description="Days: mon … sun")
    from_: TimeOfDay = Field(alias="from", description='Start, "HH:MM"')
    to: TimeOfDay = Field(description='End, "HH:MM" (after from)')

    @model_validator(mode="after")
    def _check(self) -> ExecutionWindow:
        problems: list[tuple[Loc, str]] = []
        if len(set(self.days)) != len(self.days):
            problems.append((("days",), "a day is listed twice"))
        if self.from_ >= self.to:
            problems.append((("to",), f"must be after from ({self.from_:%H:%M})"))
        raise_problems(problems)
        return self

    def weekdays(self) -> list[int]:
        """The days as `datetime.weekday()` numbers (0 = Monday)."""
        return sorted(WEEKDAYS.index(day) for day in self.days)


class Settings(DefinitionModel):
    """Optional settings of a workflow."""

    timezone: TimeZoneName = Field(
        default="UTC", description="IANA time zone of windows, schedules and dates"
    )
    timezone_property: PropertyName | None = Field(
        default=None, description="A record property holding the record's own IANA zone"
    )
    execution_window: ExecutionWindow | None = Field(
        default=None, description="When actions may run; not for scheduled workflows"
    )
    pause_dates: list[date] = Field(
        default_factory=list, description="Local dates on which no action runs"
    )
    suppression_lists: list[Name] = Field(
        default_factory=list, description="Members are never enrolled, and leave on joining"
    )
    unenroll_when: RootCondition | None = Field(
        default=None, description="Enrolled records that come to match are unenrolled"
    )
    unenroll_when_criteria_unmet: bool = Field(
        default=False, description="criteria only: unenroll when the criteria stop matching"
    )
    unenroll_from: list[WorkflowKey] = Field(
        default_factory=list, description="Enrolling here unenrolls from these workflows"
    )


# ------------------------------------------------------------------------------ definition


def _at_most_max_actions(value: Any, info: ValidationInfo) -> Any:
    # Before the actions are validated one by one: a huge list is refused at once.
    if is_new_definition(info) and isinstance(value, list) and len(value) > MAX_ACTIONS:
        raise ValueError(f"{len(value):,} actions; at most {MAX_ACTIONS:,}")
    return value


class WorkflowDefinition(DefinitionModel):
    """A workflow definition: one version of what `crmflow publish` stores."""

    key: WorkflowKey = Field(description="Stable key: [a-z0-9][a-z0-9-]*, at most 64")
    name: str = Field(min_length=1, description="Display name")
    object_type: ObjectType = Field(default="contact", description="Object type it enrolls")
    description: str | None = Field(default=None, description="What the workflow is for")
    enrollment: Enrollment = Field(description="How records enter")
    actions: Annotated[list[Action], BeforeValidator(_at_most_max_actions)] = Field(
        min_length=1, description="The action graph; the first action is the entry point"
    )
    goal: Goal | None = Field(default=None, description="Meeting the goal ends the enrollment")
    settings: Settings = Field(default_factory=Settings, description="Optional settings")

    @model_validator(mode="after")
    def _check_graph(self, info: ValidationInfo) -> WorkflowDefinition:
        problems = check_definition(self.key, self.enrollment, self.actions, self.settings)
        if is_new_definition(info) and not problems:
            size = len(self.model_dump_json(by_alias=True, exclude_none=True).encode())
            if size > MAX_ENCODED_BYTES:
                message = (
                    f"the definition is {size:,} bytes once encoded; at most"
                    f" {MAX_ENCODED_BYTES:,} (it travels with every enrollment)"
                )
                problems.append(((), message))
        raise_problems(problems)
        return self

    def action_map(self) -> dict[str, Action]:
        """Actions by id."""
        return {action.id: action for action in self.actions}

    def next_of(self, action_id: str) -> str:
        """Where the action continues by default: its `next`, else the following action;
        'end' when the enrollment ends there."""
        for index, action in enumerate(self.actions):
            if action.id == action_id:
                if action.next is not None:
                    return action.next
                following = index + 1
                return self.actions[following].id if following < len(self.actions) else END
        raise KeyError(action_id)

    def reads(self) -> ConditionReads:
        """Every property, list and event whose change can matter to enrollments: the ones
        read by the criteria, the goal, `unenroll_when` and branch conditions, plus the
        `reenroll` triggers and the events `wait_for_event` actions wait for."""
        conditions: list[Condition] = []
        if self.enrollment.criteria is not None:
            conditions.append(self.enrollment.criteria)
        if self.goal is not None:
            conditions.append(self.goal.criteria)
        if self.settings.unenroll_when is not None:
            conditions.append(self.settings.unenroll_when)
        for action in self.actions:
            if isinstance(action, BranchAction):
                conditions.extend(case.when for case in action.branches)
            elif isinstance(action, WaitForEventAction):
                conditions.append(EventFilter(event=action.event))
        result = ConditionReads()
        for condition in conditions:
            result |= condition_reads(condition)
        if (reenroll := self.enrollment.reenroll) is not None:
            result |= ConditionReads(
                frozenset(reenroll.properties),
                frozenset(reenroll.lists),
                frozenset(reenroll.events),
            )
        return result


_WINDOW_WITH_SCHEDULE = (
    "not allowed with trigger 'schedule': scheduled runs already start at the time you chose"
    " (enrollment.schedule.at), and a window would hold their actions back to a later hour or"
    " day; pick a schedule time inside your business hours instead"
)


def check_definition(
    key: str | None,
    enrollment: Enrollment | None,
    actions: Sequence[Action | str | None],
    settings: Settings | None,
) -> list[tuple[Loc, str]]:
    """Rules spanning the parts of a definition. Any part may be None (it was invalid) and
    an action may be given as its raw id (it was invalid): the checks needing it are skipped."""
    problems: list[tuple[Loc, str]] = []
    if enrollment is not None and settings is not None:
        trigger = enrollment.trigger
        if settings.unenroll_when_criteria_unmet and trigger != "criteria":
            message = f"only for trigger 'criteria', not '{trigger}'"
            problems.append((("settings", "unenroll_when_criteria_unmet"), message))
        if settings.execution_window is not None and trigger == "schedule":
            problems.append((("settings", "execution_window"), _WINDOW_WITH_SCHEDULE))
    if key is not None and settings is not None:
        for index, other in enumerate(settings.unenroll_from):
            if other == key:
                message = "a workflow cannot unenroll from itself"
                problems.append((("settings", "unenroll_from", index), message))
    return problems + _graph_problems(actions)


def _graph_problems(actions: Sequence[Action | str | None]) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    names = [a if a is None or isinstance(a, str) else a.id for a in actions]
    index_of: dict[str, int] = {}
    for i, name in enumerate(names):
        if name is None:
            continue
        if name in index_of:
            message = f"duplicate action id '{name}' (also actions[{index_of[name]}])"
            problems.append((("actions", i, "id"), message))
        else:
            index_of[name] = i

    # Edges by index; the Loc names the field of an explicit edge, None marks a fall-through.
    edges: list[list[tuple[int, Loc | None]]] = [[] for _ in actions]
    complete = True
    for i, action in enumerate(actions):
        if action is None or isinstance(action, str):
            complete = False  # its edges are unknown: reachability cannot be judged
            continue
        for loc, target in action.target_refs():
            if target in index_of:
                edges[i].append((index_of[target], loc))
            else:
                problems.append((("actions", i, *loc), f"unknown action '{target}'"))
        if action.falls_through() and i + 1 < len(actions):
            edges[i].append((i + 1, None))

    def label(i: int) -> str:
        return names[i] or f"actions[{i}]"

    problems += _cycles(edges, label)
    if complete and actions:
        seen, todo = {0}, [0]
        while todo:
            for reached, _ in edges[todo.pop()]:
                if reached not in seen:
                    seen.add(reached)
                    todo.append(reached)
        for i, name in enumerate(names):
            if i not in seen and (name is None or index_of[name] == i):  # duplicates: reported
                message = f"action '{label(i)}' is not reachable from the first action"
                problems.append((("actions", i), message))
    return problems


def _cycles(
    edges: list[list[tuple[int, Loc | None]]], label: Callable[[int], str]
) -> list[tuple[Loc, str]]:
    """One problem per edge that closes a cycle, located at that edge (iterative DFS)."""
    problems: list[tuple[Loc, str]] = []
    state = [0] * len(edges)  # 0 unseen, 1 on the current path, 2 done
    for root in range(len(edges)):
        if state[root]:
            continue
        state[root] = 1
        path, stack = [root], [iter(edges[root])]
        while stack:
            node = path[-1]
            for target, loc in stack[-1]:
                if state[target] == 1:
                    cycle = " -> ".join(label(k) for k in [*path[path.index(target) :], target])
                    if loc is None:
                        why = f" ('{label(node)}' has no next and continues with the following one)"
                        problems.append((("actions", node), f"cycle: {cycle}{why}"))
                    else:
                        problems.append((("actions", node, *loc), f"cycle: {cycle}"))
                elif state[target] == 0:
                    state[target] = 1
                    path.append(target)
                    stack.append(iter(edges[target]))
                    break
            else:
                state[node] = 2
                path.pop()
                stack.pop()
    return problems


def definition_json_schema() -> dict[str, Any]:
    """JSON Schema of a workflow definition, for editors (e.g. the YAML language server)."""
    schema = WorkflowDefinition.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        **schema,
        "title": "crmflow workflow definition",
    }
