"""The store side of time sweeps, on migrated SQLite and PostgreSQL stores: the date index kept
by every record write, the watermark, and the index range scans the crossing selection makes."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from crmflow.conditions import time_terms
from crmflow.definitions._conditions import EventFilter, PropertyFilter
from crmflow.store import (
    CrossingRepository,
    Event,
    ListMembership,
    Record,
    RecordChange,
    RecordDate,
    RecordList,
    RecordRepository,
    StoreError,
    SweepConflict,
    SweepWindow,
    TimeSweepRepository,
    WorkflowNotFound,
    WorkflowRepository,
)
from crmflow.store._dates import date_rows

NOW = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
LONG_NAME = "p" * 200  # no condition can name it: never indexed, never in the way of a write


def index_of(session: Session) -> set[tuple[str, str, str, int]]:
    rows = session.execute(
        select(RecordDate.object_type, RecordDate.record_id, RecordDate.property, RecordDate.at)
    ).all()
    return {tuple(row) for row in rows}  # type: ignore[misc]


def expected_index(session: Session) -> set[tuple[str, str, str, int]]:
    found = set()
    for object_type, record_id, properties in session.execute(
        select(Record.object_type, Record.id, Record.properties)
    ):
        for row in date_rows(object_type, record_id, properties):
            found.add((row["object_type"], row["record_id"], row["property"], row["at"]))
    return found


# ------------------------------------------------------------------------- the date index

DATE_VALUES = [
    "2026-01-01",
    "2026-01-01T00:00:00Z",  # the same instant as the line above: no index change
    "2026-01-01T00:00:00.999+00:00",
    "2026-01-01T01:00+01:00",
    "2026-02-30",  # not a date
    "9999-12-31T23:59:59-23:59",  # beyond what a datetime holds
    "0001-01-01",
    "lead",
    "2026",
    12,
    None,  # removes the property
    True,
]
NAMES = ["renewal_date", "last_activity", "x.y-z", "bad name", LONG_NAME]
IDS = ["ann", "bob", "chen"]

writes = st.one_of(
    st.tuples(
        st.just("upsert"),
        st.sampled_from(IDS),
        st.dictionaries(st.sampled_from(NAMES), st.sampled_from(DATE_VALUES), max_size=3),
    ),
    st.tuples(
        st.just("update"),
        st.sampled_from(IDS),
        st.dictionaries(st.sampled_from(NAMES), st.sampled_from(DATE_VALUES), max_size=3),
    ),
    st.tuples(
        st.just("upsert_many"),
        st.just(""),
        st.lists(
            st.tuples(
                st.sampled_from(IDS),
                st.dictionaries(st.sampled_from(NAMES), st.sampled_from(DATE_VALUES), max_size=2),
            ),
            max_size=3,
        ),
    ),
    st.tuples(st.just("delete"), st.sampled_from(IDS), st.just(None)),
)


def test_the_date_index_follows_every_write(sessions: sessionmaker[Session]) -> None:
    @settings(
        max_examples=100,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(transactions=st.lists(st.lists(writes, min_size=1, max_size=4), max_size=5))
    def check(transactions: list[list[tuple[str, str, Any]]]) -> None:
        with sessions.begin() as session:
            for table in (RecordDate, Event, ListMembership, RecordList, RecordChange, Record):
                session.execute(delete(table))
        for transaction in transactions:
            with sessions.begin() as session:
                records = RecordRepository(session)
                for kind, record_id, values in transaction:
                    if kind == "upsert":
                        records.upsert("contact", record_id, values, now=NOW)
                    elif kind == "update" and records.get("contact", record_id) is not None:
                        records.update("contact", record_id, values, now=NOW)
                    elif kind == "upsert_many":
                        records.upsert_many("contact", values, now=NOW)
                    elif kind == "delete":
                        records.delete("contact", record_id, now=NOW)
                    # Read back inside the transaction too: the index is written with the
                    # record, not at commit.
                    assert index_of(session) == expected_index(session)
            with sessions() as session:
                assert index_of(session) == expected_index(session)

    check()


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("2026-01-01", "2026-02-30", set()),
        ("2026-02-30", "2026-01-01", {("contact", "chen", "renewal_date", 1767225600)}),
        ("2026-01-01", "2026-01-02", {("contact", "chen", "renewal_date", 1767312000)}),
    ],
)
def test_a_record_written_twice_in_one_batch_keeps_its_last_value_indexed(
    sessions: sessionmaker[Session], first: str, second: str, expected: set[Any]
) -> None:
    # An import with the same id on two lines: the second line wins, in the index too.
    with sessions.begin() as session:
        RecordRepository(session).upsert_many(
            "contact",
            [("chen", {"renewal_date": first}), ("chen", {"renewal_date": second})],
            now=NOW,
        )
    with sessions() as session:
        assert index_of(session) == expected


def test_index_rows_hold_the_instant_conditions_compare(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        RecordRepository(session).upsert(
            "contact",
            "ann",
            {
                "a": "2026-01-01",
                "b": "2026-01-01T01:00:30.75+01:00",
                "c": "9999-12-31T23:59:59-23:59",
                "d": "not a date",
                LONG_NAME: "2026-01-01",
                "with space": "2026-01-01",
            },
            now=NOW,
        )
    with sessions() as session:
        assert index_of(session) == {
            ("contact", "ann", "a", 1767225600),
            ("contact", "ann", "b", 1767225630),
            ("contact", "ann", "c", 253402387139),
        }


def test_a_refused_write_leaves_no_index_row(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(StoreError), sessions.begin() as session:
        RecordRepository(session).upsert_many(
            "contact",
            [("ann", {"a": "2026-01-01"}), ("bob", {"a": "2026-01-01", "b": "\x00"})],
            now=NOW,
        )
    with sessions() as session:
        assert index_of(session) == set()


# ----------------------------------------------------------------------------- watermarks


def publish(session: Session, key: str) -> None:
    WorkflowRepository(session).publish(
        key=key,
        name=key,
        object_type="contact",
        trigger="criteria",
        definition={"key": key},
        source=f"key: {key}",
        source_name=f"{key}.yaml",
        now=NOW,
    )


def test_a_watermark_moves_forward_only_and_windows_follow_each_other(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        publish(session, "reengage")
        sweeps = TimeSweepRepository(session)
        assert sweeps.swept_to("reengage") is None
        assert sweeps.claim("reengage", until=NOW) is None  # never started: nothing to sweep
        assert sweeps.begin_at("reengage", NOW) == NOW
        assert sweeps.begin_at("reengage", NOW - timedelta(hours=1)) == NOW  # never back
    # A sweep that was down for 2.5 hours catches up in steps of an hour at most: windows that
    # follow each other exactly, none twice.
    until = NOW + timedelta(hours=2, minutes=30)
    windows: list[SweepWindow] = []
    while True:
        with sessions.begin() as session:
            sweeps = TimeSweepRepository(session)
            window = sweeps.claim("reengage", until=until, max_span=timedelta(hours=1))
            if window is None:
                break
            windows.append(window)
            sweeps.advance(window)
    assert [(w.start, w.end) for w in windows] == [
        (NOW, NOW + timedelta(hours=1)),
        (NOW + timedelta(hours=1), NOW + timedelta(hours=2)),
        (NOW + timedelta(hours=2), until),
    ]
    with sessions() as session:
        assert TimeSweepRepository(session).swept_to("reengage") == until
    with sessions.begin() as session:
        # Activated again later: what time did meanwhile is not swept.
        later = until + timedelta(days=1)
        assert TimeSweepRepository(session).begin_at("reengage", later) == later


def test_a_watermark_needs_its_workflow(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(WorkflowNotFound), sessions.begin() as session:
        TimeSweepRepository(session).begin_at("nope", NOW)


def test_a_window_done_by_another_sweep_cannot_be_done_again(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        publish(session, "reengage")
        TimeSweepRepository(session).begin_at("reengage", NOW)
    with sessions.begin() as session:
        stale = TimeSweepRepository(session).claim("reengage", until=NOW + timedelta(minutes=1))
    assert stale is not None
    with sessions.begin() as session:
        sweeps = TimeSweepRepository(session)
        window = sweeps.claim("reengage", until=NOW + timedelta(minutes=2))
        assert window is not None and window.start == NOW
        sweeps.advance(window)
    with pytest.raises(SweepConflict), sessions.begin() as session:
        TimeSweepRepository(session).advance(stale)
    with sessions() as session:
        assert TimeSweepRepository(session).swept_to("reengage") == NOW + timedelta(minutes=2)


def test_a_concurrent_sweep_waits_and_takes_the_next_window(
    sessions: sessionmaker[Session],
) -> None:
    # The claim locks the watermark: a second sweep started meanwhile waits for the first to
    # commit, then sweeps from where it ended.
    with sessions.begin() as session:
        publish(session, "reengage")
        TimeSweepRepository(session).begin_at("reengage", NOW)
    second: list[SweepWindow | None] = []

    def sweep_later() -> None:
        with sessions.begin() as session:
            sweeps = TimeSweepRepository(session)
            window = sweeps.claim("reengage", until=NOW + timedelta(minutes=2))
            if window is not None:
                sweeps.advance(window)
            second.append(window)

    with sessions.begin() as session:
        sweeps = TimeSweepRepository(session)
        first = sweeps.claim("reengage", until=NOW + timedelta(minutes=1))
        assert first is not None
        thread = threading.Thread(target=sweep_later)
        thread.start()
        sweeps.advance(first)
    thread.join()
    minute = timedelta(minutes=1)
    assert second == [SweepWindow("reengage", NOW + minute, NOW + 2 * minute)]


# ------------------------------------------------------------------ crossings, by index


def test_crossings_are_selected_by_index_range_scans(sessions: sessionmaker[Session]) -> None:
    terms = [
        *time_terms(PropertyFilter(property="last_activity", op="more_than_ago", value="30d")),
        *time_terms(EventFilter(event="email_opened", within=timedelta(days=90))),
    ]
    # 2,000 contacts active over the last year, each with an email opened: planners that know
    # the tables (analyzed, as autovacuum or a sweep's first runs leave them) pick range scans.
    with sessions.begin() as session:
        RecordRepository(session).upsert_many(
            "contact",
            [
                (f"c{i:04d}", {"last_activity": (NOW - timedelta(hours=4 * i)).isoformat()})
                for i in range(2000)
            ],
            now=NOW,
        )
        session.execute(
            insert(Event),
            [
                {
                    "object_type": "contact",
                    "record_id": f"c{i:04d}",
                    "name": name,
                    "occurred_at": NOW - timedelta(hours=4 * i + 1),
                    "properties": {},
                }
                for i in range(2000)
                for name in ("email_opened", "page_viewed")
            ],
        )
    with sessions.begin() as session:
        session.execute(text("ANALYZE"))
    with sessions.begin() as session:
        crossings = CrossingRepository(session)
        # c0180 was last active 720 hours (30 days) before NOW: more than 30 days ago from one
        # second later on.
        assert crossings.crossing_ids(
            terms, object_type="contact", since=NOW, until=NOW + timedelta(seconds=1)
        ) == ["c0180"]
        # c0540 opened an email 2,161 hours ago: 90 days ago one hour and a microsecond later.
        opened = NOW - timedelta(hours=4 * 540 + 1) + timedelta(days=90)
        assert crossings.crossing_ids(
            terms, object_type="contact", since=opened, until=opened + timedelta(microseconds=1)
        ) == ["c0540"]
        assert (
            crossings.crossing_ids(
                terms, object_type="contact", since=opened - timedelta(seconds=1), until=opened
            )
            == []
        )
        plan = explain(session, crossings, terms, NOW, NOW + timedelta(seconds=60))
    assert "ix_record_dates_type_property_at" in plan, plan
    assert "ix_events_type_name_time" in plan, plan


def explain(
    session: Session,
    crossings: CrossingRepository,
    terms: Any,
    since: datetime,
    until: datetime,
) -> str:
    """The query plan of a selection."""
    captured: list[Any] = []
    original = session.scalars

    def capture(statement: Any, *args: Any, **kwargs: Any) -> Any:
        captured.append(statement)
        return original(statement, *args, **kwargs)

    session.scalars = capture  # type: ignore[method-assign]
    try:
        crossings.crossing_ids(terms, object_type="contact", since=since, until=until)
    finally:
        session.scalars = original  # type: ignore[method-assign]
    (statement,) = captured
    dialect = session.get_bind().dialect
    sql = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    if dialect.name == "sqlite":
        rows = session.execute(text(f"EXPLAIN QUERY PLAN {sql}")).all()
        return "\n".join(str(row[-1]) for row in rows)
    return "\n".join(row[0] for row in session.execute(text(f"EXPLAIN {sql}")))
