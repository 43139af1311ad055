"""Helpers shared by the condition tests: a fixed `now`, record snapshots, and a store that
loads records in bulk and runs `select_matching`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import Engine, delete, insert

from crmflow.conditions import RecordSnapshot
from crmflow.definitions._conditions import Condition
from crmflow.store import Event, ListMembership, Record, RecordList, select_matching

NOW = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)
"""A fixed `now`, with a fraction of a second to exercise the flooring to whole seconds."""
OBJECT_TYPE = "contact"


@dataclass
class CondStore:
    engine: Engine
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = self.engine.dialect.name

    def load(self, snapshots: Iterable[RecordSnapshot]) -> None:
        """Replace the whole store content by these records, in a few bulk statements."""
        snapshots = list(snapshots)
        records = [
            {
                "object_type": s.object_type,
                "id": s.id,
                "properties": s.properties,
                "created_at": NOW,
                "updated_at": NOW,
            }
            for s in snapshots
        ]
        lists = [
            {"name": n, "object_type": OBJECT_TYPE, "created_at": NOW}
            for n in sorted({n for s in snapshots for n in s.lists})
        ]
        members = [
            {"list_name": n, "object_type": s.object_type, "record_id": s.id, "added_at": NOW}
            for s in snapshots
            for n in s.lists
        ]
        events = [
            {
                "object_type": s.object_type,
                "record_id": s.id,
                "name": e.name,
                "occurred_at": e.occurred_at,
                "properties": e.properties,
            }
            for s in snapshots
            for e in s.events
        ]
        with self.engine.begin() as conn:
            for table in (Event, ListMembership, RecordList, Record):
                conn.execute(delete(table))
            for table, rows in (
                (Record, records),
                (RecordList, lists),
                (ListMembership, members),
                (Event, events),
            ):
                if rows:
                    conn.execute(insert(table), rows)

    def matching(self, condition: Condition, *, now: datetime = NOW) -> set[str]:
        query = select_matching(condition, object_type=OBJECT_TYPE, now=now, dialect_name=self.name)
        with self.engine.connect() as conn:
            return set(conn.scalars(query))


def snapshot(
    record_id: str, properties: Mapping[str, Any] | None = None, **kw: Any
) -> RecordSnapshot:
    return RecordSnapshot(
        object_type=OBJECT_TYPE, id=record_id, properties=dict(properties or {}), **kw
    )


_CONDITION = TypeAdapter(Condition)


def condition(data: Any) -> Condition:
    """A condition model from its YAML-like form."""
    return _CONDITION.validate_python(data)
