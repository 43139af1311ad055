"""`/v1/records`, `/v1/events`, `/v1/lists`: records, events and list members in (scope
`ingest`), a record out (scope `read`).

Every write goes through the store's repositories in the request's one transaction, so it
lands in the change feed exactly as `records set`, `events track` and `lists add` do, and
triggers workflows the same way. Bodies are checked by the CLI's rules, every problem located
(`["body", "records", 3, "id"]`), before anything is written; a batch is all or nothing.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from crmflow.definitions import (
    check_event_id,
    check_event_name,
    check_list_name,
    check_object_type,
    check_record_id,
)
from crmflow.services import record_view
from crmflow.store import (
    ApiScope,
    EventRepository,
    ListRepository,
    RecordNotFound,
    RecordRepository,
    StoreError,
)
from crmflow.store import EnrollmentRepository as Enrollments

from ._checks import Problems, as_utc, located, path_checks
from ._group_commit import group_commit
from ._problems import NOT_FOUND, ApiProblem, Problem
from ._routing import RequestUnitOfWork, StoreSession, UnitOfWork, api_context, scoped_router

BATCH_MAX = 1000
# An event may be dated a little ahead of this server's clock (clocks differ), not more: a
# future event would sit in `within` windows that have not begun.
FUTURE_EVENT_SKEW = timedelta(minutes=5)

NOT_FOUND_RESPONSE: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such record.", "model": Problem}
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecordBody(_Body):
    properties: dict[str, Any] = Field(
        description="Merged into the record's properties; a null removes a property."
    )


class BatchRecord(_Body):
    id: str = Field(description="The record's id.")
    properties: dict[str, Any] = Field(default_factory=dict)


class RecordBatch(_Body):
    records: list[BatchRecord] = Field(max_length=BATCH_MAX, description="At most 1,000.")


class EventBody(_Body):
    object_type: str = Field(default="contact")
    record_id: str
    name: str = Field(description="e.g. form_submitted")
    properties: dict[str, Any] = Field(default_factory=dict)
    occurred_at: datetime | None = Field(
        default=None, description="ISO 8601 (UTC without an offset); default: now."
    )
    event_id: str | None = Field(
        default=None,
        description="The client's id of the event: an event is stored once per id (a retried "
        "POST never counts twice). Default: a new id.",
    )


class EventBatch(_Body):
    events: list[EventBody] = Field(max_length=BATCH_MAX, description="At most 1,000.")


class MembersBody(_Body):
    object_type: str = Field(default="contact")
    ids: list[str] = Field(max_length=BATCH_MAX, description="Record ids (at most 1,000).")


def now() -> datetime:
    return datetime.now(UTC)


def _record_path(object_type: str, record_id: str) -> None:
    path_checks(
        ("object_type", check_object_type, object_type),
        ("id", check_record_id, record_id),
    )


def _not_found(object_type: str, record_id: str) -> ApiProblem:
    return ApiProblem(
        NOT_FOUND,
        f"no {object_type} with id '{record_id}'",
        errors=[(["path", "id"], "no such record")],
    )


def _stored(loc: list[str | int], exc: StoreError) -> ApiProblem:
    """A refusal of the store (the last line of defence: a record over 1 MiB, a list of
    another object type), at the place in the request it concerns."""
    return located(loc, str(exc))


def _check_upsert(object_type: str, record_id: str, body: RecordBody) -> None:
    _record_path(object_type, record_id)
    problems = Problems()
    problems.properties(["body", "properties"], body.properties)
    problems.raise_any()


def _upsert(unit: UnitOfWork, object_type: str, record_id: str, body: RecordBody) -> Any:
    _check_upsert(object_type, record_id, body)
    session = unit.session()
    try:
        record, created = RecordRepository(session).upsert(
            object_type, record_id, body.properties, now=now()
        )
    except StoreError as exc:
        raise _stored(["body", "properties"], exc) from None
    if created:
        # What `records show --json` shows, without asking: a record made now is in no list
        # and associated with nothing (deleting a record deletes both).
        view = {
            "object_type": object_type,
            "id": record_id,
            "properties": dict(record.properties),
            "lists": [],
            "associations": [],
        }
    else:
        view = record_view(session, object_type, record_id).as_json()
    unit.finish()
    return view


def _event_problems(problems: Problems, loc: list[str | int], event: EventBody) -> None:
    problems.check([*loc, "object_type"], check_object_type, event.object_type)
    problems.check([*loc, "record_id"], check_record_id, event.record_id)
    problems.check([*loc, "name"], check_event_name, event.name)
    if event.event_id is not None:
        problems.check([*loc, "event_id"], check_event_id, event.event_id)
    problems.event_properties([*loc, "properties"], event.properties)
    if event.occurred_at is not None and as_utc(event.occurred_at) > now() + FUTURE_EVENT_SKEW:
        problems.add(
            [*loc, "occurred_at"],
            f"in the future (at most {FUTURE_EVENT_SKEW.seconds // 60} minutes ahead of the "
            "server's clock)",
        )


def _track(session: Session, loc: list[str | int], event: EventBody) -> tuple[str, bool]:
    """Store one checked event (once per event id); (its event id, True if stored now)."""
    if RecordRepository(session).get(event.object_type, event.record_id) is None:
        raise located([*loc, "record_id"], f"no {event.object_type} with id '{event.record_id}'")
    event_id = event.event_id or uuid.uuid4().hex
    occurred_at = as_utc(event.occurred_at) if event.occurred_at else now()
    try:
        _, added = EventRepository(session).add_once(
            event.object_type,
            event.record_id,
            event.name,
            event.properties,
            occurred_at=occurred_at,
            client_event_id=event_id,
        )
    except StoreError as exc:
        raise _stored([*loc, "properties"], exc) from None
    return event_id, added


def ingest_router() -> APIRouter:
    router = scoped_router(ApiScope.INGEST, prefix="/v1", tags=["ingest"])

    @router.put(
        "/records/{object_type}/{id:path}",
        summary="Create a record or merge properties into it",
        description="As `crmflow records set`: a null removes a property. Answers the record "
        "as `records show --json`.",
    )
    @router.patch("/records/{object_type}/{id:path}", include_in_schema=False)
    async def put_record(
        object_type: str, id: str, body: RecordBody, unit: RequestUnitOfWork, request: Request
    ) -> dict[str, Any]:
        if unit.deferred or not api_context(request).settings.group_commit:
            # An Idempotency-Key is held: its response is stored in the write's transaction.
            return dict(await to_thread.run_sync(_upsert, unit, object_type, id, body))
        _check_upsert(object_type, id, body)
        try:
            return await group_commit(request).upsert(object_type, id, body.properties)
        except StoreError as exc:
            raise _stored(["body", "properties"], exc) from None

    @router.delete(
        "/records/{object_type}/{id:path}",
        status_code=204,
        summary="Delete a record (it is unenrolled from every workflow)",
        responses=NOT_FOUND_RESPONSE,
    )
    def delete_record(object_type: str, id: str, session: StoreSession) -> Response:
        _record_path(object_type, id)
        if not RecordRepository(session).delete(object_type, id, now=now()):
            raise _not_found(object_type, id)
        return Response(status_code=204)

    @router.post(
        "/records/{object_type}/batch",
        summary="Upsert up to 1,000 records, all or none",
    )
    def batch_records(
        object_type: str, body: RecordBatch, unit: RequestUnitOfWork
    ) -> dict[str, int]:
        path_checks(("object_type", check_object_type, object_type))
        problems = Problems()
        for index, item in enumerate(body.records):
            loc: list[str | int] = ["body", "records", index]
            problems.check([*loc, "id"], check_record_id, item.id)
            problems.properties([*loc, "properties"], item.properties)
        problems.raise_any()
        rows = [(item.id, item.properties) for item in body.records]
        try:
            created, updated = RecordRepository(unit.session()).upsert_many(
                object_type, rows, now=now(), bulk=True
            )
        except StoreError as exc:
            raise _stored(["body", "records"], exc) from None
        unit.finish()
        return {"upserted": len(rows), "created": created, "updated": updated}

    @router.post(
        "/events",
        status_code=202,
        summary="Track an event of a record",
        description="As `crmflow events track`; the record must exist. With an `event_id`, "
        "the event is stored once: a retry answers 202 again with `duplicate: true`.",
    )
    def track_event(body: EventBody, unit: RequestUnitOfWork) -> dict[str, Any]:
        problems = Problems()
        _event_problems(problems, ["body"], body)
        problems.raise_any()
        event_id, added = _track(unit.session(), ["body"], body)
        unit.finish()
        return {"event_id": event_id, "duplicate": not added}

    @router.post(
        "/events/batch",
        status_code=202,
        summary="Track up to 1,000 events, all or none",
    )
    def track_events(body: EventBatch, unit: RequestUnitOfWork) -> dict[str, Any]:
        problems = Problems()
        for index, event in enumerate(body.events):
            _event_problems(problems, ["body", "events", index], event)
        problems.raise_any()
        ids = []
        duplicates = 0
        for index, event in enumerate(body.events):
            event_id, added = _track(unit.session(), ["body", "events", index], event)
            ids.append(event_id)
            duplicates += not added
        unit.finish()
        return {"accepted": len(ids), "duplicates": duplicates, "event_ids": ids}

    @router.post(
        "/lists/{name}/members",
        summary="Add records to a static list (made on first use)",
    )
    def add_members(name: str, body: MembersBody, session: StoreSession) -> dict[str, int]:
        path_checks(("name", check_list_name, name))
        problems = Problems()
        problems.check(["body", "object_type"], check_object_type, body.object_type)
        for index, record_id in enumerate(body.ids):
            problems.check(["body", "ids", index], check_record_id, record_id)
        problems.raise_any()
        records = RecordRepository(session)
        lists = ListRepository(session)
        added = 0
        moment = now()
        for index, record_id in enumerate(body.ids):
            if records.get(body.object_type, record_id) is None:
                raise located(
                    ["body", "ids", index], f"no {body.object_type} with id '{record_id}'"
                )
            try:
                added += lists.add(name, body.object_type, record_id, now=moment)
            except StoreError as exc:
                raise _stored(["body", "object_type"], exc) from None
        return {"added": added}

    @router.delete(
        "/lists/{name}/members/{object_type}/{id:path}",
        status_code=204,
        summary="Remove a record from a list (204 also when it was not a member)",
    )
    def remove_member(name: str, object_type: str, id: str, session: StoreSession) -> Response:
        path_checks(
            ("name", check_list_name, name),
            ("object_type", check_object_type, object_type),
            ("id", check_record_id, id),
        )
        ListRepository(session).remove(name, object_type, id, now=now())
        return Response(status_code=204)

    return router


def records_read_router() -> APIRouter:
    router = scoped_router(ApiScope.READ, prefix="/v1", tags=["ingest"])

    @router.get(
        "/records/{object_type}/{id:path}",
        summary="A record: properties, lists and enrollments",
        responses=NOT_FOUND_RESPONSE,
    )
    def get_record(object_type: str, id: str, session: StoreSession) -> dict[str, Any]:
        _record_path(object_type, id)
        try:
            view = record_view(session, object_type, id).as_json()
        except RecordNotFound:
            raise _not_found(object_type, id) from None
        view["enrollments"] = [
            {
                "workflow": e.workflow_key,
                "version": e.version,
                "status": e.status,
                "temporal_workflow_id": e.temporal_workflow_id,
            }
            for e in Enrollments(session).of_record(object_type, id)
        ]
        return view

    return router
