"""The SQL selection of crossings (`CrossingRepository`) against the pure `crossed`, on SQLite
and PostgreSQL: for generated records, conditions and windows, SQL selects exactly the records
for which some time term of the condition changes in the window.

Records are written through `RecordRepository`, so the date index the selection reads is the one
the repository keeps; events are inserted as they are.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from condition_helpers import NOW, OBJECT_TYPE, CondStore, condition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert
from sqlalchemy.orm import Session
from test_condition_agreement import trees
from test_condition_time import single_terms, windows, worlds

from crmflow.conditions import RecordSnapshot, crossed, thresholds, time_terms
from crmflow.store import (
    CrossingRepository,
    Event,
    ListMembership,
    Record,
    RecordChange,
    RecordDate,
    RecordList,
    RecordRepository,
)


def load(store: CondStore, world: list[RecordSnapshot]) -> None:
    """Replace the store's content by these records (through the repository) and events."""
    with Session(store.engine) as session, session.begin():
        for table in (RecordDate, Event, ListMembership, RecordList, RecordChange, Record):
            session.execute(delete(table))
        RecordRepository(session).upsert_many(
            OBJECT_TYPE, [(r.id, r.properties) for r in world], now=NOW
        )
        events = [
            {
                "object_type": r.object_type,
                "record_id": r.id,
                "name": e.name,
                "occurred_at": e.occurred_at,
                "properties": e.properties,
            }
            for r in world
            for e in r.events
        ]
        if events:
            session.execute(insert(Event), events)


def crossing_ids(store: CondStore, cond: Any, t0: Any, t1: Any, **page: Any) -> list[str]:
    with Session(store.engine) as session:
        return CrossingRepository(session).crossing_ids(
            time_terms(cond), object_type=OBJECT_TYPE, since=t0, until=t1, **page
        )


conditions = st.one_of(
    trees,
    single_terms,
    single_terms,
    st.lists(single_terms, min_size=2, max_size=4).map(lambda terms: {"any": terms}),
    st.lists(single_terms, min_size=2, max_size=4).map(lambda terms: {"all": terms}),
)


@pytest.mark.parametrize("store_name", ["sqlite", "postgresql"])
def test_sql_selects_exactly_the_records_that_cross(
    request: pytest.FixtureRequest, store_name: str
) -> None:
    store: CondStore = request.getfixturevalue(
        f"{'pg' if store_name == 'postgresql' else 'sqlite'}_store"
    )

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(world=worlds(), trees_data=st.lists(conditions, min_size=1, max_size=3), data=st.data())
    def check(
        world: list[RecordSnapshot], trees_data: list[dict[str, Any]], data: st.DataObject
    ) -> None:
        load(store, world)
        for tree in trees_data:
            cond = condition(tree)
            marks = sorted({t for r in world for t in thresholds(cond, r)})
            t0, t1 = windows(data, marks)
            expected = sorted(r.id for r in world if crossed(cond, r, t0, t1))
            assert crossing_ids(store, cond, t0, t1) == expected, (tree, t0, t1)
            # Keyset pages of two give the same ids.
            paged: list[str] = []
            while page := crossing_ids(
                store, cond, t0, t1, after=paged[-1] if paged else None, limit=2
            ):
                paged.extend(page)
            assert paged == expected

    check()


@pytest.mark.parametrize("store_name", ["sqlite", "postgresql"])
def test_a_window_that_is_empty_or_reversed_selects_nothing(
    request: pytest.FixtureRequest, store_name: str
) -> None:
    store: CondStore = request.getfixturevalue(
        f"{'pg' if store_name == 'postgresql' else 'sqlite'}_store"
    )
    world = [RecordSnapshot(object_type=OBJECT_TYPE, id="r", properties={"a": "2026-03-01"})]
    load(store, world)
    cond = condition({"property": "a", "op": "within_last", "value": "1d"})
    turn = thresholds(cond, world[0])[0]
    assert crossing_ids(store, cond, turn - timedelta(seconds=1), turn) == ["r"]
    assert crossing_ids(store, cond, turn, turn) == []
    assert crossing_ids(store, cond, turn, turn - timedelta(seconds=1)) == []
    assert crossing_ids(store, condition({"in_list": "vip"}), turn, turn) == []
