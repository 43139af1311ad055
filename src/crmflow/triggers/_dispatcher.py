"""The dispatcher: turns the change feed into enrollments and signals.

At least once, made idempotent: a change is marked dispatched only after everything it calls
for was done; a crash in between makes the next dispatcher redo it, and redoing creates nothing
twice (an enrollment is unique per workflow and trigger change, its workflow id is
deterministic and never reused; unenroll and goal signals to an ended run are ignored).
Changes are handled in batches, in feed order, a record's changes in order (a batch never
takes a change of a record an earlier batch in flight still holds); one dispatcher runs a
partition of the feed at a time (a lease in the store, judged by the database's clock, whose
token every mark checks), however many workers run.

A change whose dispatch fails is not allowed to stop the feed: it is tried again after a delay
(RETRY_DELAYS), then parked for `crmflow changes retry`; meanwhile only the later changes of its
own record wait behind it. A failure while Temporal is unreachable is no fault of the change:
it is not counted, and the whole feed waits (backoff) instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
import uuid
from asyncio import FIRST_COMPLETED
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import cast

from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client

from crmflow.activities.models import EventSignal
from crmflow.conditions import RecordSnapshot
from crmflow.definitions import ACTIVE_STATUSES
from crmflow.enrolling import EnrollmentStarter, EnrollOutcome, Prepared, Triggered
from crmflow.rules import (
    DELETED,
    EVENT,
    TIME,
    ActiveEnrollment,
    Change,
    Enroll,
    Leave,
    Trigger,
    decide,
)
from crmflow.store import (
    BULK,
    INTERACTIVE,
    BrokenVersion,
    ChangeRepository,
    Enrollment,
    EnrollmentRepository,
    Failure,
    Fence,
    LeaseRepository,
    RecordChange,
    WorkflowRepository,
    database_now,
    load_snapshots,
    reading_sessions,
    stored_definition,
)

from ._index import TriggerIndex
from ._reconcile import Reconciler

log = logging.getLogger(__name__)

LEASE = "dispatcher"
LEASE_TTL = timedelta(seconds=15)
# A held lease is renewed in the store at most this often (a third of its life).
RENEW_EVERY = timedelta(seconds=5)
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
# How many Temporal calls (starts, signals) one batch has in flight at once.
START_CONCURRENCY = 16
# How many batches one dispatch loop has in flight at once (see `Dispatcher._run_lane`).
PIPELINE = 2
# The longest a loop that finds nothing to do waits before it looks again (see `_run_lane`).
IDLE_POLL = 0.5
# How often a loop whose due changes are all held by a batch in flight looks again (for changes
# that came due meanwhile) until that batch ends: the single writes' lane every BUSY_POLL; the
# bulk writes' lane less and less often, down to once every BULK_BUSY_POLL (an import's last
# batch can take tens of seconds, and a poll that skips its changes reads them all again;
# another import waits at most that long behind it).
BUSY_POLL = 0.5
BULK_BUSY_POLL = 5.0


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
        batch: int = 500,
        poll_interval: float = 0.1,
        holder: str | None = None,
        retry_delays: tuple[timedelta, ...] = RETRY_DELAYS,
        reconcile_every: float = RECONCILE_EVERY,
        starter: EnrollmentStarter | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        partition: tuple[int, int] = (0, 1),
    ) -> None:
        """`starter`: the process's one starter, built by the wiring code (a dispatcher made
        alone, as in tests, builds its own). `clock`: the time conditions are judged at
        (simulate passes the simulated one). `partition`: (its number, how many): it
        dispatches the changes of the records in that partition only, under its own lease
        (`DispatchPool` spreads the partitions over the workers)."""
        number, partitions = partition
        if not 0 <= number < partitions:
            raise ValueError(f"partition {number} of {partitions}: out of range")
        self.partition = partition
        self.lease = LEASE if partitions == 1 else f"{LEASE}-{number}-of-{partitions}"
        self.sessions = sessions
        self.reads = reading_sessions(sessions)
        self.starter = starter or EnrollmentStarter(sessions, client, task_queue, clock=clock)
        self.reconciler = Reconciler(sessions, client)
        self.batch = batch
        self.poll_interval = poll_interval
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.retry_delays = retry_delays
        self.reconcile_every = reconcile_every
        self.clock = clock
        self.fence: Fence | None = None
        self._renewed = -math.inf  # time.monotonic() of the last renewal in the store
        self._index: TriggerIndex | None = None
        self._generation: tuple[object, ...] | None = None
        # Test hook: called between the steps of a change, to simulate a crash there.
        self.crash_point: Callable[[str, Change], None] = lambda point, change: None

    # ------------------------------------------------------------ the loop

    async def run(
        self, stop: asyncio.Event, *, while_held: bool = False, reconcile: bool = True
    ) -> None:
        """Dispatch until `stop` is set, in two loops at once: one for the changes of single
        writes, one for those of bulk writes (an import's batches then never delay a
        suppression-list join). Reconciles now and then (unless `reconcile` is False: one
        dispatcher of a pool does it). Failures of a loop (store or Temporal unreachable, lease
        lost) are logged and retried with backoff. `while_held`: return as soon as the lease is
        held by another (the pool gives the partition up)."""
        done = asyncio.Event()  # one loop ended: the other ends too

        async def loop(lane: str, reconciling: bool) -> None:
            try:
                await self._run_lane(
                    stop, done, lane=lane, while_held=while_held, reconcile=reconciling
                )
            finally:
                done.set()

        await asyncio.gather(loop(INTERACTIVE, reconcile), loop(BULK, False))
        await asyncio.to_thread(self.release_lease)

    async def _run_lane(
        self,
        stop: asyncio.Event,
        done: asyncio.Event,
        *,
        lane: str,
        while_held: bool,
        reconcile: bool,
    ) -> None:
        """One lane's loop. Up to PIPELINE batches are in flight at once, on one budget of
        START_CONCURRENCY Temporal calls: the next batch is read, decided and written while the
        current one's last starts finish, so the calls never wait for a batch's store work nor
        for its slowest start. A batch never takes a change of a record that a batch in flight
        holds: each record's changes still go one batch after the other, in order. A lane that
        finds nothing to do looks again after poll_interval, then less and less often, down to
        once every IDLE_POLL (a quiet worker then costs the store a few reads a second); one
        whose due changes are all held by its batches in flight looks again when one ends, or
        after BUSY_POLL (the bulk lane: then less and less often, down to BULK_BUSY_POLL)."""
        backoff = self.poll_interval
        idle = self.poll_interval
        busy = first_busy = max(self.poll_interval, BUSY_POLL)
        most_busy = max(first_busy, BULK_BUSY_POLL) if lane == BULK else first_busy
        reconciled = -self.reconcile_every
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(START_CONCURRENCY)
        batches: dict[asyncio.Task[int], list[Change]] = {}  # in flight -> their changes
        try:
            while not stop.is_set() and not done.is_set():
                try:
                    for batch in [b for b in batches if b.done()]:
                        del batches[batch]
                        batch.result()  # its failure (lease lost, Temporal gone...) is the loop's
                    taken = None
                    if len(batches) < PIPELINE:
                        taken = await self._take(lane, [c for b in batches.values() for c in b])
                        backoff = self.poll_interval
                    if while_held and self.fence is None and not batches:
                        return
                    if (
                        reconcile
                        and self.fence is not None
                        and loop.time() - reconciled >= self.reconcile_every
                    ):
                        reconciled = loop.time()
                        await self.reconcile()
                    if taken is not None and taken[0]:
                        rows, index = taken
                        batch = asyncio.create_task(self._dispatch(rows, index, gate))
                        batches[batch] = rows
                        idle, busy = self.poll_interval, first_busy
                        continue
                    if batches:
                        # Every due change is held: until a batch ends, or `busy`.
                        await asyncio.wait(batches, timeout=busy, return_when=FIRST_COMPLETED)
                        busy = min(busy * 2, most_busy)
                        continue
                    pause, idle = idle, min(idle * 2, max(self.poll_interval, IDLE_POLL))
                except LeaseLost as exc:
                    if while_held:
                        log.info("%s", exc)
                        self.fence = None
                        return
                    log.warning("%s; dispatching again in %.1fs", exc, backoff)
                    pause, backoff = backoff, min(backoff * 2, 10.0)
                except TemporalUnreachable as exc:
                    log.warning("%s; dispatching again in %.1fs", exc, backoff)
                    pause, backoff = backoff, min(backoff * 2, 10.0)
                except Exception:
                    log.exception("dispatching changes failed; retrying in %.1fs", backoff)
                    pause, backoff = backoff, min(backoff * 2, 10.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=pause)
        finally:
            # The batches in flight end as they would have: marked, or left for a redo.
            for result in await asyncio.gather(*batches, return_exceptions=True):
                if isinstance(result, Exception) and not isinstance(result, LeaseLost):
                    log.warning("a batch ended with %s: %s", type(result).__name__, result)

    def acquire_lease(self) -> bool:
        """Take or renew the dispatcher lease (the database's clock decides expiry). A lease
        renewed less than RENEW_EVERY ago is not renewed again (an idle loop polling the feed
        ten times a second would otherwise write as often, which SQLite serialises with the
        other partitions' writes): its fence's time is moved on by the time elapsed here."""
        held, renewed = self.fence, self._renewed
        elapsed = time.monotonic() - renewed
        if held is not None and elapsed < RENEW_EVERY.total_seconds():
            self.fence = replace(held, at=held.at + timedelta(seconds=elapsed))
            return True
        with self.sessions.begin() as session:
            self.fence = LeaseRepository(session).acquire(self.lease, self.holder, LEASE_TTL)
        self._renewed = time.monotonic()
        return self.fence is not None

    def _lost(self) -> LeaseLost:
        """The lease went to another holder: forget it (the next batch asks the store)."""
        self.fence, self._renewed = None, -math.inf
        return LeaseLost(f"{self.holder} lost the dispatcher lease {self.lease}")

    def release_lease(self) -> None:
        self._renewed = -math.inf
        if self.fence is not None:
            with self.sessions.begin() as session:
                LeaseRepository(session).release(self.fence)
            self.fence = None

    async def dispatch_pending(self, *, lane: str | None = None) -> int:
        """Take (or renew) the lease, then dispatch one batch of due changes: the batch's store
        reads and its enrollment rows in a few statements, its Temporal calls concurrently
        (START_CONCURRENCY records at a time), each record's changes in order. Returns how many
        were handled (dispatched, or failed and rescheduled or parked). `lane`: see
        `ChangeRepository.pending` (None: both, single writes' first)."""
        taken = await self._take(lane, [])
        if taken is None or not taken[0]:
            return 0
        return await self._dispatch(*taken, asyncio.Semaphore(START_CONCURRENCY))

    async def _take(
        self, lane: str | None, held: list[Change]
    ) -> tuple[list[Change], TriggerIndex] | None:
        """Take (or renew) the lease and read the next batch: up to `batch` due changes, none
        of a record whose changes in `held` a batch in flight holds (they are not marked yet:
        the read leaves them out). None: the lease is another's."""
        if not await asyncio.to_thread(self.acquire_lease):
            return None
        rows, index = await asyncio.to_thread(self._due, lane, [c.id for c in held])
        busy = {(c.object_type, c.record_id) for c in held}
        return [c for c in rows if (c.object_type, c.record_id) not in busy], index

    async def _dispatch(
        self, rows: list[Change], index: TriggerIndex, gate: asyncio.Semaphore
    ) -> int:
        """Dispatch a batch of changes (see `dispatch_pending`), its Temporal calls within
        `gate`. Returns how many were handled."""
        remaining: dict[RecordKey, list[Change]] = {}
        for change in rows:
            remaining.setdefault((change.object_type, change.record_id), []).append(change)
        facts = await asyncio.to_thread(self._read, index, rows)
        done: list[int] = []
        failures: list[tuple[Change, Exception]] = []
        # Rounds: each takes every record's changes up to the first that enrolls it; the next
        # round decides the later ones knowing that enrollment (usually none are left).
        while remaining:
            plans: list[Plan] = []
            later: dict[RecordKey, list[Change]] = {}
            for key, changes in remaining.items():
                decided, rest, failure = self._decide_record(index, changes, facts)
                plans += decided
                if failure is not None:
                    failures.append(failure)
                elif rest:
                    later[key] = rest
            prepared, unprepared = await asyncio.to_thread(self._prepare, plans)
            failures += unprepared
            stopped = {(c.object_type, c.record_id) for c, _ in unprepared}
            grouped: dict[RecordKey, list[Plan]] = {}
            for plan in plans:
                key = (plan.change.object_type, plan.change.record_id)
                if key not in stopped:
                    grouped.setdefault(key, []).append(plan)
            for key, (ids, failure) in zip(
                grouped, await self._act_all(list(grouped.values()), prepared, gate), strict=True
            ):
                done += ids
                if failure is not None:
                    failures.append(failure)
                    stopped.add(key)
            for p in prepared.values():
                if isinstance(p, Prepared) and not p.redo:
                    ctx = p.ready.input.context
                    facts.enrollments.setdefault((ctx.object_type, ctx.record_id), []).append(
                        Known.started(p)
                    )
            remaining = {key: rest for key, rest in later.items() if key not in stopped}
        await asyncio.to_thread(self._mark, done)
        for change, exc in sorted(failures, key=lambda f: f[0].id):
            await self._failed(change, exc)
        return len(done) + len(failures)

    def _due(self, lane: str | None, skip: list[int]) -> tuple[list[Change], TriggerIndex]:
        """The next batch of due changes (as of the database's time, read with the lease a
        moment ago) and the triggers they are judged by. In a read-only session, off the event
        loop: the batch's Temporal calls in flight go on meanwhile."""
        assert self.fence is not None
        with self.reads() as session:
            due = ChangeRepository(session).pending(
                limit=self.batch,
                now=self.fence.at,
                partition=self.partition,
                lane=lane,
                skip=skip,
            )
            rows = [as_change(r) for r in due]
        return rows, self.refresh_index() if rows else TriggerIndex([])

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
                raise self._lost()

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
            raise self._lost()
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
            raise self._lost()

    def refresh_index(self) -> TriggerIndex:
        with self.reads() as session:
            generation = WorkflowRepository(session).generation()
            if self._index is None or generation != self._generation:
                self._index = load_index(session)
                self._generation = generation
        return self._index

    async def reconcile(self) -> int:
        """Mark the store's running enrollments whose Temporal run is gone; see Reconciler."""
        return await self.reconciler.run_once()

    # ------------------------------------------------------------ a batch's parts

    def _read(self, index: TriggerIndex, changes: list[Change]) -> Facts:
        """What deciding the batch's changes needs from the store, in a few queries whatever
        the batch's size: the enrollments of the records some workflow may care about, the
        records (with the events those workflows read), and the wait steps in progress of
        the enrollments an event may reach."""
        concerned: dict[str, set[str]] = {}
        events: set[str] = set()
        event_records: set[RecordKey] = set()
        for change in changes:
            enter, leave = index.enter(change), index.leave(change)
            if not enter and not leave and change.kind != DELETED:
                continue
            concerned.setdefault(change.object_type, set()).add(change.record_id)
            # Every version's reads: a record may be enrolled in any of them.
            for trigger in [*enter, *index.triggers_of(leave)]:
                events |= trigger.enter.events | trigger.leave.events
            if change.kind == EVENT:
                event_records.add((change.object_type, change.record_id))
        facts = Facts()
        if not concerned:
            return facts
        with self.reads() as session:
            enrollments = EnrollmentRepository(session)
            for object_type, ids in concerned.items():
                ordered = sorted(ids)
                for record_id, rows in enrollments.of_records(object_type, ordered).items():
                    facts.enrollments[(object_type, record_id)] = [Known.of(e) for e in rows]
                for record_id, snapshot in load_snapshots(
                    session, object_type, ordered, event_names=events
                ).items():
                    facts.snapshots[(object_type, record_id)] = snapshot
            candidates = [
                e.id
                for key in event_records
                for e in facts.enrollments.get(key, ())
                if e.status in ACTIVE_STATUSES
            ]
            facts.waiting = enrollments.waiting_steps(candidates)
        return facts

    def _decide_record(
        self, index: TriggerIndex, changes: list[Change], facts: Facts
    ) -> tuple[list[Plan], list[Change], tuple[Change, Exception] | None]:
        """Decide a record's changes, in order, up to the first that enrolls it (the later
        ones must see that enrollment: they are returned, for the next round) or fails (the
        later ones wait behind it)."""
        plans: list[Plan] = []
        for n, change in enumerate(changes):
            try:
                plan = self._decide(index, change, facts)
                self.crash_point("decided", change)
            except Exception as exc:
                return plans, [], (change, exc)
            plans.append(plan)
            if plan.enroll:
                return plans, changes[n + 1 :], None
        return plans, [], None

    def _decide(self, index: TriggerIndex, change: Change, facts: Facts) -> Plan:
        """What one change calls for (nothing, when it concerns no workflow)."""
        enter = index.enter(change)
        leave_ids = index.leave(change)
        if not enter and not leave_ids and change.kind != DELETED:
            return Plan(change)
        record = (change.object_type, change.record_id)
        # The record's enrollments answer: which this change already made (a redo after a
        # crash: they stand as decided and are finished below, idempotently), which run now,
        # and in which workflows the record was ever enrolled.
        of_record = facts.enrollments.get(record, [])
        redo = [e for e in of_record if e.trigger_change_id == change.id]
        redo_keys = {e.workflow_key for e in redo}
        active = [
            e for e in of_record if e.status in ACTIVE_STATUSES and e.workflow_key not in redo_keys
        ]
        # A deletion ends every enrollment of the record; other changes only those whose exit
        # rules read what changed.
        leave = [
            (trigger, ActiveEnrollment(e.id, e.workflow_key, e.version, e.temporal_workflow_id))
            for e in active
            if (change.kind == DELETED or (e.workflow_key, e.version) in leave_ids)
            and (trigger := index.trigger(e.workflow_key, e.version)) is not None
        ]
        enrolled_now = {e.workflow_key for e in active} | redo_keys
        redone = [t for e in redo if (t := index.trigger(e.workflow_key, e.version)) is not None]
        enter = [t for t in enter if t.key not in enrolled_now]
        ever = frozenset(e.workflow_key for e in of_record)
        snapshot = None if change.kind == DELETED else facts.snapshots.get(record)
        decisions = decide(
            change, snapshot, enter=enter, leave=leave, ever_enrolled=ever, now=self.clock()
        )
        triggers = {t.key: t for t in [*enter, *redone]}
        enroll = [
            triggers[key]
            for key in [
                *(t.key for t in redone),
                *(d.key for d in decisions if isinstance(d, Enroll)),
            ]
        ]
        stops = [d for d in decisions if isinstance(d, Leave)]
        plan = Plan(change, snapshot, enroll, stops)
        if change.kind == EVENT and snapshot is not None:
            plan.event = self._event(change, snapshot, leave, facts.waiting, stops)
        return plan

    @staticmethod
    def _event(
        change: Change,
        snapshot: RecordSnapshot,
        leave: list[tuple[Trigger, ActiveEnrollment]],
        waiting: dict[int, set[str]],
        stops: list[Leave],
    ) -> tuple[list[str], EventSignal] | None:
        """A tracked event goes to the record's enrollments waiting now for it (a
        wait_for_event step in progress, as the store shows it; they decide whether `where`
        matches), except those that leave on this change: they end anyway. Signals to the
        others would only grow their histories."""
        left = {d.enrollment.id for d in stops}
        targets = [
            e.temporal_workflow_id
            for t, e in leave
            if change.event_name in t.waits
            and e.id not in left
            and any(t.wait_actions.get(a) == change.event_name for a in waiting.get(e.id, ()))
        ]
        # The change's event is the last of its name in the snapshot (as in snapshot_before).
        found = [e for e in snapshot.events if e.name == change.event_name]
        if not targets or not found:
            return None
        event = found[-1]
        return targets, EventSignal(
            name=event.name,
            properties=dict(event.properties),
            occurred_at=event.occurred_at,
            event_id=change.event_id,
        )

    def _prepare(
        self, plans: list[Plan]
    ) -> tuple[dict[tuple[int, str], Prepared | EnrollOutcome], list[tuple[Change, Exception]]]:
        """The enrollment rows the batch calls for, in one transaction. Should it fail, each
        record's are written on their own, so that one bad record fails only its change."""
        items = [
            (
                plan.change,
                Triggered(
                    trigger.definition,
                    trigger.version,
                    plan.change.record_id,
                    plan.change.id,
                    plan.snapshot,
                ),
            )
            for plan in plans
            for trigger in plan.enroll
        ]
        if not items:
            return {}, []
        try:
            prepared = self.starter.prepare_triggered([item for _, item in items])
            return {
                (change.id, item.definition.key): p
                for (change, item), p in zip(items, prepared, strict=True)
            }, []
        except Exception:
            log.warning("writing a batch's enrollments failed; writing them change by change")
        found: dict[tuple[int, str], Prepared | EnrollOutcome] = {}
        failed: list[tuple[Change, Exception]] = []
        for change in dict.fromkeys(change for change, _ in items):
            mine = [item for c, item in items if c is change]
            try:
                for item, p in zip(mine, self.starter.prepare_triggered(mine), strict=True):
                    found[(change.id, item.definition.key)] = p
            except Exception as exc:
                failed.append((change, exc))
        return found, failed

    async def _act_all(
        self,
        records: list[list[Plan]],
        prepared: dict[tuple[int, str], Prepared | EnrollOutcome],
        gate: asyncio.Semaphore,
    ) -> list[tuple[list[int], tuple[Change, Exception] | None]]:
        """`_act` for each record's plans, as many records at a time as `gate` lets."""

        async def act(plans: list[Plan]) -> tuple[list[int], tuple[Change, Exception] | None]:
            async with gate:
                return await self._act(plans, prepared)

        results = await asyncio.gather(*(act(p) for p in records), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result  # a bug or a cancellation, not a change's failure: nothing marked
        return cast(list[tuple[list[int], tuple[Change, Exception] | None]], results)

    async def _act(
        self, plans: list[Plan], prepared: dict[tuple[int, str], Prepared | EnrollOutcome]
    ) -> tuple[list[int], tuple[Change, Exception] | None]:
        """A record's Temporal calls, its changes in order: start the enrollments, send the
        stops and the event. Returns the changes done, and the first that failed (the later
        ones wait behind it)."""
        done: list[int] = []
        for plan in plans:
            change = plan.change
            try:
                for trigger in plan.enroll:
                    ready = prepared[(change.id, trigger.key)]
                    if isinstance(ready, Prepared):
                        await self.starter.launch(
                            ready.ready, redo=ready.redo, retried_by_caller=True
                        )
                    self.crash_point("enrolled", change)
                for stop in plan.stops:
                    ids = [stop.enrollment.temporal_workflow_id]
                    if stop.status == "goal_met":
                        await self.starter.goal_met(ids, stop.reason)
                    else:
                        await self.starter.unenroll(ids, stop.reason)
                if plan.event is not None:
                    await self.starter.event_tracked(*plan.event)
            except Exception as exc:
                return done, (change, exc)
            done.append(change.id)
        return done, None


RecordKey = tuple[str, str]  # object type, record id


@dataclass(frozen=True, slots=True)
class Known:
    """An enrollment of a record, as a batch's read found it."""

    id: int
    workflow_key: str
    version: int
    status: str
    temporal_workflow_id: str
    trigger_change_id: int | None

    @classmethod
    def started(cls, p: Prepared) -> Known:
        ctx = p.ready.input.context
        return cls(
            ctx.enrollment_id,
            ctx.workflow_key,
            ctx.version,
            "running",
            p.ready.temporal_workflow_id,
            None,
        )

    @classmethod
    def of(cls, e: Enrollment) -> Known:
        return cls(
            e.id, e.workflow_key, e.version, e.status, e.temporal_workflow_id, e.trigger_change_id
        )


@dataclass
class Facts:
    """What a batch's read found (see `Dispatcher._read`)."""

    enrollments: dict[RecordKey, list[Known]] = field(default_factory=dict)
    snapshots: dict[RecordKey, RecordSnapshot] = field(default_factory=dict)
    waiting: dict[int, set[str]] = field(default_factory=dict)  # enrollment id -> action ids


@dataclass
class Plan:
    """What one change calls for, decided: the workflows to enroll its record in (redone ones
    first), the enrollments to stop, the event to hand to the enrollments waiting for it."""

    change: Change
    snapshot: RecordSnapshot | None = None
    enroll: list[Trigger] = field(default_factory=list)
    stops: list[Leave] = field(default_factory=list)
    event: tuple[list[str], EventSignal] | None = None
