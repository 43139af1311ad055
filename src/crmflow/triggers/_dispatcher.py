"""The dispatcher: turns the change feed into enrollments and signals.

At least once, made idempotent: a change is marked dispatched only after everything it calls
for was done; a crash in between makes the next dispatcher redo it, and redoing creates nothing
twice (an enrollment is unique per workflow and trigger change, its workflow id is
deterministic and never reused; unenroll and goal signals to an ended run are ignored).
Changes are handled one at a time in feed order, so a record's changes keep their order; one
dispatcher runs at a time (a lease in the store), however many workers run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client

from crmflow.activities.models import EventSignal
from crmflow.conditions import RecordSnapshot
from crmflow.definitions import WorkflowDefinition
from crmflow.store import (
    ACTIVE_STATUSES,
    ChangeRepository,
    EnrollmentRepository,
    Lease,
    RecordChange,
    WorkflowRepository,
    load_snapshot,
)

from ._decide import (
    DELETED,
    EVENT,
    ActiveEnrollment,
    Change,
    Decision,
    Enroll,
    Leave,
    Trigger,
    decide,
)
from ._index import TriggerIndex
from ._starting import EnrollmentStarter

log = logging.getLogger(__name__)

LEASE = "dispatcher"
LEASE_TTL = timedelta(seconds=15)


def as_change(row: RecordChange) -> Change:
    return Change(
        id=row.id,
        object_type=row.object_type,
        record_id=row.record_id,
        kind=row.kind,
        properties=tuple(row.properties),
        before=dict(row.before),
        list_name=row.list_name,
        event_name=row.event_name,
        event_id=row.event_id,
    )


def load_index(session: Session) -> TriggerIndex:
    """Triggers of the latest version of each workflow, and of every older version that still
    has running enrollments (their exit rules are their own version's)."""
    workflows = WorkflowRepository(session)
    latest = {w.key: w for w, _ in workflows.all()}
    wanted = {(w.key, w.latest_version) for w in latest.values()}
    wanted |= EnrollmentRepository(session).active_versions()
    triggers = []
    for key, version in sorted(wanted):
        workflow = latest[key]
        row = workflows.version(key, version)
        triggers.append(
            Trigger.of(
                WorkflowDefinition.model_validate(row.definition),
                version,
                active=workflow.active and version == workflow.latest_version,
                activated_change_id=workflow.activated_change_id or 0,
            )
        )
    return TriggerIndex(triggers)


class Dispatcher:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        client: Client,
        *,
        task_queue: str,
        batch: int = 200,
        poll_interval: float = 0.1,
        holder: str | None = None,
    ) -> None:
        self.sessions = sessions
        self.starter = EnrollmentStarter(sessions, client, task_queue)
        self.batch = batch
        self.poll_interval = poll_interval
        self.holder = holder or f"dispatcher-{uuid.uuid4().hex[:12]}"
        self._index: TriggerIndex | None = None
        self._generation: tuple[object, ...] | None = None
        # Test hook: called between the steps of a change, to simulate a crash there.
        self.crash_point: Callable[[str, Change], None] = lambda point, change: None

    # ------------------------------------------------------------ the loop

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until `stop` is set. Failures are logged and retried with backoff."""
        backoff = self.poll_interval
        while not stop.is_set():
            try:
                if await asyncio.to_thread(self.acquire_lease):
                    done = await self.dispatch_pending()
                    backoff = self.poll_interval
                    if done:
                        continue
            except Exception:
                log.exception("dispatching changes failed; retrying in %.1fs", backoff)
                backoff = min(backoff * 2, 10.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=backoff)
        await asyncio.to_thread(self.release_lease)

    def acquire_lease(self) -> bool:
        now = datetime.now(UTC)
        with self.sessions.begin() as session:
            lease = session.get(Lease, LEASE, with_for_update=True)
            if lease is None:
                session.add(Lease(name=LEASE, holder=self.holder, expires_at=now + LEASE_TTL))
                return True
            if lease.holder == self.holder or lease.expires_at < now:
                lease.holder = self.holder
                lease.expires_at = now + LEASE_TTL
                return True
            return False

    def release_lease(self) -> None:
        with self.sessions.begin() as session:
            lease = session.get(Lease, LEASE, with_for_update=True)
            if lease is not None and lease.holder == self.holder:
                session.delete(lease)

    async def dispatch_pending(self) -> int:
        """Dispatch one batch of pending changes, in order. Returns how many were done."""
        with self.sessions() as session:
            rows = [as_change(r) for r in ChangeRepository(session).pending(limit=self.batch)]
        if not rows:
            return 0
        self.refresh_index()
        idle: list[int] = []
        for change in rows:
            try:
                acted = await self.dispatch(change)
            except Exception as exc:
                # Kept on the change (attempts, error) for whoever looks at a stuck feed; the
                # loop retries it, in order, after a backoff.
                await asyncio.to_thread(self._mark, idle)
                await asyncio.to_thread(
                    self._note_failure, change.id, f"{type(exc).__name__}: {exc}"
                )
                raise
            if acted:
                await asyncio.to_thread(self._mark, [*idle, change.id])
                idle = []
            else:
                idle.append(change.id)  # concerned no workflow: marked with the next write
        await asyncio.to_thread(self._mark, idle)
        return len(rows)

    def _note_failure(self, change_id: int, error: str) -> None:
        with self.sessions.begin() as session:
            ChangeRepository(session).mark_attempt(change_id, error)

    def _mark(self, ids: list[int]) -> None:
        if ids:
            with self.sessions.begin() as session:
                ChangeRepository(session).mark_dispatched(ids, now=datetime.now(UTC))

    def refresh_index(self) -> TriggerIndex:
        with self.sessions() as session:
            generation = WorkflowRepository(session).generation()
            if self._index is None or generation != self._generation:
                self._index = load_index(session)
                self._generation = generation
        return self._index

    # ------------------------------------------------------------ one change

    async def dispatch(self, change: Change) -> bool:
        """Act on one change. Returns False when it concerned no workflow (nothing done)."""
        index = self._index or self.refresh_index()
        enter = index.enter(change)
        leave_ids = index.leave(change)
        if not enter and not leave_ids and change.kind != DELETED:
            return False
        with self.sessions() as session:
            # One read of the record's enrollments answers: which this change already made (a
            # redo after a crash: they stand as decided and are finished below, idempotently),
            # which run now, and in which workflows the record was ever enrolled.
            of_record = EnrollmentRepository(session).of_record(
                change.object_type, change.record_id
            )
            redo = [e for e in of_record if e.trigger_change_id == change.id]
            redo_keys = {e.workflow_key for e in redo}
            active = [
                e
                for e in of_record
                if e.status in ACTIVE_STATUSES and e.workflow_key not in redo_keys
            ]
            # A deletion ends every enrollment of the record; other changes only those whose
            # exit rules read what changed.
            leave = [
                (trigger, ActiveEnrollment(e.id, e.workflow_key, e.version, e.temporal_workflow_id))
                for e in active
                if (change.kind == DELETED or (e.workflow_key, e.version) in leave_ids)
                and (trigger := index.trigger(e.workflow_key, e.version)) is not None
            ]
            enrolled_now = {e.workflow_key for e in active} | redo_keys
            redone = [
                t for e in redo if (t := index.trigger(e.workflow_key, e.version)) is not None
            ]
            enter = [t for t in enter if t.key not in enrolled_now]
            ever = frozenset(e.workflow_key for e in of_record)
            # Only the events some condition of these workflows reads.
            events: set[str] = set()
            for trigger in [*enter, *(t for t, _ in leave)]:
                events |= trigger.enter.events | trigger.leave.events
            snapshot = (
                None
                if change.kind == DELETED
                else load_snapshot(
                    session, change.object_type, change.record_id, event_names=events
                )
            )
        decisions = decide(
            change, snapshot, enter=enter, leave=leave, ever_enrolled=ever, now=datetime.now(UTC)
        )
        self.crash_point("decided", change)
        decisions = [*(Enroll(t.key, "redo") for t in redone), *decisions]
        triggers = {t.key: t for t in [*enter, *redone]}
        for decision in decisions:
            if isinstance(decision, Enroll):
                trigger = triggers[decision.key]
                await self.starter.start(
                    trigger.definition,
                    trigger.version,
                    change.record_id,
                    source="criteria",
                    trigger_change_id=change.id,
                    snapshot=snapshot,
                )
                self.crash_point("enrolled", change)
            elif decision.status == "goal_met":
                await self.starter.goal_met(
                    [decision.enrollment.temporal_workflow_id], decision.reason
                )
            else:
                await self.starter.unenroll(
                    [decision.enrollment.temporal_workflow_id], decision.reason
                )
        if change.kind == EVENT and snapshot is not None:
            await self._deliver_event(change, snapshot, leave, decisions)
        return True

    async def _deliver_event(
        self,
        change: Change,
        snapshot: RecordSnapshot,
        leave: list[tuple[Trigger, ActiveEnrollment]],
        decisions: list[Decision],
    ) -> None:
        """Hand a tracked event to the record's enrollments that may wait for it (they decide
        whether they wait for it now and whether `where` matches). Enrollments that leave on
        this change are not told: they end anyway."""
        left = {d.enrollment.id for d in decisions if isinstance(d, Leave)}
        waiting = [
            e.temporal_workflow_id
            for trigger, e in leave
            if change.event_name in trigger.waits and e.id not in left
        ]
        # The change's event is the last of its name in the snapshot (as in snapshot_before).
        found = [e for e in snapshot.events if e.name == change.event_name]
        if not waiting or not found:
            return
        event = found[-1]
        await self.starter.event_tracked(
            waiting,
            EventSignal(
                name=event.name,
                properties=dict(event.properties),
                occurred_at=event.occurred_at,
                event_id=change.event_id,
            ),
        )
