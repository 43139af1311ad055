"""The change feed: one row per change of a record, appended by the record, list and event
repositories in the caller's transaction, so a change and its feed entry commit together or not
at all. The dispatcher reads it in order and marks each entry once acted upon.

A change whose dispatch fails is tried again later (`next_attempt_at`), a bounded number of
times, then parked: out of the feed until someone retries it. Until then the later changes of
the same record wait behind it (a record's changes keep their order); other records' do not.
Every write the dispatcher makes here is fenced by its lease (`Fence`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Select,
    and_,
    bindparam,
    exists,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from ._leases import HOLDS, Fence
from ._tables import RecordChange

# Kinds of change.
CREATED, UPDATED, DELETED = "created", "updated", "deleted"
LISTED, UNLISTED, EVENT = "listed", "unlisted", "event"
# Time alone changed a time-relative term of one workflow's conditions for the record.
TIME = "time"


@dataclass(frozen=True, slots=True)
class TimeChange:
    """A "time passed" change to append: at `at`, a term on these properties or events of the
    workflow's conditions changed for the record."""

    workflow_key: str
    object_type: str
    record_id: str
    at: datetime
    properties: tuple[str, ...] = ()
    events: tuple[str, ...] = ()


def changed_properties(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The properties that differ, each with its previous value (None: it was absent)."""
    return {
        name: before.get(name)
        for name in sorted(before.keys() | after.keys())
        if before.get(name) != after.get(name)
    }


class ChangeNotParked(ValueError):
    """`retry` of a change that is not parked (unknown, pending, or dispatched)."""


@dataclass(frozen=True, slots=True)
class Failure:
    """What became of a change whose dispatch failed."""

    attempts: int
    parked: bool
    next_attempt_at: datetime | None


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """A change not dispatched yet, as `crmflow changes` shows it."""

    change: RecordChange
    # The earlier failed change of the same record this one waits behind, if any.
    waiting_behind: int | None


def _troubled(table: Any) -> ColumnElement[bool]:
    """A change whose dispatch failed and is not done: the partial index's predicate."""
    return and_(table.dispatched_at.is_(None), table.attempts > 0)


# An earlier failed change of the same record, parked or not due yet: the change waits behind
# it. Built once (time and limit as parameters): building it costs more than running it.
_blocker = aliased(RecordChange, name="blocker")
_HELD_BACK = exists().where(
    _blocker.object_type == RecordChange.object_type,
    _blocker.record_id == RecordChange.record_id,
    _troubled(_blocker),
    or_(_blocker.parked_at.is_not(None), _blocker.next_attempt_at > bindparam("now")),
)
_IN_PARTITION = RecordChange.bucket % bindparam("partitions") == bindparam("partition")
_DUE_WHERE = (
    RecordChange.dispatched_at.is_(None),
    RecordChange.parked_at.is_(None),
    or_(
        RecordChange.next_attempt_at.is_(None),
        RecordChange.next_attempt_at <= bindparam("now"),
    ),
    ~_HELD_BACK,
    _IN_PARTITION,
)
_DUE = select(RecordChange).where(*_DUE_WHERE).order_by(RecordChange.id).limit(bindparam("limit"))
_earlier = aliased(RecordChange, name="earlier")


def _lane(bulk: bool) -> Select[RecordChange]:
    """The due changes of one lane (bulk writes' or single writes'), except those behind an
    earlier pending change of their record in the other lane: two loops can take the two lanes
    at once, and a record's changes still keep their order."""
    behind_other_lane = exists().where(
        _earlier.object_type == RecordChange.object_type,
        _earlier.record_id == RecordChange.record_id,
        _earlier.dispatched_at.is_(None),
        _earlier.bulk.is_(not bulk),
        _earlier.id < RecordChange.id,
    )
    # Written as the partial index of the single writes' pending changes says it: SQLite uses
    # that index only for a query that states its predicate (`bulk = 0` or `bulk IS 0` would
    # scan every pending change, an import's included, on every idle poll).
    lane = RecordChange.bulk if bulk else text("NOT record_changes.bulk")
    return (
        select(RecordChange)
        .where(*_DUE_WHERE, lane, ~behind_other_lane)
        .order_by(RecordChange.id)
        .limit(bindparam("limit"))
    )


_DUE_INTERACTIVE = _lane(bulk=False)
_DUE_BULK = _lane(bulk=True)
# The same, leaving out the changes whose ids are in `skip` (held by a batch in flight).
_SKIP = RecordChange.id.not_in(bindparam("skip", expanding=True))
_DUE_INTERACTIVE_SKIPPING = _DUE_INTERACTIVE.where(_SKIP)
_DUE_BULK_SKIPPING = _DUE_BULK.where(_SKIP)
INTERACTIVE, BULK = "interactive", "bulk"
# Mark changes dispatched, only while the dispatcher still holds its lease.
_MARK = (
    update(RecordChange)
    .where(RecordChange.id.in_(bindparam("ids", expanding=True)), HOLDS)
    .values(dispatched_at=bindparam("now"), next_attempt_at=None)
)


class ChangeRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def append(
        self,
        object_type: str,
        record_id: str,
        kind: str,
        *,
        now: datetime,
        before: Mapping[str, Any] | None = None,
        list_name: str | None = None,
        event_name: str | None = None,
        event_id: int | None = None,
        bulk: bool = False,
    ) -> None:
        self.session.add(
            RecordChange(
                bulk=bulk,
                object_type=object_type,
                record_id=record_id,
                kind=kind,
                properties=sorted(before or {}),
                before=dict(before or {}),
                list_name=list_name,
                event_name=event_name,
                event_id=event_id,
                occurred_at=now,
                attempts=0,
            )
        )

    def append_time(self, changes: Sequence[TimeChange]) -> int:
        """Append "time passed" changes, each at most once ever per (workflow, record,
        instant): one appended before (by a sweep that crashed before moving its watermark,
        or by another sweep) is left as it is. Returns how many were new."""
        if not changes:
            return 0
        rows = [
            {
                "object_type": c.object_type,
                "record_id": c.record_id,
                "kind": TIME,
                "properties": sorted(c.properties),
                "before": {"events": sorted(c.events)} if c.events else {},
                "workflow_key": c.workflow_key,
                "occurred_at": c.at,
                "attempts": 0,
            }
            for c in changes
        ]
        dialect = self.session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = (
            insert(RecordChange)
            .on_conflict_do_nothing(
                index_elements=["workflow_key", "object_type", "record_id", "occurred_at"],
                index_where=RecordChange.workflow_key.is_not(None),
            )
            .returning(RecordChange.id)
        )
        return len(self.session.execute(statement, rows).all())

    def pending(
        self,
        *,
        limit: int,
        now: datetime,
        partition: tuple[int, int] = (0, 1),
        lane: str | None = None,
        skip: Collection[int] = (),
    ) -> list[RecordChange]:
        """Changes due for dispatch in `partition` (its number, and how many there are), a
        record's in order: not parked, not waiting for a later attempt, and not behind such a
        change of their record; oldest first. `now`: the database's time.

        `lane`: INTERACTIVE, the changes of single writes that no pending bulk change of their
        record precedes; BULK, the changes of bulk writes (imports, batches) that no pending
        interactive change of their record precedes: two dispatch loops can take them at once
        and still keep each record's changes in order. None: up to `limit` of the first,
        then up to `limit` of the oldest of any kind (one loop).

        `skip`: ids of changes a batch in flight holds (a lane only), left out by the query
        (reading them again would cost their decoding for nothing)."""
        params: dict[str, Any] = {
            "now": now,
            "limit": limit,
            "partition": partition[0],
            "partitions": partition[1],
        }
        if skip:
            if lane not in (INTERACTIVE, BULK):
                raise ValueError("skip: for one lane only")
            params["skip"] = list(skip)
        if lane == INTERACTIVE:
            query = _DUE_INTERACTIVE_SKIPPING if skip else _DUE_INTERACTIVE
            return list(self.session.scalars(query, params))
        if lane == BULK:
            return list(self.session.scalars(_DUE_BULK_SKIPPING if skip else _DUE_BULK, params))
        found = {c.id: c for c in self.session.scalars(_DUE_INTERACTIVE, params)}
        for change in self.session.scalars(_DUE, params):
            found.setdefault(change.id, change)
        return [found[change_id] for change_id in sorted(found)]

    def mark_dispatched(self, change_ids: Iterable[int], *, now: datetime, fence: Fence) -> bool:
        """Mark changes done, if `fence` still holds the lease (checked in the same
        statement). Returns False when it does not: nothing was marked."""
        ids = list(change_ids)
        if not ids:
            return True
        result = self.session.execute(_MARK, {"ids": ids, "now": now, **fence.params()})
        return bool(cast(CursorResult[Any], result).rowcount)

    def record_failure(
        self,
        change_id: int,
        error: str,
        *,
        now: datetime,
        fence: Fence,
        delays: Sequence[timedelta],
    ) -> Failure | None:
        """Count a failed attempt: the change is tried again after `delays[n - 1]` (n: the
        attempts so far), and parked once every delay is used up (len(delays) + 1 attempts).
        None when `fence` no longer holds the lease (nothing written)."""
        attempts = 1 + int(
            self.session.scalar(select(RecordChange.attempts).where(RecordChange.id == change_id))
            or 0
        )
        parked = attempts > len(delays)
        next_attempt_at = None if parked else now + delays[attempts - 1]
        result = self.session.execute(
            update(RecordChange)
            .where(RecordChange.id == change_id, HOLDS)
            .values(
                attempts=attempts,
                error=error[:2000],
                next_attempt_at=next_attempt_at,
                parked_at=now if parked else None,
            ),
            fence.params(),
        )
        if not cast(CursorResult[Any], result).rowcount:
            return None
        return Failure(attempts, parked, next_attempt_at)

    def note_error(self, change_id: int, error: str, *, fence: Fence) -> bool:
        """Keep the error of an attempt that is not counted (Temporal unreachable: no fault
        of the change)."""
        result = self.session.execute(
            update(RecordChange)
            .where(RecordChange.id == change_id, HOLDS)
            .values(error=error[:2000]),
            fence.params(),
        )
        return bool(cast(CursorResult[Any], result).rowcount)

    def feed(self, *, parked_only: bool = False, limit: int | None = None) -> list[FeedEntry]:
        """Changes not dispatched yet (with `parked_only`, only the parked ones), oldest
        first, each with the failed change of its record it waits behind."""
        stmt = select(RecordChange).where(RecordChange.dispatched_at.is_(None))
        if parked_only:
            stmt = stmt.where(RecordChange.parked_at.is_not(None))
        stmt = stmt.order_by(RecordChange.id)
        if limit is not None:
            stmt = stmt.limit(limit)
        rows = list(self.session.scalars(stmt))
        blockers = {
            (object_type, record_id): first
            for object_type, record_id, first in self.session.execute(
                select(RecordChange.object_type, RecordChange.record_id, func.min(RecordChange.id))
                .where(_troubled(RecordChange))
                .group_by(RecordChange.object_type, RecordChange.record_id)
            )
        }
        entries = []
        for row in rows:
            blocker = blockers.get((row.object_type, row.record_id))
            entries.append(FeedEntry(row, blocker if blocker not in (None, row.id) else None))
        return entries

    def counts(self) -> dict[str, int]:
        """How many changes are pending (parked ones excluded) and parked."""
        parked = RecordChange.parked_at.is_not(None)
        found: dict[bool, int] = {}
        for is_parked, n in self.session.execute(
            select(parked, func.count())
            .where(RecordChange.dispatched_at.is_(None))
            .group_by(parked)
        ):
            found[bool(is_parked)] = int(n)
        return {"pending": found.get(False, 0), "parked": found.get(True, 0)}

    def retry(self, change_ids: Sequence[int] | None) -> list[int]:
        """Put parked changes back in the feed, with a fresh budget of attempts (None: every
        parked change). All or nothing: raises ChangeNotParked naming the first id that is
        unknown or not parked."""
        parked = select(RecordChange.id, RecordChange.dispatched_at, RecordChange.parked_at)
        if change_ids is None:
            ids = list(
                self.session.scalars(
                    select(RecordChange.id).where(
                        RecordChange.dispatched_at.is_(None), RecordChange.parked_at.is_not(None)
                    )
                )
            )
        else:
            found = {
                i: (dispatched, parked_at)
                for i, dispatched, parked_at in self.session.execute(
                    parked.where(RecordChange.id.in_(list(change_ids)))
                )
            }
            for change_id in change_ids:
                if change_id not in found:
                    raise ChangeNotParked(f"change {change_id}: no such change")
                dispatched, parked_at = found[change_id]
                if dispatched is not None:
                    raise ChangeNotParked(f"change {change_id} is not parked: it was dispatched")
                if parked_at is None:
                    raise ChangeNotParked(
                        f"change {change_id} is not parked: it is pending in the feed"
                    )
            ids = sorted(set(change_ids))
        if ids:
            self.session.execute(
                update(RecordChange)
                .where(RecordChange.id.in_(ids))
                .values(parked_at=None, next_attempt_at=None, attempts=0)
            )
        return ids

    def last_id(self) -> int:
        return int(self.session.scalar(select(func.max(RecordChange.id))) or 0)

    def count_pending(self) -> int:
        return int(
            self.session.scalar(
                select(func.count())
                .select_from(RecordChange)
                .where(RecordChange.dispatched_at.is_(None))
            )
            or 0
        )
