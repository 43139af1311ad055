"""What each dashboard page shows, read from the store (through its repositories and the same
service functions as the CLI). Plain data for the templates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import quote

from sqlalchemy.orm import Session, sessionmaker

from crmflow.definitions import WorkflowDefinition
from crmflow.graphs import build_graph, render
from crmflow.schedules import describe_schedule, next_run_times
from crmflow.services import App, UserError, enrollment_view, record_view
from crmflow.services.insights import action_counts
from crmflow.services.whynot import explain_record
from crmflow.store import (
    EnrollmentListing,
    EnrollmentRepository,
    RecordNotFound,
    StatsRepository,
    StoreError,
    WorkflowRepository,
    stored_definition,
)

RECENT = 50


@dataclass(frozen=True)
class _StoreOnly:
    """What the service functions the dashboard calls use of an App: the store's sessions."""

    sessions: sessionmaker[Session]


def temporal_link(base: str, namespace: str, workflow_id: str) -> str:
    """The enrollment's execution in the Temporal Web UI."""
    return (
        f"{base.rstrip('/')}/namespaces/{quote(namespace, safe='')}/workflows/"
        f"{quote(workflow_id, safe='')}"
    )


def _definition(row: Any) -> tuple[WorkflowDefinition | None, str | None]:
    try:
        return stored_definition(row), None
    except StoreError as exc:
        return None, str(exc)


def trigger_text(definition: WorkflowDefinition) -> str:
    node = build_graph(definition).node("trigger")
    return " · ".join([node.title, *node.lines])


def workflows(sessions: sessionmaker[Session]) -> list[dict[str, Any]]:
    with sessions() as session:
        enrollments = EnrollmentRepository(session)
        found = []
        for workflow, version in WorkflowRepository(session).all():
            definition, broken = _definition(version)
            found.append(
                {
                    "key": workflow.key,
                    "name": version.name,
                    "object_type": version.object_type,
                    "version": version.version,
                    "active": workflow.active,
                    "trigger": trigger_text(definition) if definition else version.trigger,
                    "broken": broken,
                    "counts": enrollments.count_by_status(workflow.key),
                }
            )
    return found


class NotFound(Exception):
    pass


def workflow_page(
    sessions: sessionmaker[Session],
    key: str,
    *,
    version: int | None,
    status: str | None,
    record_id: str | None,
    now: datetime | None = None,
) -> dict[str, Any]:
    with sessions() as session:
        repo = WorkflowRepository(session)
        workflow = repo.get(key)
        if workflow is None:
            raise NotFound(f"no workflow '{key}'")
        try:
            row = repo.version(key, version)
        except StoreError as exc:
            raise NotFound(str(exc)) from None
        definition, broken = _definition(row)
        counts = StatsRepository(session).action_counts(key, version=row.version)
        listing = EnrollmentListing(session)
        recent = listing.recent(key, version=None, status=status, record_id=record_id, limit=RECENT)
        last = listing.last_steps([e.id for e in recent])
        versions = [
            {"version": v.version, "published_at": v.published_at, "source_name": v.source_name}
            for v in repo.versions(key)
        ]
        totals = EnrollmentRepository(session).count_by_status(key)
    svg = None
    schedule = None
    if definition is not None:
        graph = build_graph(definition, version=row.version)
        svg = render(graph, "svg", action_counts(counts))
        svg = svg.split("?>", 1)[1].strip() if svg.startswith("<?xml") else svg
        if definition.enrollment.schedule is not None:
            zone = definition.settings.timezone
            schedule = {
                "description": describe_schedule(definition.enrollment.schedule, timezone=zone),
                "timezone": zone,
                "next_runs": next_run_times(
                    definition.enrollment.schedule,
                    timezone=zone,
                    after=now or datetime.now(UTC),
                    count=5,
                ),
            }
    return {
        "key": key,
        "name": row.name,
        "version": row.version,
        "latest_version": workflow.latest_version,
        "active": workflow.active,
        "object_type": row.object_type,
        "description": definition.description if definition else None,
        "trigger": trigger_text(definition) if definition else row.trigger,
        "broken": broken,
        "svg": svg,
        "counts": counts,
        "actions": [(a.id, a.type) for a in definition.actions] if definition else [],
        "schedule": schedule,
        "versions": versions,
        "totals": totals,
        "enrollments": [
            {
                "id": e.id,
                "record_id": e.record_id,
                "object_type": e.object_type,
                "version": e.version,
                "status": e.status,
                "reason": e.reason,
                "enrolled_at": e.enrolled_at,
                "ended_at": e.ended_at,
                "step": last.get(e.id),
                "temporal_workflow_id": e.temporal_workflow_id,
            }
            for e in recent
        ],
    }


def record_page(
    sessions: sessionmaker[Session], object_type: str, record_id: str
) -> dict[str, Any]:
    store = cast(App, _StoreOnly(sessions))
    with sessions() as session:
        try:
            record = record_view(session, object_type, record_id).as_json()
        except RecordNotFound:
            record = None
        enrollments = EnrollmentRepository(session)
        found = enrollments.of_record(object_type, record_id)
        steps = enrollments.steps([e.id for e in found])
        history = [
            {**enrollment_view(e, steps[e.id]).as_json(), "id": e.id} for e in reversed(found)
        ]
        keys = [
            (w.key, v.name)
            for w, v in WorkflowRepository(session).all()
            if v.object_type == object_type
        ]
    if record is None and not found:
        raise NotFound(f"no {object_type} with id '{record_id}'")
    explanations = []
    for key, name in keys:
        try:
            _, explanation = explain_record(store, key, record_id)
            explanations.append(
                {
                    "key": key,
                    "name": name,
                    "state": explanation.state,
                    "message": explanation.message,
                    "details": explanation.details,
                }
            )
        except UserError as exc:
            explanations.append(
                {"key": key, "name": name, "state": "error", "message": str(exc), "details": []}
            )
    return {
        "object_type": object_type,
        "id": record_id,
        "record": record,
        "enrollments": history,
        "explanations": explanations,
    }
