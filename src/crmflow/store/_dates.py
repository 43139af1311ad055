"""The date index (`record_dates`): the instant of each date value of each record, kept in step
with the records by `RecordRepository`, in the transaction of every write.

A row holds what the conditions compare (`conditions.plans.date_epoch`: epoch seconds, UTC,
fraction dropped; a date alone is its midnight UTC), so a range scan over `(object_type,
property, at)` finds exactly the records whose time-relative terms change in a window. Only
property names a condition can name are indexed: a store may hold others (written by an older
version or a custom handler), that no condition can read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, delete, insert, update
from sqlalchemy.orm import Session

from crmflow.conditions.plans import date_epoch
from crmflow.definitions import PROPERTY_NAME_MAX_LENGTH, PROPERTY_NAME_PATTERN

from ._tables import RecordDate

_NAME = re.compile(PROPERTY_NAME_PATTERN)
_TABLE = cast(Table, RecordDate.__table__)
_KEY = and_(
    _TABLE.c.object_type == bindparam("k_object_type"),
    _TABLE.c.record_id == bindparam("k_record_id"),
    _TABLE.c.property == bindparam("k_property"),
)
# Built once: a statement's cache key costs more than running it on a small batch.
_INSERT = insert(_TABLE)
_MOVE = update(_TABLE).where(_KEY).values(at=bindparam("k_at"))
_REMOVE = delete(_TABLE).where(_KEY)


def indexed(name: str, value: Any) -> int | None:
    """The epoch second the index holds for this property value, or None (not a date, or a
    name no condition can use)."""
    if not _maybe_date(value) or not _nameable(name):
        return None
    return date_epoch(value)


def _maybe_date(value: Any) -> bool:
    # Cheap tests first: this runs on every written value, and most are not dates.
    return type(value) is str and len(value) >= 10 and value[4] == "-"


@lru_cache(maxsize=4096)
def _nameable(name: str) -> bool:
    """Whether a condition can name this property (a store may hold others)."""
    return len(name) <= PROPERTY_NAME_MAX_LENGTH and _NAME.fullmatch(name) is not None


def date_rows(
    object_type: str, record_id: str, properties: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The index rows of a record with these properties."""
    return [
        _row(object_type, record_id, name, at)
        for name, value in properties.items()
        if _maybe_date(value) and _nameable(name) and (at := date_epoch(value)) is not None
    ]


Key = tuple[str, str, str]  # object_type, record_id, property


class DateRows:
    """The index changes that writes call for, gathered so that a batch of writes applies them
    in at most three statements (after the records themselves are flushed: rows refer to them).

    Per index key it keeps the instant the store holds (as the first write of the batch saw
    it) and the latest one written: a batch that writes a record twice (an import with the same
    id on two lines) applies only the net change, whatever the order of its writes.
    """

    def __init__(self) -> None:
        self.keys: dict[Key, tuple[int | None, int | None]] = {}

    def _write(self, key: Key, old: int | None, new: int | None) -> None:
        stored = self.keys[key][0] if key in self.keys else old
        self.keys[key] = (stored, new)

    def created(self, object_type: str, record_id: str, properties: Mapping[str, Any]) -> None:
        for row in date_rows(object_type, record_id, properties):
            self._write((object_type, record_id, row["property"]), None, row["at"])

    def changed(
        self,
        object_type: str,
        record_id: str,
        before: Mapping[str, Any],
        after: Mapping[str, Any],
        names: Iterable[str],
    ) -> None:
        """The record's properties `names` went from their value in `before` to `after`."""
        for name in names:
            old, new = indexed(name, before.get(name)), indexed(name, after.get(name))
            if old != new:
                self._write((object_type, record_id, name), old, new)

    def apply(self, session: Session) -> None:
        """Write the gathered changes in the session's transaction, and forget them."""
        added, moved, removed = [], [], []
        for (object_type, record_id, name), (stored, latest) in self.keys.items():
            if stored == latest:
                continue
            if latest is None:
                removed.append(_key(object_type, record_id, name))
            elif stored is None:
                added.append(_row(object_type, record_id, name, latest))
            else:
                moved.append({**_key(object_type, record_id, name), "k_at": latest})
        for statement, rows in ((_REMOVE, removed), (_MOVE, moved), (_INSERT, added)):
            if rows:
                session.execute(statement, rows)
        self.keys = {}


def _row(object_type: str, record_id: str, name: str, at: int) -> dict[str, Any]:
    return {"object_type": object_type, "record_id": record_id, "property": name, "at": at}


def _key(object_type: str, record_id: str, name: str) -> dict[str, Any]:
    return {"k_object_type": object_type, "k_record_id": record_id, "k_property": name}
