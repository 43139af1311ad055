"""Enrolling many selected records: one page of ids at a time (keyset paging in SQL, never
every record in memory), a bounded number of starts at once. Shared by `--enroll-existing` and
scheduled runs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import Session, sessionmaker

from crmflow.definitions import WorkflowDefinition
from crmflow.store import RecordRepository

from ._starting import EnrollmentStarter, EnrollOutcome

PAGE_SIZE = 500
CONCURRENCY = 32

Outcome = EnrollOutcome | Exception


async def enroll_selected(
    sessions: sessionmaker[Session],
    starter: EnrollmentStarter,
    definition: WorkflowDefinition,
    version: int,
    selection: Select[Any],
    *,
    source: str,
    on_outcome: Callable[[str, Outcome], None],
    after: str | None = None,
    on_page: Callable[[str], Awaitable[None] | None] | None = None,
    page_size: int = PAGE_SIZE,
    concurrency: int = CONCURRENCY,
) -> None:
    """Start an enrollment for every record id `selection` yields (after `after`, in id order).
    Each record's outcome — or the exception that stopped it: one failure never stops the
    others — goes to `on_outcome`; `on_page(last_id)` runs after each page (a resume point)."""
    gate = asyncio.Semaphore(concurrency)

    async def enroll(record_id: str) -> None:
        async with gate:
            try:
                outcome: Outcome = await starter.start(
                    definition, version, record_id, source=source
                )
            except Exception as exc:
                outcome = exc
        on_outcome(record_id, outcome)

    while True:
        with sessions() as session:
            page = RecordRepository(session).matching_ids(selection, after=after, limit=page_size)
        if not page:
            return
        await asyncio.gather(*(enroll(record_id) for record_id in page))
        after = page[-1]
        if on_page is not None and (pending := on_page(after)) is not None:
            await pending
