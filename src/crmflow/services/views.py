"""What the services give back: typed, frozen models whose JSON form (`model_dump(mode="json")`)
is the shape the CLI's `--json` prints and the HTTP API answers (SPEC §4 and §7), so every
surface and the tests share one shape. Timestamps are ISO-8601 strings, as the store's
`isoformat()` writes them. A view also reads like its JSON (`view["field"]`) and equals its
JSON form."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class View(BaseModel):
    model_config = ConfigDict(frozen=True)

    def __getitem__(self, name: str) -> Any:
        if name not in type(self).model_fields:
            raise KeyError(name)
        return getattr(self, name)

    def __eq__(self, other: object) -> bool:
        # Equal to its own JSON shape too (what tests and callers compare with).
        if isinstance(other, dict):
            return self.model_dump() == other
        return super().__eq__(other)

    def __hash__(self) -> int:
        return hash(self.model_dump_json())

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class StepView(View):
    action_id: str
    type: str
    started_at: str | None
    finished_at: str | None
    outcome: str | None


class EnrollmentView(View):
    workflow: str
    version: int
    record_id: str
    object_type: str
    status: str
    reason: str | None
    source: str | None
    enrolled_at: str | None
    ended_at: str | None
    temporal_workflow_id: str
    steps: list[StepView]


class HistoryView(View):
    workflow: str
    record_id: str
    object_type: str
    explanation: dict[str, Any]
    enrollments: list[EnrollmentView]


class OutboxView(View):
    to: str
    subject: str
    body: str
    workflow: str | None
    action_id: str | None
    record_id: str | None
    sent_at: str | None
    kind: str | None
    message_id: str | None
    delivery_status: str | None


class TaskView(View):
    title: str
    assignee: str | None
    due_at: str | None
    record_id: str | None
    workflow: str | None
    action_id: str | None
    created_at: str | None


class RecordRef(View):
    object_type: str
    id: str


class RecordView(View):
    object_type: str
    id: str
    properties: dict[str, Any]
    lists: list[str]
    # Beyond SPEC §4's shape: the records `create_record` made for it (or it was made for).
    associations: list[RecordRef]


class ListView(View):
    name: str
    object_type: str
    members: list[str]


class EventView(View):
    object_type: str
    record_id: str
    name: str
    properties: dict[str, Any]
    occurred_at: str


class ChangeView(View):
    id: int
    object_type: str
    record_id: str
    kind: str
    changed: dict[str, Any]
    occurred_at: str | None
    status: str
    attempts: int
    error: str | None
    next_attempt_at: str | None
    parked_at: str | None
    waiting_behind: int | None


class WorkflowView(View):
    key: str
    version: int
    latest_version: int
    versions: list[int]
    active: bool
    published_at: str
    source_name: str | None
    enrollments: dict[str, int]
    definition: Any
    source: str | None
    # Why this version's stored definition no longer loads (None: it loads).
    broken: str | None
    schedule: dict[str, Any] | None
