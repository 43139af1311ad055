"""Starting enrollments and signalling them: shared by manual enrollment (the CLI) and automatic
enrollment (the dispatcher).

An enrollment row is committed before its Temporal run is started, so a signal can find the row
and no run yet (a scheduled run's fan-out between writing a page and starting it, or a dispatcher
that died in between). A stop (unenroll, goal met) must not be lost there: it is sent with
signal-with-start, which starts the missing run with the stop already queued (the run then ends
before its first action), and never starts a run again once it closed (REJECT_DUPLICATE). Every
start of an enrollment uses REJECT_DUPLICATE too, so a run a stop started is never followed by a
second one; each run carries its row's identity in a memo, which tells a run of this enrollment
from one of another store that used the same workflow id (a database reset under one Temporal).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from crmflow.activities.models import (
    GENERATION,
    EnrollmentContext,
    EnrollmentInput,
    EventSignal,
    GoalMetSignal,
    UnenrollSignal,
)
from crmflow.activities.ports import EnrollOutcome, Outcome
from crmflow.conditions import RecordSnapshot
from crmflow.definitions import ACTIVE_STATUSES, ENDED_STATUSES, WorkflowDefinition, condition_reads
from crmflow.rules import refusal
from crmflow.store import (
    AlreadyEnrolled,
    Enrollment,
    EnrollmentRepository,
    NewEnrollment,
    WorkflowRepository,
    load_snapshot,
    load_snapshots,
)
from crmflow.worker import EnrollmentWorkflow
from crmflow.worker import search_attributes as sa

from ._fanout import enroll_selected
from ._ready import Ready

SIGNAL_CONCURRENCY = 50
# The memo entry naming the enrollment row a run belongs to.
IDENTITY = "crmflow.enrollment"

# Signals, by the names the enrollment workflow declares.
UNENROLL = EnrollmentWorkflow.unenroll.__name__
GOAL_MET = EnrollmentWorkflow.goal_met.__name__
EVENT_TRACKED = EnrollmentWorkflow.event_tracked.__name__
PAUSE = EnrollmentWorkflow.pause.__name__
RESUME = EnrollmentWorkflow.resume.__name__


class SignalFailed(Exception):
    """Temporal refused signals for another reason than the run being over (only "not found /
    already completed" is ignored). The others, if any, were delivered."""

    def __init__(self, signal: str, failures: dict[str, Exception]) -> None:
        workflow_id, first = next(iter(failures.items()))
        detail = first.message if isinstance(first, RPCError) else str(first)
        others = f" (and {len(failures) - 1} other enrollment(s))" if len(failures) > 1 else ""
        super().__init__(
            f"signal {signal} to {workflow_id} failed: {type(first).__name__}: {detail}{others}"
        )
        self.signal = signal
        self.failures = failures


def run_is_over(exc: RPCError) -> bool:
    """The one refusal a signal may ignore: no such run, or it has completed."""
    return exc.status == RPCStatusCode.NOT_FOUND


def enrollment_search_attributes(ctx: EnrollmentContext) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(sa.WORKFLOW_KEY, ctx.workflow_key),
            SearchAttributePair(sa.VERSION, ctx.version),
            SearchAttributePair(sa.RECORD_ID, ctx.record_id),
            SearchAttributePair(sa.OBJECT_TYPE, ctx.object_type),
            SearchAttributePair(sa.STATUS, "running"),
        ]
    )


@dataclass(frozen=True)
class Triggered:
    """An enrollment a dispatched change calls for."""

    definition: WorkflowDefinition
    version: int
    record_id: str
    trigger_change_id: int
    snapshot: RecordSnapshot | None


@dataclass(frozen=True)
class Prepared:
    """A triggered enrollment's row, ready to `launch`."""

    ready: Ready
    redo: bool  # written by an earlier attempt of its change: its run may be there already


