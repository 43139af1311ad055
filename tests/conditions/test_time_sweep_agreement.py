"""The whole time sweep against the pure definitions, on SQLite and PostgreSQL: for generated
records, criteria and windows, the "time passed" changes the sweep appends are exactly the
(record, instant) pairs at which the criteria's value changes in the window (`thresholds`, then
`evaluate` just before and at each instant), whatever the page size makes it do (windows halved,
pages within an indivisible second), and a second sweep of the same window appends nothing."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from condition_helpers import OBJECT_TYPE, CondStore, condition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session, sessionmaker
from test_condition_time import windows, worlds
from test_time_agreement import conditions, load

from crmflow.activities.time_sweep import SweepTarget, TimeSweeper
from crmflow.conditions import RecordSnapshot, evaluate, thresholds, time_terms
from crmflow.definitions import condition_reads
from crmflow.store._tables import RecordChange, TimeSweep, Workflow

KEY = "swept"
US = timedelta(microseconds=1)


def expected(cond: Any, world: list[RecordSnapshot], t0: datetime, t1: datetime) -> list[Any]:
    return sorted(
        (r.id, moment)
        for r in world
        for moment in thresholds(cond, r, after=t0, until=t1)
        if evaluate(cond, r, now=moment - US) != evaluate(cond, r, now=moment)
    )


@pytest.mark.parametrize("store_name", ["sqlite", "postgresql"])
def test_the_sweep_appends_exactly_the_instants_the_criteria_change(
    request: pytest.FixtureRequest, store_name: str
) -> None:
    store: CondStore = request.getfixturevalue(
        f"{'pg' if store_name == 'postgresql' else 'sqlite'}_store"
    )
    sessions = sessionmaker(store.engine)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(world=worlds(), tree=conditions, page=st.sampled_from([1, 2, 500]), data=st.data())
    def check(world: list[RecordSnapshot], tree: dict[str, Any], page: int, data: Any) -> None:
        load(store, world)
        cond = condition(tree)
        marks = sorted({t for r in world for t in thresholds(cond, r)})
        t0, t1 = windows(data, marks)
        with Session(store.engine) as session, session.begin():
            session.execute(delete(TimeSweep))
            session.execute(delete(Workflow))
            session.execute(
                insert(Workflow).values(key=KEY, latest_version=1, active=True, activated_at=t0)
            )
        target = SweepTarget(
            key=KEY,
            object_type=OBJECT_TYPE,
            start=t0,
            activated_at=t0,
            enter=cond,
            terms=tuple(time_terms(cond)),
            events=condition_reads(cond).events,
        )
        sweeper = TimeSweeper(sessions, page=page, max_span=timedelta(days=365 * 100))
        counts = {"windows": 0, "candidates": 0, "changes": 0}
        assert sweeper.sweep_workflow(target, t1, counts)
        with Session(store.engine) as session:
            found = sorted(
                (c.record_id, c.occurred_at)
                for c in session.scalars(select(RecordChange).where(RecordChange.kind == "time"))
            )
            swept_to = session.scalar(select(TimeSweep.swept_to))
        want = expected(cond, world, t0, t1) if t1 > t0 else []
        assert found == want, (tree, t0, t1, page)
        assert swept_to == t1  # a reversed window: begun at t1, nothing to sweep
        # The same window again: nothing twice.
        with Session(store.engine) as session, session.begin():
            session.execute(update(TimeSweep).values(swept_to=t0))
        again = {"windows": 0, "candidates": 0, "changes": 0}
        assert sweeper.sweep_workflow(target, t1, again)
        assert again["changes"] == 0

    check()
