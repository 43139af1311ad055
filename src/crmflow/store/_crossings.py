"""The records whose time-relative terms change in a window of time, selected in SQL.

For each term (`crmflow.conditions.TimeTerm`) and each of its offsets, a change in the window
(since, until] means an anchor in a range (`TimeTerm.anchor_ranges`): a date value in
`record_dates`, or an event occurrence, found by a range scan of `(object_type, property, at)`
or `(object_type, name, occurred_at)`. The cost grows with the records that cross, not with
the records stored.

An event term changes when its `min_count`-th latest matching occurrence ages out, not when any
occurrence does: the candidates an occurrence range gives are kept only where the event filter
held at `since` and no longer holds at `until` (the compiled filter, on the candidates only).
The selection is therefore exactly the records for which `crmflow.conditions.crossed` holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Select, not_, select, union_all
from sqlalchemy.orm import Session

from crmflow.conditions import MAX_US, MIN_US, SECOND_US, TimeTerm, from_micros
from crmflow.definitions import EventFilter

from ._selection import compile_condition
from ._tables import Event, Record, RecordDate

# No date value lies beyond these epoch seconds (year 1 to 9999, offsets of up to a day): a
# range is clipped to them, so that no bound overflows a 64-bit integer.
_SECONDS_LIMIT = 2**40


class CrossingRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def crossing_ids(
        self,
        terms: Iterable[TimeTerm],
        *,
        object_type: str,
        since: datetime,
        until: datetime,
        after: str | None = None,
        limit: int | None = None,
    ) -> list[str]:
        """Ids of the records of `object_type` for which some term changes in (since, until],
        in id order; with `after` and `limit`, one keyset page of them."""
        parts: list[Select[Any]] = []
        for term in dict.fromkeys(terms):
            if term.kind == "property":
                parts.extend(self._property_crossings(term, object_type, since, until, after))
            else:
                parts.extend(self._event_crossings(term, object_type, since, until, after))
        if not parts:
            return []
        # A record may cross by several terms, or have several occurrences in a range: one
        # DISTINCT over all the parts.
        found = union_all(*parts).subquery()
        query = select(found.c.record_id).distinct().order_by(found.c.record_id).limit(limit)
        return list(self.session.scalars(query))

    def _property_crossings(
        self, term: TimeTerm, object_type: str, since: datetime, until: datetime, after: str | None
    ) -> list[Select[Any]]:
        parts = []
        for low, high in term.anchor_ranges(since, until):
            # Values are whole seconds: the seconds whose instant lies in [low, high].
            first = max(-(-low // SECOND_US), -_SECONDS_LIMIT)
            last = min(high // SECOND_US, _SECONDS_LIMIT)
            if first > last:
                continue
            query = select(RecordDate.record_id.label("record_id")).where(
                RecordDate.object_type == object_type,
                RecordDate.property == term.name,
                RecordDate.at.between(first, last),
            )
            parts.append(query if after is None else query.where(RecordDate.record_id > after))
        return parts

    def _event_crossings(
        self, term: TimeTerm, object_type: str, since: datetime, until: datetime, after: str | None
    ) -> list[Select[Any]]:
        assert isinstance(term.filter, EventFilter)
        dialect = self.session.get_bind().dialect.name
        held = compile_condition(term.filter, now=since, dialect_name=dialect)
        holds = compile_condition(term.filter, now=until, dialect_name=dialect)
        parts = []
        for low, high in term.anchor_ranges(since, until):
            first, last = from_micros(max(low, MIN_US)), from_micros(min(high, MAX_US))
            if first is None or last is None or first > last:
                continue
            occurrences = select(Event.record_id).where(
                Event.object_type == object_type,
                Event.name == term.name,
                Event.occurred_at.between(first, last),
            )
            if after is not None:
                occurrences = occurrences.where(Event.record_id > after)
            candidates = occurrences.subquery()
            parts.append(
                select(Record.id.label("record_id"))
                .join(candidates, Record.id == candidates.c.record_id)
                .where(Record.object_type == object_type, held, not_(holds))
            )
        return parts
