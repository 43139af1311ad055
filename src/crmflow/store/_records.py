"""Repositories for records, lists and events. They take a session and never commit: the caller
owns the transaction (so an effect and its step record land together, or not at all)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Select,
    String,
    Table,
    case,
    delete,
    func,
    insert,
    literal,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from crmflow.conditions import EventSnapshot, RecordSnapshot
from crmflow.definitions import (
    RECORD_PROPERTIES_MAX_BYTES,
    InvalidInput,
    check_event_id,
    check_event_name,
    check_event_properties,
    check_list_name,
    check_object_type,
    check_record_id,
    check_storable,
    encoded_size,
    shown,
)

from . import _changes as feed
from ._changes import ChangeRepository, changed_properties
from ._dates import DateRows
from ._tables import (
    Event,
    ListMembership,
    Record,
    RecordAssociation,
    RecordChange,
    RecordDate,
    RecordList,
)

# Plain tables for the bulk inserts: the ORM's bulk path adds per-row work for nothing here.
_RECORDS = cast(Table, Record.__table__)
_CHANGES = cast(Table, RecordChange.__table__)
LOOKUP_SLICE = 10_000  # ids per lookup statement (see `upsert_many`)


class StoreError(Exception):
    """A store operation refused for a reason the user can act on."""


class RecordNotFound(StoreError):
    def __init__(self, object_type: str, record_id: str) -> None:
        super().__init__(f"no {object_type} with id '{record_id}'")
        self.object_type = object_type
        self.record_id = record_id


def _refuse(where: str, exc: InvalidInput) -> StoreError:
    return StoreError(f"{where}: {exc}" if where else str(exc))


def _queryable(*keys: str) -> bool:
    """Text a database can look up: PostgreSQL refuses NUL even in a query, and no driver can
    encode a lone surrogate. No row can have such a key, so a lookup finds nothing."""
    for key in keys:
        if "\x00" in key:
            return False
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return True


def check_record_key(object_type: str, record_id: str) -> None:
    """The id of a new record: one Temporal accepts in a workflow id, that fits the columns."""
    try:
        check_object_type(object_type)
        check_record_id(record_id)
    except InvalidInput as exc:
        raise _refuse("", exc) from None


def check_record_write(
    object_type: str,
    record_id: str,
    before: Mapping[str, Any],
    values: Mapping[str, Any],
    after: Mapping[str, Any],
) -> None:
    """What the store refuses whoever writes (see `check_storable`), and a record growing
    past 1 MiB of JSON; one that is already larger (an older version let it) may shrink."""
    where = f"{object_type} {shown(record_id)}"
    try:
        check_storable(values)
    except InvalidInput as exc:
        raise _refuse(where, exc) from None
    size = encoded_size(after)
    if size > RECORD_PROPERTIES_MAX_BYTES and size > encoded_size(before):
        raise StoreError(
            f"{where}: its properties would take {size:,} bytes as JSON: "
            f"at most {RECORD_PROPERTIES_MAX_BYTES:,}"
        )


def _change_row(
    object_type: str,
    record_id: str,
    kind: str,
    now: datetime,
    before: Mapping[str, Any],
    bulk: bool,
) -> dict[str, Any]:
    """A change feed entry as `ChangeRepository.append` writes it, as a row for a bulk insert."""
    return {
        "object_type": object_type,
        "record_id": record_id,
        "kind": kind,
        "properties": sorted(before),
        "before": dict(before),
        "occurred_at": now,
        "attempts": 0,
        "bulk": bulk,
    }


def merge_properties(current: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """Apply values; a value of None removes the property (a cleared value is an unknown one)."""
    merged = dict(current)
    for name, value in values.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


class RecordRepository:
    """Records, and with them their change feed entries and date index rows (`_dates`): every
    write here keeps both in step, in the caller's transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, object_type: str, record_id: str, *, for_update: bool = False) -> Record | None:
        if not _queryable(object_type, record_id):
            return None
        stmt = select(Record).where(Record.object_type == object_type, Record.id == record_id)
        if for_update:
            stmt = stmt.with_for_update()
        return self.session.scalars(stmt).one_or_none()

    def require(self, object_type: str, record_id: str, *, for_update: bool = False) -> Record:
        record = self.get(object_type, record_id, for_update=for_update)
        if record is None:
            raise RecordNotFound(object_type, record_id)
        return record

    def upsert(
        self, object_type: str, record_id: str, values: Mapping[str, Any], *, now: datetime
    ) -> tuple[Record, bool]:
        """Create the record or merge `values` into it. Returns (record, created)."""
        record = self.get(object_type, record_id, for_update=True)
        dates = DateRows()
        created = record is None
        if record is None:
            record = self._add(object_type, record_id, values, now=now, dates=dates)
        else:
            self._change(record, values, now=now, dates=dates)
        self.session.flush()
        dates.apply(self.session)
        return record, created

    def _add(
        self,
        object_type: str,
        record_id: str,
        values: Mapping[str, Any],
        *,
        now: datetime,
        dates: DateRows,
    ) -> Record:
        check_record_key(object_type, record_id)
        properties = merge_properties({}, values)
        check_record_write(object_type, record_id, {}, values, properties)
        record = Record(
            object_type=object_type,
            id=record_id,
            properties=properties,
            created_at=now,
            updated_at=now,
        )
        self.session.add(record)
        dates.created(object_type, record_id, properties)
        ChangeRepository(self.session).append(
            object_type,
            record_id,
            feed.CREATED,
            now=now,
            before=changed_properties({}, record.properties),
        )
        return record

    def _change(
        self,
        record: Record,
        values: Mapping[str, Any],
        *,
        now: datetime,
        dates: DateRows,
        bulk: bool = False,
    ) -> None:
        after = merge_properties(record.properties, values)
        check_record_write(record.object_type, record.id, record.properties, values, after)
        before = changed_properties(record.properties, after)
        if not before:
            return  # a write that changes nothing is no change: no feed entry, no trigger
        dates.changed(record.object_type, record.id, record.properties, after, before)
        record.properties = after
        record.updated_at = now
        ChangeRepository(self.session).append(
            record.object_type, record.id, feed.UPDATED, now=now, before=before, bulk=bulk
        )

    def update(
        self, object_type: str, record_id: str, values: Mapping[str, Any], *, now: datetime
    ) -> Record:
        record = self.require(object_type, record_id, for_update=True)
        dates = DateRows()
        self._change(record, values, now=now, dates=dates)
        self.session.flush()
        dates.apply(self.session)
        return record

    def delete(self, object_type: str, record_id: str, *, now: datetime) -> bool:
        # Memberships and events go with the record (ON DELETE CASCADE, and explicitly for
        # SQLite connections opened without the foreign_keys pragma).
        self.session.execute(
            delete(ListMembership).where(
                ListMembership.object_type == object_type, ListMembership.record_id == record_id
            )
        )
        self.session.execute(
            delete(Event).where(Event.object_type == object_type, Event.record_id == record_id)
        )
        self.session.execute(
            delete(RecordDate).where(
                RecordDate.object_type == object_type, RecordDate.record_id == record_id
            )
        )
        result = self.session.execute(
            delete(Record).where(Record.object_type == object_type, Record.id == record_id)
        )
        deleted = bool(cast(CursorResult[Any], result).rowcount)
        if deleted:
            ChangeRepository(self.session).append(object_type, record_id, feed.DELETED, now=now)
        return deleted

    def existing_ids(self, object_type: str, record_ids: Sequence[str]) -> set[str]:
        """Which of these records exist."""
        return set(
            self.session.scalars(
                select(Record.id).where(
                    Record.object_type == object_type, Record.id.in_(list(record_ids))
                )
            )
        )

    def _lookup(self, object_type: str, ids: list[str]) -> Select[Record]:
        """The records of `ids` that exist. On PostgreSQL, one primary-key probe per id (a
        LATERAL subquery with LIMIT 1 the planner cannot flatten): with `id IN (...)` it
        probes by object type alone and filters whenever its statistics undercount the type,
        as on a new store or a new type before autovacuum analyzes the table, and a large
        import in one transaction then rescans every record it already wrote for each batch
        (100,000 records into a new store: 95 s instead of 4.5 s, bench/import_lookup.py)."""
        if self.session.get_bind().dialect.name != "postgresql":
            return select(Record).where(Record.object_type == object_type, Record.id.in_(ids))
        wanted = (
            func.unnest(literal(ids, ARRAY(String)))
            .table_valued("id")
            .render_derived(name="wanted")
        )
        found = (
            select(Record)
            .where(Record.object_type == object_type, Record.id == wanted.c.id)
            .limit(1)
            .lateral("found")
        )
        return select(aliased(Record, found)).select_from(wanted).join(found, true())

    def upsert_many(
        self,
        object_type: str,
        rows: Iterable[tuple[str, Mapping[str, Any]]],
        *,
        now: datetime,
        bulk: bool = False,
    ) -> tuple[int, int]:
        """Bulk upsert of (id, properties). Returns (created, updated). `bulk`: an import or
        a batch, whose changes are dispatched after interactive writes' (`pending`).

        Records that exist are changed through the ORM (they are loaded anyway); new ones are
        built here and written with one multi-row INSERT each for the records, their change feed
        entries and their date index rows: per-row ORM work was most of a batch's cost."""
        rows = list(rows)
        ids = list(dict.fromkeys(record_id for record_id, _ in rows))
        # Looked up a slice at a time: an IN list binds a parameter per id, and a statement
        # takes at most 65,535 of them (psycopg; SQLite 32,766).
        existing = {
            r.id: r
            for start in range(0, len(ids), LOOKUP_SLICE)
            for r in self.session.scalars(
                self._lookup(object_type, ids[start : start + LOOKUP_SLICE])
            )
        }
        created = updated = 0
        dates = DateRows()
        new: dict[str, dict[str, Any]] = {}  # id -> properties, in the order first written
        changes: list[dict[str, Any]] = []
        for record_id, values in rows:
            record = existing.get(record_id)
            if record is not None:
                self._change(record, values, now=now, dates=dates, bulk=bulk)
                updated += 1
            elif record_id not in new:
                check_record_key(object_type, record_id)
                properties = merge_properties({}, values)
                check_record_write(object_type, record_id, {}, values, properties)
                new[record_id] = properties
                dates.created(object_type, record_id, properties)
                created_from = changed_properties({}, properties)
                changes.append(
                    _change_row(object_type, record_id, feed.CREATED, now, created_from, bulk)
                )
                created += 1
            else:  # written again in this batch: as `_change` does, on the new properties
                current = new[record_id]
                after = merge_properties(current, values)
                check_record_write(object_type, record_id, current, values, after)
                updated += 1
                before = changed_properties(current, after)
                if before:
                    dates.changed(object_type, record_id, current, after, before)
                    new[record_id] = after
                    changes.append(
                        _change_row(object_type, record_id, feed.UPDATED, now, before, bulk)
                    )
        self.session.flush()
        if new:
            self.session.execute(
                insert(_RECORDS),
                [
                    {
                        "object_type": object_type,
                        "id": record_id,
                        "properties": properties,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for record_id, properties in new.items()
                ],
            )
        if changes:
            self.session.execute(insert(_CHANGES), changes)
        dates.apply(self.session)
        return created, updated

    def matching_ids(
        self, matching: Select[Any], *, after: str | None = None, limit: int | None = None
    ) -> list[str]:
        """Ids a `select(Record.id)` query selects, in id order; with `after` and `limit`, one
        page of them: keyset paging stays correct while records are added or changed."""
        if after is not None:
            matching = matching.where(Record.id > after)
        return list(self.session.scalars(matching.order_by(None).order_by(Record.id).limit(limit)))

    def tally(
        self,
        object_type: str,
        where: ColumnElement[bool],
        buckets: Sequence[tuple[str, ColumnElement[bool]]],
        *,
        otherwise: str,
    ) -> dict[str, int]:
        """How many records of `object_type` satisfy `where`, counted under the first bucket
        each one falls in (`otherwise` when none): one scan, whatever the number of buckets."""
        names = [name for name, _ in buckets] + [otherwise]
        # Buckets are numbered in SQL: integer results type the same way on every database.
        whens = [(clause, n) for n, (_, clause) in enumerate(buckets)]
        index = case(*whens, else_=len(buckets)) if whens else literal(0)
        found = (
            select(index.label("bucket")).where(Record.object_type == object_type, where).subquery()
        )
        counts = dict.fromkeys(names, 0)
        for bucket, n in self.session.execute(
            select(found.c.bucket, func.count()).group_by(found.c.bucket)
        ):
            counts[names[bucket]] = int(n)
        return counts

    def last_change(self, object_type: str, record_id: str) -> RecordChange | None:
        """The record's latest entry in the change feed, if any."""
        return self.session.scalars(
            select(RecordChange)
            .where(RecordChange.object_type == object_type, RecordChange.record_id == record_id)
            .order_by(RecordChange.id.desc())
            .limit(1)
        ).one_or_none()


class ListRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def ensure(self, name: str, object_type: str, *, now: datetime) -> RecordList:
        found = self.get(name)
        if found is None:
            try:
                check_list_name(name)
                check_object_type(object_type)
            except InvalidInput as exc:
                raise _refuse("", exc) from None
            found = RecordList(name=name, object_type=object_type, created_at=now)
            self.session.add(found)
            self.session.flush()
        elif found.object_type != object_type:
            raise StoreError(f"list '{name}' holds {found.object_type} records, not {object_type}")
        return found

    def get(self, name: str) -> RecordList | None:
        return self.session.get(RecordList, name) if _queryable(name) else None

    def add(self, name: str, object_type: str, record_id: str, *, now: datetime) -> bool:
        """Add a record; returns False when it already was a member."""
        self.ensure(name, object_type, now=now)
        key = (name, object_type, record_id)
        if self.session.get(ListMembership, key) is not None:
            return False
        self.session.add(
            ListMembership(
                list_name=name, object_type=object_type, record_id=record_id, added_at=now
            )
        )
        ChangeRepository(self.session).append(
            object_type, record_id, feed.LISTED, now=now, list_name=name
        )
        self.session.flush()
        return True

    def remove(self, name: str, object_type: str, record_id: str, *, now: datetime) -> bool:
        result = self.session.execute(
            delete(ListMembership).where(
                ListMembership.list_name == name,
                ListMembership.object_type == object_type,
                ListMembership.record_id == record_id,
            )
        )
        removed = bool(cast(CursorResult[Any], result).rowcount)
        if removed:
            ChangeRepository(self.session).append(
                object_type, record_id, feed.UNLISTED, now=now, list_name=name
            )
        return removed

    def members(self, name: str) -> list[str]:
        return list(
            self.session.scalars(
                select(ListMembership.record_id)
                .where(ListMembership.list_name == name)
                .order_by(ListMembership.record_id)
            )
        )

    def lists_of(self, object_type: str, record_id: str) -> list[str]:
        return list(
            self.session.scalars(
                select(ListMembership.list_name)
                .where(
                    ListMembership.object_type == object_type, ListMembership.record_id == record_id
                )
                .order_by(ListMembership.list_name)
            )
        )


class EventRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(
        self,
        object_type: str,
        record_id: str,
        name: str,
        properties: Mapping[str, Any],
        *,
        occurred_at: datetime,
        client_event_id: str | None = None,
    ) -> Event:
        try:
            check_event_name(name)
            # An event reaches waiting enrollments in a Temporal signal: bounded here, so no
            # event can make its change undeliverable.
            check_event_properties(properties)
            if client_event_id is not None:
                check_event_id(client_event_id)
        except InvalidInput as exc:
            raise _refuse(f"event {shown(name)}", exc) from None
        event = Event(
            object_type=object_type,
            record_id=record_id,
            name=name,
            properties=dict(properties),
            occurred_at=occurred_at,
            client_event_id=client_event_id,
        )
        self.session.add(event)
        self.session.flush()
        ChangeRepository(self.session).append(
            object_type, record_id, feed.EVENT, now=occurred_at, event_name=name, event_id=event.id
        )
        return event

    def by_client_id(self, client_event_id: str) -> Event | None:
        if not _queryable(client_event_id):
            return None
        return self.session.scalars(
            select(Event).where(Event.client_event_id == client_event_id)
        ).one_or_none()

    def add_once(
        self,
        object_type: str,
        record_id: str,
        name: str,
        properties: Mapping[str, Any],
        *,
        occurred_at: datetime,
        client_event_id: str,
    ) -> tuple[Event, bool]:
        """The event with this client id, added unless one was (True if added now). Two
        transactions adding the same id at once: the unique index lets one in, and the other,
        once the first committed, finds it (its insert is undone in a savepoint)."""
        found = self.by_client_id(client_event_id)
        if found is not None:
            return found, False
        try:
            with self.session.begin_nested():
                event = self.add(
                    object_type,
                    record_id,
                    name,
                    properties,
                    occurred_at=occurred_at,
                    client_event_id=client_event_id,
                )
        except IntegrityError:
            found = self.by_client_id(client_event_id)
            if found is None:
                raise
            return found, False
        return event, True

    def for_record(
        self, object_type: str, record_id: str, *, names: Iterable[str] | None = None
    ) -> list[Event]:
        stmt = select(Event).where(Event.object_type == object_type, Event.record_id == record_id)
        if names is not None:
            stmt = stmt.where(Event.name.in_(list(names)))
        return list(self.session.scalars(stmt.order_by(Event.occurred_at, Event.id)))


class AssociationRepository:
    """Associations between records (a record made by `create_record` and the enrolled one)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def associate(
        self,
        object_type: str,
        record_id: str,
        other_object_type: str,
        other_record_id: str,
        *,
        now: datetime,
    ) -> bool:
        """Associate both ways; False when already associated."""
        key = (object_type, record_id, other_object_type, other_record_id)
        if self.session.get(RecordAssociation, key) is not None:
            return False
        self.session.add(
            RecordAssociation(
                object_type=object_type,
                record_id=record_id,
                other_object_type=other_object_type,
                other_record_id=other_record_id,
                created_at=now,
            )
        )
        self.session.flush()
        return True

    def of_record(self, object_type: str, record_id: str) -> list[tuple[str, str]]:
        """(object_type, id) of every record associated with this one, in either direction."""
        forward = select(
            RecordAssociation.other_object_type, RecordAssociation.other_record_id
        ).where(
            RecordAssociation.object_type == object_type, RecordAssociation.record_id == record_id
        )
        backward = select(RecordAssociation.object_type, RecordAssociation.record_id).where(
            RecordAssociation.other_object_type == object_type,
            RecordAssociation.other_record_id == record_id,
        )
        rows = self.session.execute(forward.union(backward)).all()
        return sorted((row[0], row[1]) for row in rows)


def load_snapshot(
    session: Session,
    object_type: str,
    record_id: str,
    *,
    event_names: Iterable[str] | None = None,
) -> RecordSnapshot | None:
    """The record as conditions see it: properties, lists, and the events named (all if None)."""
    return load_snapshots(session, object_type, [record_id], event_names=event_names).get(record_id)


def load_snapshots(
    session: Session,
    object_type: str,
    record_ids: Sequence[str],
    *,
    event_names: Iterable[str] | None = None,
) -> dict[str, RecordSnapshot]:
    """`load_snapshot` for many records at once (three queries, whatever their number); a
    record that does not exist is absent from the result."""
    ids = list(record_ids)
    records = session.execute(
        select(Record.id, Record.properties).where(
            Record.object_type == object_type, Record.id.in_(ids)
        )
    ).all()
    if not records:
        return {}
    found = [record_id for record_id, _ in records]
    lists: dict[str, set[str]] = {record_id: set() for record_id in found}
    for record_id, name in session.execute(
        select(ListMembership.record_id, ListMembership.list_name).where(
            ListMembership.object_type == object_type, ListMembership.record_id.in_(found)
        )
    ):
        lists[record_id].add(name)
    events: dict[str, list[EventSnapshot]] = {record_id: [] for record_id in found}
    names = None if event_names is None else list(event_names)
    if names != []:
        stmt = select(Event).where(Event.object_type == object_type, Event.record_id.in_(found))
        if names is not None:
            stmt = stmt.where(Event.name.in_(names))
        for e in session.scalars(stmt.order_by(Event.occurred_at, Event.id)):
            events[e.record_id].append(
                EventSnapshot(name=e.name, occurred_at=e.occurred_at, properties=dict(e.properties))
            )
    return {
        record_id: RecordSnapshot(
            object_type=object_type,
            id=record_id,
            properties=dict(properties),
            lists=frozenset(lists[record_id]),
            events=events[record_id],
        )
        for record_id, properties in records
    }