class EnrollmentStarter:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        client: Client,
        task_queue: str,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """`clock`: when enrollments begin and their goal is judged (simulate's is simulated)."""
        self.sessions = sessions
        self.client = client
        self.task_queue = task_queue
        self.clock = clock

    async def start(
        self,
        definition: WorkflowDefinition,
        version: int,
        record_id: str,
        *,
        source: str,
        trigger_change_id: int | None = None,
        origin: str | None = None,
        snapshot: RecordSnapshot | None = None,
    ) -> EnrollOutcome:
        """Create the enrollment row, then its Temporal workflow. Idempotent for a trigger
        change: dispatching the same change again finds its enrollment and (re)starts the same
        workflow id, which Temporal refuses to run twice. Idempotent likewise for an `origin`
        (the enroll_in_workflow step that asks for the enrollment). `snapshot`: the record as
        the caller just read it (with the events the workflow's goal reads), saving a read."""
        key, object_type = definition.key, definition.object_type
        now = self.clock()
        with self.sessions.begin() as session:
            enrollments = EnrollmentRepository(session)
            enrollment = (
                enrollments.by_trigger(key, trigger_change_id)
                if trigger_change_id is not None
                else enrollments.by_origin(key, origin)
                if origin is not None
                else None
            )
            redo = enrollment is not None
            if enrollment is not None and enrollment.status in ENDED_STATUSES:
                return EnrollOutcome(
                    record_id, True, "enrolled (already done)", enrollment.temporal_workflow_id
                )
            if enrollment is None:
                if snapshot is None:
                    snapshot = load_snapshot(session, object_type, record_id)
                if snapshot is None:
                    return EnrollOutcome(
                        record_id, False, f"no {object_type} with id '{record_id}'"
                    )
                refused = refusal(definition, snapshot, now=now)
                if refused:
                    return EnrollOutcome(record_id, False, refused)
                try:
                    enrollment = enrollments.create(
                        key=key,
                        version=version,
                        object_type=object_type,
                        record_id=record_id,
                        source=source,
                        now=now,
                        trigger_change_id=trigger_change_id,
                        origin=origin,
                    )
                except AlreadyEnrolled as exc:
                    return EnrollOutcome(record_id, False, str(exc))
            others = [
                e.temporal_workflow_id
                for other in definition.settings.unenroll_from
                if (e := enrollments.active_for(other, object_type, record_id)) is not None
            ]
            ready = self._ready(definition, version, enrollment, others)
        retried = trigger_change_id is not None or origin is not None
        return await self.launch(ready, redo=redo, retried_by_caller=retried)

    def prepare_page(
        self,
        definition: WorkflowDefinition,
        version: int,
        record_ids: Sequence[str],
        *,
        source: str,
    ) -> list[Ready | EnrollOutcome]:
        """The store half of `start` for a page of records (a scheduled run's or
        `--enroll-existing`'s), in one transaction and a handful of statements whatever the
        page's size: each record's enrollment row ready to `launch`, or why it has none."""
        key, object_type = definition.key, definition.object_type
        now = self.clock()
        goal_events = condition_reads(definition.goal.criteria).events if definition.goal else ()
        outcomes: dict[str, Ready | EnrollOutcome] = {}
        with self.sessions.begin() as session:
            enrollments = EnrollmentRepository(session)
            active = enrollments.active_among(key, object_type, record_ids)
            snapshots = load_snapshots(
                session,
                object_type,
                [i for i in record_ids if i not in active],
                event_names=goal_events,
            )
            candidates = []
            for record_id in record_ids:
                snapshot = snapshots.get(record_id)
                if record_id in active:
                    outcomes[record_id] = replace(
                        self._ready(definition, version, active[record_id], []), recover=True
                    )
                    continue
                if snapshot is None:
                    refused: str | None = f"no {object_type} with id '{record_id}'"
                else:
                    refused = refusal(definition, snapshot, now=now)
                if refused:
                    outcomes[record_id] = EnrollOutcome(record_id, False, refused)
                else:
                    candidates.append(record_id)
            row: dict[str, Any] = {
                "key": key,
                "version": version,
                "object_type": object_type,
                "source": source,
            }
            created: list[Enrollment | NewEnrollment]
            try:
                created = list(enrollments.create_many(**row, record_ids=candidates, now=now))
            except AlreadyEnrolled:
                # A record of the page was enrolled meanwhile (by the dispatcher, say): one at
                # a time, so that only that record is refused.
                created = []
                for record_id in candidates:
                    try:
                        created.append(enrollments.create(**row, record_id=record_id, now=now))
                    except AlreadyEnrolled as exc:
                        outcomes[record_id] = EnrollOutcome(record_id, False, str(exc))
            others = self._running_elsewhere(enrollments, definition, created)
            for e in created:
                outcomes[e.record_id] = self._ready(definition, version, e, others[e.record_id])
        return [outcomes[record_id] for record_id in record_ids]

    def prepare_triggered(self, items: Sequence[Triggered]) -> list[Prepared | EnrollOutcome]:
        """The store half of `start` for the enrollments a dispatched batch of changes calls
        for, in one transaction and a few statements per workflow: each one's row ready to
        `launch` (`redo`: the row was written by an earlier attempt of its change), or why it
        has none. One item per (workflow, change); `snapshot`: the record as the dispatcher read
        it (None: it is gone)."""
        now = self.clock()
        results: dict[int, Prepared | EnrollOutcome] = {}
        with self.sessions.begin() as session:
            enrollments = EnrollmentRepository(session)
            earlier = enrollments.by_triggers(sorted({i.trigger_change_id for i in items}))
            # New rows, by workflow version: (item index, record id).
            wanted: dict[tuple[str, int], list[int]] = {}
            for n, item in enumerate(items):
                key, record_id = item.definition.key, item.record_id
                enrollment = earlier.get((key, item.trigger_change_id))
                if enrollment is not None:
                    if enrollment.status in ENDED_STATUSES:
                        outcome = "enrolled (already done)"
                        results[n] = EnrollOutcome(
                            record_id, True, outcome, enrollment.temporal_workflow_id
                        )
                    else:
                        results[n] = Prepared(
                            self._ready(item.definition, item.version, enrollment, []), redo=True
                        )
                    continue
                if item.snapshot is None:
                    missing = f"no {item.definition.object_type} with id '{record_id}'"
                    results[n] = EnrollOutcome(record_id, False, missing)
                elif refused := refusal(item.definition, item.snapshot, now=now):
                    results[n] = EnrollOutcome(record_id, False, refused)
                else:
                    wanted.setdefault((key, item.version), []).append(n)
            for (key, version), indexes in wanted.items():
                definition = items[indexes[0]].definition
                object_type = definition.object_type
                by_record = {items[n].record_id: n for n in indexes}
                row: dict[str, Any] = {
                    "key": key,
                    "version": version,
                    "object_type": object_type,
                    "source": "criteria",
                    "now": now,
                }
                created: list[Enrollment | NewEnrollment]
                try:
                    created = list(
                        enrollments.create_many(
                            **row,
                            record_ids=list(by_record),
                            trigger_change_ids={
                                items[n].record_id: items[n].trigger_change_id for n in indexes
                            },
                        )
                    )
                except AlreadyEnrolled:
                    # One of them was enrolled meanwhile (a manual enrollment, say): one at a
                    # time, so that only that one is refused.
                    created = []
                    for n in indexes:
                        item = items[n]
                        try:
                            created.append(
                                enrollments.create(
                                    **row,
                                    record_id=item.record_id,
                                    trigger_change_id=item.trigger_change_id,
                                )
                            )
                        except AlreadyEnrolled as exc:
                            results[n] = EnrollOutcome(item.record_id, False, str(exc))
                others = self._running_elsewhere(enrollments, definition, created)
                for e in created:
                    ready = self._ready(definition, version, e, others[e.record_id])
                    results[by_record[e.record_id]] = Prepared(ready, redo=False)
        return [results[n] for n in range(len(items))]

    @staticmethod
    def _running_elsewhere(
        enrollments: EnrollmentRepository,
        definition: WorkflowDefinition,
        created: Sequence[Enrollment | NewEnrollment],
    ) -> dict[str, list[str]]:
        """By record of `created`: the workflow ids of its running enrollments in the workflows
        the definition's `unenroll_from` names (ended when its new enrollment starts)."""
        ids = [e.record_id for e in created]
        others: dict[str, list[str]] = {record_id: [] for record_id in ids}
        for other in definition.settings.unenroll_from:
            for record_id, running in enrollments.active_among(
                other, definition.object_type, ids
            ).items():
                others[record_id].append(running.temporal_workflow_id)
        return others

    def _ready(
        self,
        definition: WorkflowDefinition,
        version: int,
        enrollment: Enrollment | NewEnrollment,
        others: list[str],
    ) -> Ready:
        return Ready(
            # Built without validation: its parts are (pydantic would otherwise check the
            # definition's graph again for every enrollment, its model validator being run
            # for an instance too).
            input=EnrollmentInput.model_construct(
                context=EnrollmentContext(
                    enrollment_id=enrollment.id,
                    workflow_key=definition.key,
                    workflow_name=definition.name,
                    version=version,
                    object_type=definition.object_type,
                    record_id=enrollment.record_id,
                ),
                definition=definition,
                generation=GENERATION,
            ),
            temporal_workflow_id=enrollment.temporal_workflow_id,
            unenroll_from=others,
            identity=f"{enrollment.id}@{enrollment.enrolled_at.isoformat()}",
        )

    async def launch(
        self, ready: Ready, *, redo: bool = False, retried_by_caller: bool = False
    ) -> EnrollOutcome:
        """The Temporal half of `start`: start the enrollment's workflow, then unenroll the
        record from the workflows its `unenroll_from` names. `redo`: the row is a dispatch's
        that may have started already; `retried_by_caller`: a failure is retried with the same
        row (a dispatched change), so the row must not be marked failed."""
        ctx = ready.input.context
        try:
            started = await self._start_run(ready)
        except WorkflowAlreadyStartedError:
            # Another store's enrollment runs under this workflow id.
            if ready.recover:
                already = AlreadyEnrolled(ctx.workflow_key, ctx.object_type, ctx.record_id)
                return EnrollOutcome(ctx.record_id, False, str(already))
            if not redo:
                self._failed(ctx.enrollment_id, "its workflow id is already taken")
                raise
            started = False  # nothing this redo can start; the change is done as it can be
        except Exception as exc:
            # A dispatched change is retried (its row is reused); any other enrollment would
            # otherwise look running forever with no workflow behind it.
            if not retried_by_caller:
                self._failed(ctx.enrollment_id, f"could not start: {exc}")
            raise
        if ready.recover:
            if not started:
                already = AlreadyEnrolled(ctx.workflow_key, ctx.object_type, ctx.record_id)
                return EnrollOutcome(ctx.record_id, False, str(already))
            lost = "enrolled (its start had been lost)"
            return EnrollOutcome(ctx.record_id, True, lost, ready.temporal_workflow_id)
        # Not started here: its run is there already (started by an earlier attempt of this
        # dispatch, or by a stop signal that found it missing): nothing to start twice.
        if ready.unenroll_from:
            await self.unenroll(ready.unenroll_from, f"enrolled in '{ctx.workflow_key}'")
        return EnrollOutcome(ctx.record_id, True, "enrolled", ready.temporal_workflow_id)

    async def _start_run(self, ready: Ready, *, signal: tuple[str, Any] | None = None) -> bool:
        """Start the enrollment's run (with `signal` queued: signal-with-start, which signals
        the run instead if it is running). Returns False when a run of this enrollment exists
        or existed: a run is never started twice. Raises WorkflowAlreadyStartedError when a
        run of another store's enrollment with the same id is running."""
        try:
            await self._start(ready, WorkflowIDReusePolicy.REJECT_DUPLICATE, signal)
            return True
        except WorkflowAlreadyStartedError:
            if await self._is_ours(ready):
                return False
        # Only another store's run had this id: this enrollment's run starts anew.
        await self._start(ready, WorkflowIDReusePolicy.ALLOW_DUPLICATE, signal)
        return True

    async def _start(
        self, ready: Ready, policy: WorkflowIDReusePolicy, signal: tuple[str, Any] | None
    ) -> None:
        ctx, definition = ready.input.context, ready.input.definition
        await self.client.start_workflow(
            EnrollmentWorkflow.run,
            ready.input,
            id=ready.temporal_workflow_id,
            task_queue=self.task_queue,
            search_attributes=enrollment_search_attributes(ctx),
            static_summary=(
                f"{definition.name} (v{ctx.version}) for {ctx.object_type} {ctx.record_id}"
            ),
            memo={IDENTITY: ready.identity},
            id_reuse_policy=policy,
            start_signal=signal[0] if signal else None,
            start_signal_args=[signal[1]] if signal else [],
        )

    async def _is_ours(self, ready: Ready) -> bool:
        """Does the latest run of the enrollment's workflow id belong to this row? A run
        without an identity (started before runs carried one) is taken as this row's: never
        run an enrollment twice."""
        described = await self.client.get_workflow_handle(ready.temporal_workflow_id).describe()
        identity = await described.memo_value(IDENTITY, None)
        return identity is None or identity == ready.identity

    def _failed(self, enrollment_id: int, reason: str) -> None:
        with self.sessions.begin() as session:
            EnrollmentRepository(session).set_status(
                enrollment_id, "failed", reason=reason, ended_at=datetime.now(UTC)
            )

    async def signal_all(
        self,
        workflow_ids: Iterable[str],
        signal: str,
        arg: Any = None,
        *,
        start_if_missing: bool = False,
    ) -> int:
        """Signal enrollments concurrently (bounded). A run that is over is skipped; any other
        refusal raises SignalFailed once every signal was tried. With `start_if_missing` (the
        stops), an enrollment whose row is running but whose run is missing is started with the
        signal queued. Returns how many runs received the signal."""
        ids = list(dict.fromkeys(workflow_ids))
        if not ids:
            return 0
        gate = asyncio.Semaphore(SIGNAL_CONCURRENCY)

        async def one(workflow_id: str) -> bool:
            async with gate:
                return await self._signal(workflow_id, signal, arg, start_if_missing)

        results = await asyncio.gather(*(one(i) for i in ids), return_exceptions=True)
        failures: dict[str, Exception] = {}
        for workflow_id, result in zip(ids, results, strict=True):
            if isinstance(result, Exception):
                failures[workflow_id] = result
            elif isinstance(result, BaseException):
                raise result  # cancelled: not a refusal
        if failures:
            raise SignalFailed(signal, failures)
        return sum(1 for r in results if r is True)

    async def _signal(
        self, workflow_id: str, signal: str, arg: Any, start_if_missing: bool
    ) -> bool:
        handle = self.client.get_workflow_handle(workflow_id)
        try:
            if arg is None:
                await handle.signal(signal)
            else:
                await handle.signal(signal, arg)
            return True
        except RPCError as exc:
            if not run_is_over(exc):
                raise
        if not start_if_missing:
            return False
        ready = await asyncio.to_thread(self._ready_of, workflow_id)
        if ready is None:
            return False  # the enrollment has ended: nothing to stop
        # Running in the store, no run in Temporal: not started yet, or its run is gone. Start
        # it with the stop queued; a run that closed is not started again (it has ended; if
        # the store missed that, reconciliation marks it).
        return await self._start_run(ready, signal=(signal, arg))

    def _ready_of(self, workflow_id: str) -> Ready | None:
        """The enrollment of a workflow id ready to start, if it is running or paused."""
        with self.sessions() as session:
            enrollment = EnrollmentRepository(session).by_workflow_id(workflow_id)
            if enrollment is None or enrollment.status not in ACTIVE_STATUSES:
                return None
            definition = WorkflowRepository(session).definition(
                enrollment.workflow_key, enrollment.version
            )
            return self._ready(definition, enrollment.version, enrollment, [])

    async def enroll_selected(
        self,
        definition: WorkflowDefinition,
        version: int,
        selection: Select[Any],
        *,
        source: str,
        on_outcome: Callable[[str, Outcome], None],
        after: str | None = None,
        on_page: Callable[[str], Awaitable[None] | None] | None = None,
    ) -> None:
        """Enroll every record `selection` yields, page by page (see `enroll_selected`)."""
        await enroll_selected(
            self.sessions,
            self,
            definition,
            version,
            selection,
            source=source,
            on_outcome=on_outcome,
            after=after,
            on_page=on_page,
        )

    async def unenroll(self, workflow_ids: Iterable[str], reason: str) -> int:
        """The one way an enrollment is told to unenroll (dispatcher, CLI, workflow actions)."""
        return await self.signal_all(
            workflow_ids, UNENROLL, UnenrollSignal(reason=reason), start_if_missing=True
        )

    async def goal_met(self, workflow_ids: Iterable[str], detail: str) -> int:
        return await self.signal_all(
            workflow_ids, GOAL_MET, GoalMetSignal(detail=detail), start_if_missing=True
        )

    async def event_tracked(self, workflow_ids: Iterable[str], signal: EventSignal) -> int:
        # Sent only to enrollments whose wait for the event is stored as in progress: their
        # run has started, so a missing run is one that is over.
        return await self.signal_all(workflow_ids, EVENT_TRACKED, signal)

    async def pause(self, workflow_ids: Iterable[str]) -> int:
        return await self.signal_all(workflow_ids, PAUSE)

    async def resume(self, workflow_ids: Iterable[str]) -> int:
        return await self.signal_all(workflow_ids, RESUME)
