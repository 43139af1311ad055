"""Enrolling many selected records: one page of ids at a time (keyset paging in SQL, never
every record in memory), a bounded number of starts at once. Shared by `--enroll-existing` and
scheduled runs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from sqlalchemy import Select
from sqlalchemy.orm import Session, sessionmaker

from crmflow.activities.ports import EnrollOutcome, Outcome
from crmflow.definitions import WorkflowDefinition
from crmflow.store import RecordRepository

from ._ready import Ready

PAGE_SIZE = 500
CONCURRENCY = 32


class Launcher(Protocol):
    """The starter's two halves, as the fan-out uses them."""

    def prepare_page(
        self,
        definition: WorkflowDefinition,
        version: int,
        record_ids: Sequence[str],
        *,
        source: str,
    ) -> list[Ready | EnrollOutcome]: ...

    async def launch(self, ready: Ready) -> EnrollOutcome: ...


async def enroll_selected(
    sessions: sessionmaker[Session],
    starter: Launcher,
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
    others — goes to `on_outcome`; `on_page(last_id)` runs once a page and every page before it
    are done (a resume point).

    The pages stream: while `concurrency` starts are in flight, the next page is selected and
    its rows written (one transaction a page), so the starts never wait for a page's last one
    to finish before the next page begins."""
    queue: asyncio.Queue[tuple[int, str, Ready | EnrollOutcome] | None] = asyncio.Queue(
        maxsize=page_size
    )
    pending: list[int] = []  # per page: records whose outcome is not reported yet
    lasts: list[str] = []  # per page: its last id
    reported = 0  # pages passed to on_page
    in_order = asyncio.Lock()

    async def pages_done() -> None:
        nonlocal reported
        async with in_order:
            while reported < len(pending) and pending[reported] == 0:
                reported += 1
                if on_page is not None and (done := on_page(lasts[reported - 1])) is not None:
                    await done

    async def launch() -> None:
        while (item := await queue.get()) is not None:
            page_no, record_id, ready = item
            outcome: Outcome
            if isinstance(ready, EnrollOutcome):
                outcome = ready
            else:
                try:
                    outcome = await starter.launch(ready)
                except Exception as exc:
                    outcome = exc
            on_outcome(record_id, outcome)
            pending[page_no] -= 1
            if pending[page_no] == 0:
                await pages_done()

    def select_page(after: str | None) -> list[str]:
        with sessions() as session:
            return RecordRepository(session).matching_ids(selection, after=after, limit=page_size)

    async def produce() -> None:
        nonlocal after
        try:
            while True:
                # In a thread, so the starts in flight go on meanwhile; one page at a time, so
                # it never competes with itself for the store's write lock.
                page = await asyncio.to_thread(select_page, after)
                if not page:
                    return
                # The page's store work in one transaction, not one per start.
                prepared = await asyncio.to_thread(
                    starter.prepare_page, definition, version, page, source=source
                )
                page_no, after = len(pending), page[-1]
                pending.append(len(page))
                lasts.append(after)
                for record_id, ready in zip(page, prepared, strict=True):
                    await queue.put((page_no, record_id, ready))
        finally:
            for _ in range(concurrency):
                await queue.put(None)

    await asyncio.gather(produce(), *(launch() for _ in range(concurrency)))
