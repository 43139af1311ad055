"""The dispatcher: turns the change feed into enrollments and signals.

At least once, made idempotent: a change is marked dispatched only after everything it calls
for was done; a crash in between makes the next dispatcher redo it, and redoing creates nothing
twice (an enrollment is unique per workflow and trigger change, its workflow id is
deterministic and never reused; unenroll and goal signals to an ended run are ignored).
Changes are handled one at a time in feed order, so a record's changes keep their order; one
dispatcher runs at a time (a lease in the store, judged by the database's clock, whose token
every mark checks), however many workers run.

A change whose dispatch fails is not allowed to stop the feed: it is tried again after a delay
(RETRY_DELAYS), then parked for `crmflow changes retry`; meanwhile only the later changes of its
own record wait behind it. A failure while Temporal is unreachable is no fault of the change:
it is not counted, and the whole feed waits (backoff) instead.
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
from crmflow.definitions import ACTIVE_STATUSES
from crmflow.enrolling import EnrollmentStarter
from crmflow.rules import (
    DELETED,
    EVENT,
    TIME,
    ActiveEnrollment,
    Change,
    Decision,
    Enroll,
    Leave,
    Trigger,
    decide,
)
from crmflow.store import (
    BrokenVersion,
    ChangeRepository,
    EnrollmentRepository,
    Failure,
    Fence,
    LeaseRepository,
    RecordChange,
    WorkflowRepository,
    database_now,
    load_snapshot,
    stored_definition,
)

from ._index import TriggerIndex
from ._reconcile import Reconciler

log = logging.getLogger(__name__)

LEASE = "dispatcher"
LEASE_TTL = timedelta(seconds=15)
# Waits between the attempts of a change whose dispatch fails; once they are used up (the 5th
# failed attempt) the change is parked.
RETRY_DELAYS = (
    timedelta(seconds=5),
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
)
# How often the lease holder looks for enrollments whose Temporal run is gone.
RECONCILE_EVERY = 60.0
HEALTH_CHECK_TIMEOUT = 5.0


class LeaseLost(Exception):
    """Another dispatcher took the lease over: this one marks nothing more."""


class TemporalUnreachable(Exception):
    """A dispatch failed while Temporal did not answer: retried, never counted."""


def as_change(row: RecordChange) -> Change:
    return Change(
        id=row.id,
        object_type=row.object_type,
        record_id=row.record_id,
        kind=row.kind,
        properties=tuple(row.properties),
        before=dict(row.before) if row.kind != TIME else {},
        list_name=row.list_name,
        event_name=row.event_name,
        event_id=row.event_id,
        workflow_key=row.workflow_key,
        at=row.occurred_at if row.kind == TIME else None,
        events=tuple(row.before.get("events", ())) if row.kind == TIME else (),
    )


def load_index(session: Session) -> TriggerIndex:
    """Triggers of the latest version of each workflow, and of every older version that still
    has running enrollments (their exit rules are their own version's). A version whose stored
    definition no longer loads is left out (logged): it stops nothing else."""
    workflows = WorkflowRepository(session)
    latest = {w.key: w for w, _ in workflows.all()}
    wanted = {(w.key, w.latest_version) for w in latest.values()}
    wanted |= EnrollmentRepository(session).active_versions()
    triggers = []
    for key, version in sorted(wanted):
        workflow = latest[key]
        try:
            definition = stored_definition(workflows.version(key, version))
        except BrokenVersion as exc:
            log.error("dispatcher: %s: its changes are not dispatched to it", exc)
            continue
        triggers.append(
            Trigger.of(
                definition,
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
        retry_delays: tuple[timedelta, ...] = RETRY_DELAYS,
        reconcile_every: float = RECONCILE_EVERY,
        starter: EnrollmentStarter | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """`starter`: the process's one starter, built by the wiring code (a dispatcher made
        alone, as in tests, builds its own). `clock`: the time conditions are judged at
        (simulate passes the simulated one)."""
        self.sessions = sessions
        self.starter = starter or EnrollmentStarter(sessions, client, task_queue, clock=clock)
        self.reconciler = Reconciler(sessions, client)
        self.batch = batch
        self.poll_interval = poll_interval
        self.holder = holder or f"dispatcher-{uuid.uuid4().hex[:12]}"
        self.retry_delays = retry_delays
        self.reconcile_every = reconcile_every
        self.clock = clock
        self.fence: Fence | None = None
        self._index: TriggerIndex | None = None
        self._generation: tuple[object, ...] | None = None
        # Test hook: called between the steps of a change, to simulate a crash there.
        self.crash_point: Callable[[str, Change], None] = lambda point, change: None

    # ------------------------------------------------------------ the loop

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until `stop` is set, reconciling now and then. Failures of the whole loop
        (store or Temporal unreachable, lease lost) are logged and retried with backoff."""
        backoff = self.poll_interval
        reconciled = -self.reconcile_every
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                done = await self.dispatch_pending()
                backoff = self.poll_interval
                if self.fence is not None and loop.time() - reconciled >= self.reconcile_every:
                    reconciled = loop.time()
                    await self.reconcile()
                if done:
                    continue
            except (LeaseLost, TemporalUnreachable) as exc:
                log.warning("%s; dispatching again in %.1fs", exc, backoff)
                backoff = min(backoff * 2, 10.0)
            except Exception:
                log.exception("dispatching changes failed; retrying in %.1fs", backoff)
                backoff = min(backoff * 2, 10.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=backoff)
        await asyncio.to_thread(self.release_lease)

    def acquire_lease(self) -> bool:
        """Take or renew the dispatcher lease (the database's clock decides expiry)."""
        with self.sessions.begin() as session:
            self.fence = LeaseRepository(session).acquire(LEASE, self.holder, LEASE_TTL)
        return self.fence is not None

    def release_lease(self) -> None:
        if self.fence is not None:
            with self.sessions.begin() as session:
                LeaseRepository(session).release(self.fence)
            self.fence = None

    async def dispatch_pending(self) -> int:
        """Take (or renew) the lease, then dispatch one batch of due changes, in order.
        Returns how many were handled (dispatched, or failed and rescheduled or parked)."""
        if not await asyncio.to_thread(self.acquire_lease):
            return 0
        assert self.fence is not None
        with self.sessions() as session:
            # Due as of the database's time, read with the lease a moment ago.
            due = ChangeRepository(session).pending(limit=self.batch, now=self.fence.at)
            rows = [as_change(r) for r in due]
        if not rows:
            return 0
        self.refresh_index()
        idle: list[int] = []
        failed: set[tuple[str, str]] = set()  # records whose change failed in this batch
        for change in rows:
            if (change.object_type, change.record_id) in failed:
                continue  # its record's earlier change failed: it waits behind it
            try:
                acted = await self.dispatch(change)
            except Exception as exc:
                failed.add((change.object_type, change.record_id))
                await asyncio.to_thread(self._mark, idle)
                idle = []
                await self._failed(change, exc)
                continue
            if acted:
                await asyncio.to_thread(self._mark, [*idle, change.id])
                idle = []
            else:
                idle.append(change.id)  # concerned no workflow: marked with the next write
        await asyncio.to_thread(self._mark, idle)
        return len(rows)

    async def _failed(self, change: Change, exc: Exception) -> None:
        """Count a failed dispatch against the change (retried later, or parked), unless
        Temporal is unreachable: then the whole feed waits, and nothing is counted."""
        error = f"{type(exc).__name__}: {exc}"
        if not await self._temporal_answers():
            await asyncio.to_thread(self._note_error, change.id, error)
            raise TemporalUnreachable(f"Temporal does not answer ({error})") from exc
        failure = await asyncio.to_thread(self._record_failure, change.id, error)
        what = f"change {change.id} ({change.kind} {change.object_type} {change.record_id})"
        if failure.parked:
            log.error(
                "%s parked after %d failed attempts (`crmflow changes retry %d`): %s",
                what,
                failure.attempts,
                change.id,
                error,
            )
        else:
            log.warning("%s failed (attempt %d), retried later: %s", what, failure.attempts, error)

    async def _temporal_answers(self) -> bool:
        try:
            return bool(
                await asyncio.wait_for(
                    self.starter.client.service_client.check_health(),
                    timeout=HEALTH_CHECK_TIMEOUT,
                )
            )
        except Exception:
            return False

    def _note_error(self, change_id: int, error: str) -> None:
        assert self.fence is not None
        with self.sessions.begin() as session:
            if not ChangeRepository(session).note_error(change_id, error, fence=self.fence):
                raise LeaseLost(f"{self.holder} lost the dispatcher lease")

    def _record_failure(self, change_id: int, error: str) -> Failure:
        assert self.fence is not None
        with self.sessions.begin() as session:
            failure = ChangeRepository(session).record_failure(
                change_id,
                error,
                now=database_now(session),
                fence=self.fence,
                delays=self.retry_delays,
            )
        if failure is None:
            raise LeaseLost(f"{self.holder} lost the dispatcher lease")
        return failure

    def _mark(self, ids: list[int]) -> None:
        if not ids:
            return
        assert self.fence is not None
        with self.sessions.begin() as session:
            # dispatched_at is for people: the worker's clock will do (no comparison reads it).
            marked = ChangeRepository(session).mark_dispatched(
                ids, now=datetime.now(UTC), fence=self.fence
            )
        if not marked:
            # Another dispatcher took over (this one was paused past its lease): it redoes
            # these changes; this one stops here.
            raise LeaseLost(f"{self.holder} lost the dispatcher lease")

    def refresh_index(self) -> TriggerIndex:
        with self.sessions() as session:
            generation = WorkflowRepository(session).generation()
            if self._index is None or generation != self._generation:
                self._index = load_index(session)
                self._generation = generation
        return self._index

    async def reconcile(self) -> int:
        """Mark the store's running enrollments whose Temporal run is gone; see Reconciler."""
        return await self.reconciler.run_once()

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
            waiting = self._waiting(session, change, leave)
            snapshot = (
                None
                if change.kind == DELETED
                else load_snapshot(
                    session, change.object_type, change.record_id, event_names=events
                )
            )
        decisions = decide(
            change, snapshot, enter=enter, leave=leave, ever_enrolled=ever, now=self.clock()
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
            await self._deliver_event(change, snapshot, waiting, decisions)
        return True

    @staticmethod
    def _waiting(
        session: Session, change: Change, leave: list[tuple[Trigger, ActiveEnrollment]]
    ) -> list[ActiveEnrollment]:
        """The record's enrollments waiting now (a wait_for_event step in progress, as the
        store shows it) for the event this change tracked. Only they are signalled: signals to
        the others would only grow their histories."""
        if change.kind != EVENT:
            return []
        candidates = [(t, e) for t, e in leave if change.event_name in t.waits]
        if not candidates:
            return []
        steps = EnrollmentRepository(session).waiting_steps([e.id for _, e in candidates])
        return [
            e
            for t, e in candidates
            if any(t.wait_actions.get(a) == change.event_name for a in steps.get(e.id, ()))
        ]

    async def _deliver_event(
        self,
        change: Change,
        snapshot: RecordSnapshot,
        waiting: list[ActiveEnrollment],
        decisions: list[Decision],
    ) -> None:
        """Hand a tracked event to the record's enrollments that wait for it now (they decide
        whether `where` matches). Enrollments that leave on this change are not told: they end
        anyway."""
        left = {d.enrollment.id for d in decisions if isinstance(d, Leave)}
        targets = [e.temporal_workflow_id for e in waiting if e.id not in left]
        # The change's event is the last of its name in the snapshot (as in snapshot_before).
        found = [e for e in snapshot.events if e.name == change.event_name]
        if not targets or not found:
            return
        event = found[-1]
        await self.starter.event_tracked(
            targets,
            EventSignal(
                name=event.name,
                properties=dict(event.properties),
                occurred_at=event.occurred_at,
                event_id=change.event_id,
            ),
        )
