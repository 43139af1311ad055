"""Group commit of single-record upserts (`PUT /v1/records/...`).

Under concurrency, one transaction per request makes every writer wait its turn for the store
(SQLite has one writer; each turn is a BEGIN, a few statements and a COMMIT). Here the upserts
that arrive while a transaction runs wait in a queue, and the next transaction writes all of
them at once (`RecordRepository.upsert_many`: one SELECT, one INSERT of many rows, one COMMIT),
then answers each request with its own record. What each request gets is what it would have
got alone: its write is in the store, with its change feed entry, before its answer.

A request's problem stays its own: a group that the store refuses as a whole (a record over
1 MiB) is written again one record at a time, each in a savepoint, so only the refused request
fails. A record named twice in a group waits for the next group (each request sees the record
as its own write left it).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.requests import Request

from crmflow.services import record_view
from crmflow.store import RecordRepository, StoreError, merge_properties

from ._routing import api_context

log = logging.getLogger("crmflow.api")

MAX_GROUP = 200


@dataclass
class Upsert:
    object_type: str
    record_id: str
    values: Mapping[str, Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.future = self.loop.create_future()

    def answer(self, view: dict[str, Any] | None, error: BaseException | None) -> None:
        def settle() -> None:
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(view or {})

        try:
            self.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the server stopped meanwhile: nobody waits for the answer
            log.debug("an upsert's answer found its event loop closed")


class GroupCommit:
    """One writer thread per API process and store, started on first use."""

    def __init__(self, engine: Engine, write_lock: threading.Lock | None) -> None:
        self.engine = engine
        self.write_lock = write_lock
        self._queue: queue.SimpleQueue[Upsert] = queue.SimpleQueue()
        self._started = False
        self._start_lock = threading.Lock()

    async def upsert(
        self, object_type: str, record_id: str, values: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Write the record (merge `values`) and answer it as `records show --json` does;
        StoreError if the store refuses it."""
        self._start()
        job = Upsert(object_type, record_id, values, asyncio.get_running_loop())
        self._queue.put(job)
        return await job.future

    def _start(self) -> None:
        with self._start_lock:
            if not self._started:
                threading.Thread(target=self._run, name="crmflow-group-commit", daemon=True).start()
                self._started = True

    def _run(self) -> None:
        waiting: list[Upsert] = []
        while True:
            if not waiting:
                waiting.append(self._queue.get())
            while len(waiting) < MAX_GROUP:
                try:
                    waiting.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            group, waiting = _distinct(waiting)
            try:
                self._write(group)
            except BaseException as exc:  # the store is down: each request answers it
                log.warning("group commit of %d upserts failed: %s", len(group), exc)
                for job in group:
                    job.answer(None, exc)

    def _write(self, group: list[Upsert]) -> None:
        now = datetime.now(UTC)
        with self.write_lock or nullcontext():
            try:
                views = self._together(group, now)
            except StoreError:
                self._one_by_one(group, now)
                return
        for job, view in zip(group, views, strict=True):
            job.answer(view, None)

    def _together(self, group: list[Upsert], now: datetime) -> list[dict[str, Any]]:
        by_type: dict[str, list[Upsert]] = {}
        for job in group:
            by_type.setdefault(job.object_type, []).append(job)
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            records = RecordRepository(session)
            existing: set[tuple[str, str]] = set()
            for object_type, jobs in by_type.items():
                ids = [job.record_id for job in jobs]
                existing.update((object_type, i) for i in records.existing_ids(object_type, ids))
                records.upsert_many(
                    object_type, [(job.record_id, job.values) for job in jobs], now=now
                )
            return [
                record_view(session, job.object_type, job.record_id).as_json()
                if (job.object_type, job.record_id) in existing
                else _new_view(job)
                for job in group
            ]

    def _one_by_one(self, group: list[Upsert], now: datetime) -> None:
        answers: list[tuple[Upsert, dict[str, Any] | None, BaseException | None]] = []
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            records = RecordRepository(session)
            for job in group:
                try:
                    with session.begin_nested():
                        records.upsert(job.object_type, job.record_id, job.values, now=now)
                        view = record_view(session, job.object_type, job.record_id).as_json()
                except StoreError as exc:
                    answers.append((job, None, exc))
                else:
                    answers.append((job, view, None))
        for job, answer, error in answers:
            job.answer(answer, error)


def _new_view(job: Upsert) -> dict[str, Any]:
    """A record made now: its properties are the values (nulls dropped), it is in no list
    and associated with nothing."""
    return {
        "object_type": job.object_type,
        "id": job.record_id,
        "properties": merge_properties({}, job.values),
        "lists": [],
        "associations": [],
    }


def _distinct(jobs: list[Upsert]) -> tuple[list[Upsert], list[Upsert]]:
    """The jobs of distinct records, in order; the others (a record named again) wait."""
    seen: set[tuple[str, str]] = set()
    group: list[Upsert] = []
    later: list[Upsert] = []
    for job in jobs:
        key = (job.object_type, job.record_id)
        (later if key in seen else group).append(job)
        seen.add(key)
    return group, later


def group_commit(request: Request) -> GroupCommit:
    """The API's group commit (one per app), made on first use."""
    state = request.app.state
    found: GroupCommit | None = getattr(state, "group_commit", None)
    if found is None:
        context = api_context(request)
        found = state.group_commit = GroupCommit(context.engine, context.write_lock)
    return found
