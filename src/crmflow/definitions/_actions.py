"""Actions (SPEC §2.3): one frozen model per `type`, joined in the `Action` union.

Every action has an `id` and an optional `next`. Without `next` an action continues with the
action that follows it in the list (the *fall-through*); `next: end` ends the enrollment.
Branching actions name their other targets in their own fields (`branches[].next`,
`otherwise`, `cases`, `paths[].next`, `on_timeout`).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from crmflow.limits import MAX_BRANCHES, MAX_CASES

from ._base import DefinitionModel, DefinitionProblems, Loc, raise_problems
from ._conditions import RootCondition
from ._durations import PositiveDuration, SignedDuration, TimeOfDay, format_duration
from ._types import (
    END,
    WEEKDAYS,
    ActionId,
    ActionRef,
    HeaderTemplate,
    JsonBody,
    Name,
    Number,
    ObjectType,
    PropertyName,
    PropertyValue,
    ScalarValue,
    Template,
    Weekday,
    WorkflowKey,
    check_json_value,
)

SUMMARY_LENGTH = 100


def _clip(text: str, limit: int = SUMMARY_LENGTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _require_type(schema: dict[str, Any]) -> None:
    # `type` has a default so actions can be built in Python without it, but a document must
    # say it: editors then pick the right action schema from it.
    schema["required"] = ["type", *schema.get("required", [])]


class _ActionBase(DefinitionModel):
    model_config = ConfigDict(json_schema_extra=_require_type)

    id: ActionId = Field(description="Unique id of the action: [a-z0-9][a-z0-9_-]*")
    # Declared here so every action dumps as `id, type, next, ...`; each subclass narrows it.
    type: str = Field(description="The action type")
    next: ActionRef | None = Field(
        default=None,
        description="The action to continue with, or 'end'; default: the following action",
    )

    def target_refs(self) -> list[tuple[Loc, str]]:
        """(field location, action id) of every explicit target, 'end' excluded."""
        refs: list[tuple[Loc, str | None]] = [(("next",), self.next), *self._branch_refs()]
        return [(loc, target) for loc, target in refs if target is not None and target != END]

    def _branch_refs(self) -> list[tuple[Loc, str | None]]:
        return []

    def targets(self) -> list[str]:
        """Every action id this action can go to ('end' and the fall-through excluded)."""
        return [target for _, target in self.target_refs()]

    def falls_through(self) -> bool:
        """Whether some outcome continues with the implicit successor (no `next`, no override)."""
        return self.next is None

    def summary(self) -> str:
        """A short human line (≤ 100 chars) used as the Temporal activity/timer summary."""
        return _clip(self._summary())

    def _summary(self) -> str:
        raise NotImplementedError


class _BranchingAction(_ActionBase):
    """A branch where `otherwise` (or, without it, `next`/the fall-through) takes the rest."""

    otherwise: ActionRef | None = Field(
        default=None,
        description="Where to go when nothing matches (an id or 'end'); default: the next action",
    )

    @model_validator(mode="after")
    def _otherwise_or_next(self) -> _BranchingAction:
        if self.otherwise is not None and self.next is not None:
            raise DefinitionProblems(
                [(("next",), "a branch with 'otherwise' never uses 'next': remove one of them")]
            )
        return self

    def falls_through(self) -> bool:
        return self.next is None and self.otherwise is None


# ------------------------------------------------------------------------------------ delay


def _until_time(value: Any) -> Any:
    # `until_time: {at: "09:00"}` (the SPEC's form) and `until_time: "09:00"` mean the same.
    if isinstance(value, dict) and set(value) == {"at"}:
        return value["at"]
    if isinstance(value, dict):
        raise ValueError('until_time takes {at: "HH:MM"} or "HH:MM"')
    return value


_TIME_SCHEMA = {"type": "string", "pattern": r"^([01]\d|2[0-3]):[0-5]\d$"}
UntilTime = Annotated[
    TimeOfDay,
    BeforeValidator(_until_time),
    WithJsonSchema(
        {
            "anyOf": [
                _TIME_SCHEMA,
                {
                    "type": "object",
                    "properties": {"at": _TIME_SCHEMA},
                    "required": ["at"],
                    "additionalProperties": False,
                },
            ]
        }
    ),
]

DelayKind = Literal["duration", "until_date", "until_property", "until_weekday", "until_time"]
_DELAY_KINDS: tuple[DelayKind, ...] = (
    "duration",
    "until_date",
    "until_property",
    "until_weekday",
    "until_time",
)


class DelayAction(_ActionBase):
    """Wait, then continue. Exactly one of the five forms:

    - `duration: 2d` — a calendar-time delay;
    - `until_date: 2026-12-01T09:00` — until a date/time (without offset: the workflow's zone);
    - `until_property: renewal_date` (+ `offset: -7d`, `at: "09:00"`) — until the date held by
      a record property, shifted by `offset`, at time `at` (a past date continues at once);
    - `until_weekday: [mon, thu]` + `at: "09:00"` — until the next of these days at `at`;
    - `until_time: {at: "09:00"}` or the shorthand `until_time: "09:00"` — until the next
      time of day. Both spellings parse to the same `datetime.time` in `until_time`, which
      is written back in the shorthand form.

    `kind` tells which form is used.
    """

    type: Literal["delay"] = "delay"
    duration: PositiveDuration | None = Field(default=None, description="How long to wait")
    until_date: datetime | None = Field(default=None, description="Wait until this ISO datetime")
    until_property: PropertyName | None = Field(
        default=None, description="Wait until the date in this record property"
    )
    offset: SignedDuration | None = Field(
        default=None, description="With until_property: shift the date, e.g. -1d"
    )
    at: TimeOfDay | None = Field(
        default=None,
        description='Time of day "HH:MM"; with until_property (optional), until_weekday (required)',
    )
    until_weekday: list[Weekday] | None = Field(
        default=None, min_length=1, description="Wait until the next of these days (with at)"
    )
    until_time: UntilTime | None = Field(
        default=None, description='Wait until the next time of day: "HH:MM" or {at: "HH:MM"}'
    )

    @model_validator(mode="after")
    def _one_form(self) -> DelayAction:
        given = [kind for kind in _DELAY_KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(f"a delay needs exactly one of {', '.join(_DELAY_KINDS)} ({found})")
        kind = given[0]
        problems: list[tuple[Loc, str]] = []
        if self.offset is not None and kind != "until_property":
            problems.append((("offset",), "offset is only used with until_property"))
        if kind == "until_weekday" and self.at is None:
            problems.append((("at",), 'until_weekday needs at: "HH:MM"'))
        if self.at is not None and kind not in ("until_property", "until_weekday"):
            hint = ' (write until_time: "HH:MM")' if kind == "until_time" else ""
            message = f"at is only used with until_property or until_weekday{hint}"
            problems.append((("at",), message))
        if self.until_weekday and len(set(self.until_weekday)) != len(self.until_weekday):
            problems.append((("until_weekday",), "a day is listed twice"))
        raise_problems(problems)
        return self

    @property
    def kind(self) -> DelayKind:
        """Which form of delay this is."""
        return next(kind for kind in _DELAY_KINDS if getattr(self, kind) is not None)

    def weekdays(self) -> list[int]:
        """For until_weekday: the days as `datetime.weekday()` numbers (0 = Monday)."""
        return sorted(WEEKDAYS.index(day) for day in self.until_weekday or [])

    def _summary(self) -> str:
        at = f" at {self.at:%H:%M}" if self.at else ""
        match self.kind:
            case "duration":
                assert self.duration is not None
                return f"delay {format_duration(self.duration)}"
            case "until_date":
                assert self.until_date is not None
                return f"delay until {self.until_date.isoformat()}"
            case "until_property":
                offset = f" {format_duration(self.offset)}" if self.offset else ""
                if offset and not offset.startswith(" -"):
                    offset = " +" + offset[1:]
                return f"delay until {self.until_property}{offset}{at}"
            case "until_weekday":
                return f"delay until {', '.join(self.until_weekday or [])}{at}"
            case _:
                return f"delay until {self.until_time:%H:%M}"


# ---------------------------------------------------------------------------- flow control


class WaitForEventAction(_ActionBase):
    """Wait until the record does an event; continue with `next` when it happens, with
    `on_timeout` when `timeout` passes first (without `on_timeout`: continue as on the event).
    Without `timeout` the wait lasts until the event, the goal or unenrollment."""

    type: Literal["wait_for_event"] = "wait_for_event"
    event: Name = Field(description="Event name, e.g. email_opened")
    where: dict[str, ScalarValue] = Field(
        default_factory=dict, description="Event properties that must be equal"
    )
    timeout: PositiveDuration | None = Field(default=None, description="Longest wait, e.g. 3d")
    on_timeout: ActionRef | None = Field(
        default=None, description="Where to go on timeout (an id or 'end'); default: like next"
    )

    @model_validator(mode="after")
    def _check(self) -> WaitForEventAction:
        if self.on_timeout is not None and self.timeout is None:
            raise DefinitionProblems([(("on_timeout",), "on_timeout needs a timeout")])
        return self

    def _branch_refs(self) -> list[tuple[Loc, str | None]]:
        return [(("on_timeout",), self.on_timeout)]

    def _summary(self) -> str:
        timeout = f" (timeout {format_duration(self.timeout)})" if self.timeout else ""
        return f"wait_for_event {self.event}{timeout}"


class BranchCase(DefinitionModel):
    """One if/then branch: the first case whose condition holds is taken."""

    name: Name = Field(description="Name of the branch, shown in history")
    when: RootCondition = Field(description="Condition on the record as it is now")
    next: ActionRef = Field(description="Where to go (an id or 'end')")


class BranchAction(_BranchingAction):
    """If/then branch: the first case whose `when` holds wins, else `otherwise`."""

    type: Literal["branch"] = "branch"
    branches: list[BranchCase] = Field(
        min_length=1, max_length=MAX_BRANCHES, description="Cases, tried in order (1-20)"
    )

    @model_validator(mode="after")
    def _unique_names(self) -> BranchAction:
        names: set[str] = set()
        for index, case in enumerate(self.branches):
            if case.name in names:
                raise DefinitionProblems(
                    [(("branches", index, "name"), f"two branches are named {case.name!r}")]
                )
            names.add(case.name)
        return self

    def _branch_refs(self) -> list[tuple[Loc, str | None]]:
        refs: list[tuple[Loc, str | None]] = [
            (("branches", i, "next"), case.next) for i, case in enumerate(self.branches)
        ]
        return [*refs, (("otherwise",), self.otherwise)]

    def _summary(self) -> str:
        return "branch " + " | ".join([*(case.name for case in self.branches), "otherwise"])


def _case_keys(value: Any) -> Any:
    # YAML turns `10:` or `true:` into non-string keys; cases compare with the value's text.
    if not isinstance(value, dict):
        return value
    keys: dict[Any, Any] = {}
    for key, target in value.items():
        if key is None:
            raise ValueError("a case cannot be null: use 'otherwise' for a missing value")
        text = str(key).lower() if isinstance(key, bool) else str(key)
        keys[text] = target
    return keys


class ValueBranchAction(_BranchingAction):
    """Branch on one property's value: `cases` maps a value (as text) to a target."""

    type: Literal["value_branch"] = "value_branch"
    property: PropertyName = Field(description="The property whose value picks the case")
    cases: Annotated[dict[str, ActionRef], BeforeValidator(_case_keys)] = Field(
        min_length=1, max_length=MAX_CASES, description="value -> action id (or 'end'), at most 250"
    )

    def _branch_refs(self) -> list[tuple[Loc, str | None]]:
        refs: list[tuple[Loc, str | None]] = [(("cases", k), t) for k, t in self.cases.items()]
        return [*refs, (("otherwise",), self.otherwise)]

    def _summary(self) -> str:
        count = len(self.cases)
        return f"value_branch {self.property} ({count} case{'s' if count > 1 else ''})"


class SplitPath(DefinitionModel):
    """One path of a random split."""

    percent: int = Field(strict=True, ge=1, le=100, description="Share of enrollments, 1-100")
    next: ActionRef = Field(description="Where this path goes (an id or 'end')")


class SplitAction(_ActionBase):
    """Random split, deterministic per enrollment; the percents sum to 100."""

    type: Literal["split"] = "split"
    paths: list[SplitPath] = Field(min_length=1, description="Paths and their percents")

    @model_validator(mode="after")
    def _check(self) -> SplitAction:
        problems: list[tuple[Loc, str]] = []
        if self.next is not None:
            problems.append((("next",), "a split never uses 'next': each path has its own"))
        total = sum(path.percent for path in self.paths)
        if total != 100:
            problems.append((("paths",), f"percents must sum to 100, not {total}"))
        raise_problems(problems)
        return self

    def _branch_refs(self) -> list[tuple[Loc, str | None]]:
        return [(("paths", i, "next"), path.next) for i, path in enumerate(self.paths)]

    def falls_through(self) -> bool:
        return False

    def _summary(self) -> str:
        return "split " + " / ".join(f"{path.percent}%" for path in self.paths)


# ------------------------------------------------------------------------------ properties


class SetPropertyAction(_ActionBase):
    """Set a property of the record."""

    type: Literal["set_property"] = "set_property"
    property: PropertyName = Field(description="The property to set")
    value: PropertyValue = Field(
        default=None, description="String (may use {{ record.prop }}), number, boolean or null"
    )

    def _summary(self) -> str:
        return f"set_property {self.property} = {json.dumps(self.value, ensure_ascii=False)}"


class CopyPropertyAction(_ActionBase):
    """Copy one property of the record to another."""

    type: Literal["copy_property"] = "copy_property"
    from_: PropertyName = Field(alias="from", description="The property to read")
    to: PropertyName = Field(description="The property to write")

    def _summary(self) -> str:
        return f"copy_property {self.from_} -> {self.to}"


class ClearPropertyAction(_ActionBase):
    """Remove a property from the record."""

    type: Literal["clear_property"] = "clear_property"
    property: PropertyName = Field(description="The property to remove")

    def _summary(self) -> str:
        return f"clear_property {self.property}"


class IncrementPropertyAction(_ActionBase):
    """Add a number to a numeric property (a missing property counts as 0)."""

    type: Literal["increment_property"] = "increment_property"
    property: PropertyName = Field(description="The numeric property")
    by: Number = Field(default=1, description="Amount to add; may be negative")

    def _summary(self) -> str:
        return f"increment_property {self.property} {'+' if self.by >= 0 else ''}{self.by}"


# ---------------------------------------------------------------------------------- lists


class AddToListAction(_ActionBase):
    """Add the record to a static list."""

    type: Literal["add_to_list"] = "add_to_list"
    list: Name = Field(description="List name")

    def _summary(self) -> str:
        return f"add_to_list {self.list}"


class RemoveFromListAction(_ActionBase):
    """Remove the record from a static list."""

    type: Literal["remove_from_list"] = "remove_from_list"
    list: Name = Field(description="List name")

    def _summary(self) -> str:
        return f"remove_from_list {self.list}"


# ------------------------------------------------------------------------ communication


_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+$")


def _address(value: str) -> str:
    if "{{" not in value and not _ADDRESS.match(value.strip()):
        raise ValueError(f"{value!r} is not an email address")
    return value


Address = Annotated[Template, AfterValidator(_address)]
"""An email address, or a template that renders to one."""


class SendEmailAction(_ActionBase):
    """Send an email to the record (its `email` property unless `to` is given)."""

    type: Literal["send_email"] = "send_email"
    subject: Template = Field(min_length=1, description="Subject (template)")
    body: Template = Field(description="Body text (template)")
    to: Address | None = Field(
        default=None, description="Recipient address (template); default: the record's email"
    )

    def _summary(self) -> str:
        return f"send_email {_quote(self.subject)}"


class NotifyAction(_ActionBase):
    """Send an internal notification email, e.g. to the sales team."""

    type: Literal["notify"] = "notify"
    to: Address = Field(description="Recipient address (template)")
    subject: Template = Field(min_length=1, description="Subject (template)")
    body: Template = Field(default="", description="Body text (template)")

    def _summary(self) -> str:
        return f"notify {self.to} {_quote(self.subject)}"


class CreateTaskAction(_ActionBase):
    """Create a task tied to the record."""

    type: Literal["create_task"] = "create_task"
    title: Template = Field(min_length=1, description="Task title (template)")
    due_in: PositiveDuration | None = Field(default=None, description="Due this long after now")
    assignee: Template | None = Field(default=None, description="Who does it (template)")

    def _summary(self) -> str:
        return f"create_task {_quote(self.title)}"


class CreateRecordAction(_ActionBase):
    """Create a record of another object type, associated with the enrolled record."""

    type: Literal["create_record"] = "create_record"
    object_type: ObjectType = Field(description="Object type of the new record, e.g. deal")
    properties: dict[str, PropertyValue] = Field(
        default_factory=dict, description="Its properties; strings may use templates"
    )

    def _summary(self) -> str:
        return f"create_record {self.object_type}"


def _url(value: str) -> str:
    if not value.startswith(("http://", "https://", "{{", "${env:")):
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    return value


Url = Annotated[HeaderTemplate, AfterValidator(_url)]


class WebhookAction(_ActionBase):
    """Call an HTTP endpoint. The URL and header values may use `${env:NAME}`, replaced inside
    the worker only (secrets never stand in a definition or a Temporal history)."""

    type: Literal["webhook"] = "webhook"
    url: Url = Field(description="http(s) URL (template; ${env:NAME} reads the worker's env)")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = Field(
        default="POST", description="HTTP method"
    )
    headers: dict[str, HeaderTemplate] = Field(
        default_factory=dict, description="Headers (templates; ${env:NAME} reads the worker's env)"
    )
    body: JsonBody = Field(
        default=None, description="Body: template text, or a JSON object/array of templates"
    )
    timeout: PositiveDuration = Field(
        default=timedelta(seconds=10), description="Request timeout, default 10s"
    )

    def _summary(self) -> str:
        return f"webhook {self.method} {self.url}"


# ------------------------------------------------------------------------------ workflows


class EnrollInWorkflowAction(_ActionBase):
    """Enroll the record in another active workflow."""

    type: Literal["enroll_in_workflow"] = "enroll_in_workflow"
    workflow: WorkflowKey = Field(description="Key of the workflow")

    def _summary(self) -> str:
        return f"enroll_in_workflow {self.workflow}"


class UnenrollFromWorkflowAction(_ActionBase):
    """Unenroll the record from other workflows."""

    type: Literal["unenroll_from_workflow"] = "unenroll_from_workflow"
    workflows: list[WorkflowKey] = Field(min_length=1, description="Keys of the workflows")

    def _summary(self) -> str:
        return f"unenroll_from_workflow {', '.join(self.workflows)}"


class CustomAction(_ActionBase):
    """Run a user-registered Python action."""

    type: Literal["custom"] = "custom"
    handler: Name = Field(description="Name the handler was registered under")
    params: Annotated[dict[str, Any], AfterValidator(check_json_value)] = Field(
        default_factory=dict, description="Parameters (JSON values)"
    )

    def _summary(self) -> str:
        return f"custom {self.handler}"


Action = Annotated[
    DelayAction
    | WaitForEventAction
    | BranchAction
    | ValueBranchAction
    | SplitAction
    | SetPropertyAction
    | CopyPropertyAction
    | ClearPropertyAction
    | IncrementPropertyAction
    | AddToListAction
    | RemoveFromListAction
    | SendEmailAction
    | NotifyAction
    | CreateTaskAction
    | CreateRecordAction
    | WebhookAction
    | EnrollInWorkflowAction
    | UnenrollFromWorkflowAction
    | CustomAction,
    Field(discriminator="type"),
]
"""Any action, discriminated by `type`."""
