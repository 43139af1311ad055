"""The time sweep: hands the changes that time alone makes to the workflows' conditions to the
dispatcher, as "time passed" changes in the change feed.

For each workflow whose enrollment criteria (active criteria workflows), goal, `unenroll_when`
or criteria-unmet rule hold a time-relative term, a run takes the window after the workflow's
watermark up to now (at most `max_span` long), selects in SQL the records whose terms change in
it (`CrossingRepository`: range scans, so the cost follows the records that cross), judges each
such record at each instant a term changes (`thresholds`), and appends one change per instant at
which one of the conditions that apply to the record changes its value: the criteria when the
workflow may enroll it, the exit rules of the version it is enrolled in. The changes and the
watermark's move commit in one transaction; a crash rolls both back and the next run does the
window again. Each change is unique per (workflow, record, instant) in the store, so a window
done twice (a crash between the pages of a window too large for one transaction, or two sweeps
at once) never appends one twice.

A window holding more than `page` crossing records is halved until it holds fewer, down to one
second; an indivisible second with more (a date property shared by many records, at midnight)
is done in pages of `page` records, each committed with its changes, the watermark moving with
the last. A run stops after `budget` records; the next run goes on from the watermark, so a
sweep that missed runs (a stopped server) catches up, in order, without doubles.

Where a workflow has no watermark yet, it is swept from its activation (the watermark starts
there), or from now if it is not active (only its running enrollments' exit rules concern it).
A reactivated workflow is swept from its new activation on: what time did while it was inactive
enrolls nobody, as with the changes of records meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity

from crmflow.conditions import TimeTerm, evaluate, thresholds, time_terms, to_micros
from crmflow.definitions import Condition, WorkflowDefinition, condition_reads
from crmflow.store import (
    BrokenVersion,
    ChangeRepository,
    CrossingRepository,
    EnrollmentRepository,
    SweepWindow,
    TimeChange,
    TimeSweepRepository,
    WorkflowRepository,
    database_now,
    load_snapshots,
)

from .models import TimeSweepInput, TimeSweepResult

# How often the deployment's Schedule runs the sweep: a condition that time turns true is acted
# upon within about this delay (plus the dispatcher's ~0.1 s).
SWEEP_INTERVAL = timedelta(seconds=30)
MAX_SPAN = timedelta(hours=1)
PAGE = 500
BUDGET = 20_000
_MIN_SPAN = timedelta(seconds=1)
_JUST_BEFORE = timedelta(microseconds=1)

Clock = Callable[[Session], datetime]


@dataclass(frozen=True)
class SweepTarget:
    """One workflow as the sweep sees it: the conditions time can change, by who they apply to."""

    key: str
    object_type: str
    start: datetime  # where its sweep begins when it has no watermark
    activated_at: datetime | None  # set while active: the sweep starts no earlier
    enter: Condition | None  # the criteria, when the workflow enrolls records as they match
    leave: dict[int, list[Condition]] = field(default_factory=dict)  # by enrolled version
    terms: tuple[TimeTerm, ...] = ()
    events: frozenset[str] = frozenset()  # the events the conditions read


def leave_conditions(definition: WorkflowDefinition) -> list[Condition]:
    """The conditions that end an enrollment: goal, `unenroll_when`, criteria when unmet."""
    found = []
    if definition.goal is not None:
        found.append(definition.goal.criteria)
    if definition.settings.unenroll_when is not None:
        found.append(definition.settings.unenroll_when)
    criteria = definition.enrollment.criteria
    if definition.settings.unenroll_when_criteria_unmet and criteria is not None:
        found.append(criteria)
    return found


def sweep_targets(session: Session, *, now: datetime) -> list[SweepTarget]:
    """The workflows the sweep concerns: an active criteria workflow whose criteria hold a time
    term, and every workflow whose running enrollments' exit rules hold one."""
    workflows = WorkflowRepository(session)
    enrolled: dict[str, set[int]] = {}
    for key, version in EnrollmentRepository(session).active_versions():
        enrolled.setdefault(key, set()).add(version)
    targets = []
    for workflow, latest in workflows.all():
        key = workflow.key
        try:
            definition = workflows.definition(key, latest.version)
        except BrokenVersion:
            continue  # the dispatcher leaves it out too (and logs it)
        enter = definition.enrollment.criteria
        if not (workflow.active and definition.enrollment.trigger == "criteria"):
            enter = None
        if enter is not None and not time_terms(enter):
            enter = None
        leave: dict[int, list[Condition]] = {}
        for version in sorted(enrolled.get(key, ())):
            try:
                versioned = definition if version == latest.version else None
                versioned = versioned or workflows.definition(key, version)
            except BrokenVersion:
                continue
            timed = [c for c in leave_conditions(versioned) if time_terms(c)]
            if timed:
                leave[version] = timed
        conditions = ([enter] if enter is not None else []) + [
            c for cs in leave.values() for c in cs
        ]
        if not conditions:
            continue
        terms = tuple(dict.fromkeys(t for c in conditions for t in time_terms(c)))
        events = frozenset(name for c in conditions for name in condition_reads(c).events)
        activated = workflow.activated_at if workflow.active else None
        targets.append(
            SweepTarget(
                key=key,
                object_type=definition.object_type,
                start=activated or now,
                activated_at=activated,
                enter=enter,
                leave=leave,
                terms=terms,
                events=events,
            )
        )
    return targets


