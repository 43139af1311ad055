"""Endpoints mounted in the TEST API only, to exercise the API's machinery: they write and read
records through the store's repositories, inside the request's transaction."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from crmflow.api import (
    CONFLICT,
    NOT_FOUND,
    ApiProblem,
    ApiScope,
    CurrentKey,
    RequestUnitOfWork,
    StoreSession,
    scoped_router,
    services,
)
from crmflow.store import EventRepository, RecordRepository


class Properties(BaseModel):
    properties: dict[str, Any] = Field(default_factory=dict)


class NewRecord(Properties):
    object_type: str = "contact"
    id: str


class NewEvent(BaseModel):
    record_id: str
    name: str


class BatchItem(BaseModel):
    id: str
    properties: dict[str, Any] = Field(default_factory=dict)


class Batch(BaseModel):
    records: list[BatchItem] = Field(max_length=1000)


@dataclass
class Gate:
    """Holds the first call of the slow endpoint until the test releases it."""

    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pass_through(self) -> None:
        with self.lock:
            self.calls += 1
            first = self.calls == 1
        if first:
            self.entered.set()
            assert self.release.wait(timeout=60), "the test never released the gate"


Services = Annotated[Gate, Depends(services)]


def now() -> datetime:
    return datetime.now(UTC)


def record_json(record: Any) -> dict[str, Any]:
    return {"object_type": record.object_type, "id": record.id, "properties": record.properties}


def add_event(session: Session, body: NewEvent) -> int:
    RecordRepository(session).upsert("contact", body.record_id, {}, now=now())
    return (
        EventRepository(session).add("contact", body.record_id, body.name, {}, occurred_at=now()).id
    )


def events_of(store: Any, record_id: str) -> int:
    """How many events a record has (in the test's store)."""
    with store.sessions() as session:
        return len(EventRepository(session).for_record("contact", record_id))


def record_of(store: Any, record_id: str) -> dict[str, Any] | None:
    with store.sessions() as session:
        record = RecordRepository(session).get("contact", record_id)
        return None if record is None else record_json(record)


def ingest_router() -> APIRouter:
    router = scoped_router(ApiScope.INGEST, prefix="/demo", tags=["demo"])

    @router.put("/records/{object_type}/{record_id}")
    def put_record(
        object_type: str, record_id: str, body: Properties, session: StoreSession
    ) -> dict[str, Any]:
        record, _ = RecordRepository(session).upsert(
            object_type, record_id, body.properties, now=now()
        )
        return record_json(record)

    @router.post("/records", status_code=201)
    def post_record(body: NewRecord, session: StoreSession) -> JSONResponse:
        record, created = RecordRepository(session).upsert(
            body.object_type, body.id, body.properties, now=now()
        )
        return JSONResponse(
            {**record_json(record), "created": created},
            status_code=201,
            headers={"Location": f"/demo/records/{record.object_type}/{record.id}"},
        )

    @router.post("/batch")
    def batch(body: Batch, session: StoreSession) -> dict[str, int]:
        records = RecordRepository(session)
        for item in body.records:
            records.upsert("contact", item.id, item.properties, now=now())
        return {"upserted": len(body.records)}

    @router.post("/events", status_code=202)
    def track(body: NewEvent, session: StoreSession) -> dict[str, int]:
        return {"event_id": add_event(session, body)}

    @router.post("/slow", status_code=202)
    def slow(body: NewEvent, session: StoreSession, gate: Services) -> dict[str, int]:
        gate.pass_through()
        return {"event_id": add_event(session, body)}

    @router.post("/fail-after-write")
    def fail_after_write(body: NewRecord, session: StoreSession) -> dict[str, Any]:
        RecordRepository(session).upsert(body.object_type, body.id, body.properties, now=now())
        raise RuntimeError("boom: a bug after a write")

    @router.post("/conflict-after-write")
    def conflict_after_write(body: NewRecord, session: StoreSession) -> dict[str, Any]:
        RecordRepository(session).upsert(body.object_type, body.id, body.properties, now=now())
        raise ApiProblem(CONFLICT, "refused after writing", errors=[(["body", "id"], "taken")])

    @router.post("/refuse-after-write")
    def refuse_after_write(body: NewRecord, session: StoreSession) -> JSONResponse:
        RecordRepository(session).upsert(body.object_type, body.id, body.properties, now=now())
        return JSONResponse({"refused": True}, status_code=409)

    @router.post("/service-style")
    def service_style(
        body: NewRecord, unit: RequestUnitOfWork, fail: bool = False
    ) -> dict[str, Any]:
        # As a service layer that opens (and commits) its own sessions would.
        with unit.sessions.begin() as session:
            RecordRepository(session).upsert(body.object_type, body.id, body.properties, now=now())
        with unit.sessions() as session, session.begin():
            record = RecordRepository(session).require(body.object_type, body.id)
            result = record_json(record)
        if fail:
            raise ApiProblem(CONFLICT, "refused after the service committed")
        return result

    @router.post("/commit-early")
    def commit_early(body: NewRecord, session: StoreSession) -> dict[str, Any]:
        RecordRepository(session).upsert(body.object_type, body.id, body.properties, now=now())
        session.commit()
        return {}

    @router.post("/whoami")
    def whoami(key: CurrentKey) -> dict[str, str]:
        return {"name": key.name, "scope": key.scope.value}

    return router


def read_router() -> APIRouter:
    router = scoped_router(ApiScope.READ, prefix="/demo", tags=["demo"])

    @router.get("/records/{object_type}/{record_id}")
    def get_record(object_type: str, record_id: str, session: StoreSession) -> dict[str, Any]:
        record = RecordRepository(session).get(object_type, record_id)
        if record is None:
            raise ApiProblem(
                NOT_FOUND,
                f"no {object_type} with id '{record_id}'",
                errors=[(["path", "record_id"], "no such record")],
            )
        return record_json(record)

    return router


def admin_router() -> APIRouter:
    router = scoped_router(
        ApiScope.ADMIN,
        prefix="/demo/admin",
        tags=["demo"],
        media_types=("application/json", "application/yaml"),
    )

    @router.post("/documents")
    async def documents(request: Request) -> dict[str, Any]:
        body = await request.body()
        return {"bytes": len(body), "media_type": request.headers.get("content-type")}

    @router.delete("/records/{object_type}/{record_id}", status_code=204)
    def delete_record(object_type: str, record_id: str, session: StoreSession) -> Response:
        if not RecordRepository(session).delete(object_type, record_id, now=now()):
            raise ApiProblem(NOT_FOUND, f"no {object_type} with id '{record_id}'")
        return Response(status_code=204)

    return router


def all_routers() -> list[APIRouter]:
    return [ingest_router(), read_router(), admin_router()]
