"""The change feed: one row per change of a record, appended by the record, list and event
repositories in the caller's transaction, so a change and its feed entry commit together or not
at all. The dispatcher reads it in order and marks each entry once acted upon."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ._tables import RecordChange

# Kinds of change.
CREATED, UPDATED, DELETED = "created", "updated", "deleted"
LISTED, UNLISTED, EVENT = "listed", "unlisted", "event"


def changed_properties(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The properties that differ, each with its previous value (None: it was absent)."""
    return {
        name: before.get(name)
        for name in sorted(before.keys() | after.keys())
        if before.get(name) != after.get(name)
    }


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
    ) -> None:
        self.session.add(
            RecordChange(
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

    def pending(self, *, limit: int) -> list[RecordChange]:
        """Changes not yet dispatched, oldest first (so a record's changes keep their order)."""
        return list(
            self.session.scalars(
                select(RecordChange)
                .where(RecordChange.dispatched_at.is_(None))
                .order_by(RecordChange.id)
                .limit(limit)
            )
        )

    def mark_dispatched(self, change_ids: Iterable[int], *, now: datetime) -> None:
        ids = list(change_ids)
        if ids:
            self.session.execute(
                update(RecordChange).where(RecordChange.id.in_(ids)).values(dispatched_at=now)
            )

    def mark_attempt(self, change_id: int, error: str) -> None:
        self.session.execute(
            update(RecordChange)
            .where(RecordChange.id == change_id)
            .values(attempts=RecordChange.attempts + 1, error=error[:2000])
        )

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