def judge(
    session: Session, target: SweepTarget, record_ids: Sequence[str], window: SweepWindow
) -> list[TimeChange]:
    """The changes to append for these records in the window: one per instant at which a
    condition that applies to the record changes its value."""
    if not record_ids:
        return []
    snapshots = load_snapshots(
        session, target.object_type, record_ids, event_names=sorted(target.events)
    )
    enrolled = EnrollmentRepository(session).active_among(
        target.key, target.object_type, record_ids
    )
    changes = []
    for record_id in record_ids:
        snapshot = snapshots.get(record_id)
        if snapshot is None:
            continue  # deleted meanwhile: its deletion is in the feed
        enrollment = enrolled.get(record_id)
        if enrollment is not None:
            conditions = target.leave.get(enrollment.version, [])
        else:
            conditions = [target.enter] if target.enter is not None else []
        if not conditions:
            continue
        terms = [t for t in target.terms if any(t in time_terms(c) for c in conditions)]
        for moment in thresholds(terms, snapshot, after=window.start, until=window.end):
            before = moment - _JUST_BEFORE
            if all(
                evaluate(c, snapshot, now=before) == evaluate(c, snapshot, now=moment)
                for c in conditions
            ):
                continue  # a term changed under a branch that does not decide
            instant = to_micros(moment)
            changed = [t for t in terms if instant in t.instants(snapshot)]
            changes.append(
                TimeChange(
                    workflow_key=target.key,
                    object_type=target.object_type,
                    record_id=record_id,
                    at=moment,
                    properties=tuple(sorted({t.name for t in changed if t.kind == "property"})),
                    events=tuple(sorted({t.name for t in changed if t.kind == "event"})),
                )
            )
    return changes


class TimeSweeper:
    """Runs the sweep: `sweep()` does one run, up to now by `clock` (default: the database's
    time, one clock for every worker)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        clock: Clock = database_now,
        max_span: timedelta = MAX_SPAN,
        page: int = PAGE,
        budget: int = BUDGET,
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.max_span = max_span
        self.page = page
        self.budget = budget

    def sweep(self) -> TimeSweepResult:
        with self.sessions() as session:
            now = self.clock(session)
            targets = sweep_targets(session, now=now)
        result = {"workflows": len(targets), "windows": 0, "candidates": 0, "changes": 0}
        for target in targets:
            if not self.sweep_workflow(target, now, result):
                return TimeSweepResult(**result, caught_up=False)
        return TimeSweepResult(**result)

    def _claim(self, session: Session, target: SweepTarget, now: datetime) -> SweepWindow | None:
        sweeps = TimeSweepRepository(session)
        swept_to = sweeps.swept_to(target.key)
        if swept_to is None:
            sweeps.begin_at(target.key, min(target.start, now))
        elif target.activated_at is not None and swept_to < target.activated_at:
            sweeps.begin_at(target.key, min(target.activated_at, now))
        return sweeps.claim(target.key, until=now, max_span=self.max_span)

    def sweep_workflow(self, target: SweepTarget, now: datetime, result: dict[str, int]) -> bool:
        """Sweep one workflow up to `now`, counting in `result` (windows, candidates, changes);
        False when the run's budget ran out first."""
        while result["candidates"] < self.budget:
            with self.sessions.begin() as session:
                window = self._claim(session, target, now)
                if window is None:
                    return True
                start, end = window.start, window.end
                ids = self._select(session, target, start, end, limit=self.page + 1)
                while len(ids) > self.page and end - start > _MIN_SPAN:
                    end = start + max((end - start) / 2, _MIN_SPAN)
                    ids = self._select(session, target, start, end, limit=self.page + 1)
                window = SweepWindow(target.key, window.start, end)
                if len(ids) <= self.page:
                    result["changes"] += ChangeRepository(session).append_time(
                        judge(session, target, ids, window)
                    )
                    TimeSweepRepository(session).advance(window)
                    result["windows"] += 1
                    result["candidates"] += len(ids)
                    continue
            self._sweep_in_pages(target, window, result)
        return False

    @staticmethod
    def _select(
        session: Session,
        target: SweepTarget,
        since: datetime,
        until: datetime,
        *,
        limit: int,
        after: str | None = None,
    ) -> list[str]:
        return CrossingRepository(session).crossing_ids(
            target.terms,
            object_type=target.object_type,
            since=since,
            until=until,
            after=after,
            limit=limit,
        )

    def _sweep_in_pages(
        self, target: SweepTarget, window: SweepWindow, result: dict[str, int]
    ) -> None:
        """A window too dense to split: its records a page at a time, each page committed with
        its changes (unique per instant, so a page done again appends nothing), the watermark
        moved with the last page."""
        after: str | None = None
        while True:
            with self.sessions.begin() as session:
                sweeps = TimeSweepRepository(session)
                claimed = sweeps.claim(target.key, until=window.end, max_span=self.max_span)
                if claimed is None or claimed.start != window.start:
                    return  # another sweep did it meanwhile
                ids = self._select(
                    session, target, window.start, window.end, limit=self.page, after=after
                )
                result["changes"] += ChangeRepository(session).append_time(
                    judge(session, target, ids, window)
                )
                result["candidates"] += len(ids)
                if len(ids) < self.page:
                    sweeps.advance(window)
                    result["windows"] += 1
                    return
            after = ids[-1]


class TimeSweepActivities:
    def __init__(self, sessions: sessionmaker[Session], *, clock: Clock = database_now) -> None:
        self.sweeper = TimeSweeper(sessions, clock=clock)

    @activity.defn(name="sweep_time")
    def sweep_time(self, input: TimeSweepInput) -> TimeSweepResult:
        return self.sweeper.sweep()
