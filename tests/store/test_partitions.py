"""The change feed in partitions and lanes (migration 0010): a record's changes fall in one
partition; a bulk write's changes do not hold up an interactive write's; a record's changes
keep their order across lanes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import insert, text
from sqlalchemy.orm import Session, sessionmaker

from crmflow.store import (
    BULK,
    INTERACTIVE,
    ChangeRepository,
    ListRepository,
    Record,
    RecordRepository,
    create_session_factory,
    create_store_engine,
    upgrade_database,
)
from crmflow.store._engine import alembic_config
from crmflow.store._tables import CHANGE_BUCKETS, change_bucket

NOW = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
LATER = datetime(2026, 12, 3, tzinfo=UTC)


def pending(sessions: sessionmaker[Session], limit: int = 1000, partition=(0, 1)):
    with sessions() as session:
        return [
            (c.record_id, c.kind, c.bulk)
            for c in ChangeRepository(session).pending(limit=limit, now=LATER, partition=partition)
        ]


def test_bucket_is_stable_and_spread():
    assert change_bucket("contact", "ann") == change_bucket("contact", "ann")
    buckets = {change_bucket("contact", f"c{i}") for i in range(2000)}
    assert len(buckets) > CHANGE_BUCKETS // 2
    assert all(0 <= b < CHANGE_BUCKETS for b in buckets)


def test_partitions_split_the_feed_by_record(sessions):
    with sessions.begin() as session:
        records = RecordRepository(session)
        records.upsert_many("contact", [(f"c{i}", {"n": i}) for i in range(60)], now=NOW)
        for i in range(0, 60, 3):
            records.upsert("contact", f"c{i}", {"n": -i - 1}, now=NOW)
    everything = pending(sessions)
    assert len(everything) == 80
    parts = [pending(sessions, partition=(n, 4)) for n in range(4)]
    assert sorted(x for part in parts for x in part) == sorted(everything)
    owners = {}
    for n, part in enumerate(parts):
        assert part, "every partition has some of 60 records"
        for record_id, _, _ in part:
            assert owners.setdefault(record_id, n) == n  # one partition per record
    # Each partition's changes in feed order, a record's creation before its update.
    for part in parts:
        seen = set()
        for record_id, kind, _ in part:
            assert kind == ("created" if record_id not in seen else "updated")
            seen.add(record_id)


def test_an_interactive_change_is_not_queued_behind_a_bulk_import(sessions):
    with sessions.begin() as session:
        records = RecordRepository(session)
        records.upsert_many(
            "contact", [(f"bulk{i:03d}", {"n": i}) for i in range(300)], now=NOW, bulk=True
        )
        # Another record, written alone: a list join (suppression, say) and an update.
        records.upsert("contact", "ann", {"n": 1}, now=NOW)
        ListRepository(session).ensure("blocked", "contact", now=NOW)
        ListRepository(session).add("blocked", "contact", "ann", now=NOW)
        # A record of the import written again alone: it waits behind its bulk change.
        records.upsert("contact", "bulk299", {"n": -1}, now=NOW)
    first = pending(sessions, limit=10)
    assert ("ann", "created", False) in first and ("ann", "listed", False) in first
    assert ("bulk299", "updated", False) not in first
    assert [r for r, _, bulk in first if bulk] == [f"bulk{i:03d}" for i in range(10)]
    everything = pending(sessions)
    assert everything.index(("bulk299", "created", True)) < everything.index(
        ("bulk299", "updated", False)
    )


def test_the_migration_gives_pending_changes_their_bucket(store_url):
    """Changes written before 0010 (bucket 0 by default) get their record's bucket."""
    engine = create_store_engine(store_url)
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0009")
    moment = datetime(2026, 12, 1, tzinfo=UTC)
    with engine.begin() as connection:
        connection.execute(
            insert(Record.__table__),
            [
                {
                    "object_type": "contact",
                    "id": "ann",
                    "properties": {},
                    "created_at": moment,
                    "updated_at": moment,
                }
            ],
        )
        connection.execute(
            text(
                "INSERT INTO record_changes (object_type, record_id, kind, properties, before, "
                "occurred_at, attempts) VALUES ('contact', 'ann', 'created', '[]', '{}', "
                ":at, 0)"
            ),
            {"at": moment},
        )
    upgrade_database(engine)
    with create_session_factory(engine)() as session:
        (change,) = ChangeRepository(session).pending(limit=10, now=LATER)
        assert change.bucket == change_bucket("contact", "ann") != 0
        assert change.bulk is False
    engine.dispose()


def test_the_two_lanes_keep_a_records_changes_in_order(sessions):
    """Two loops take the lanes at once: neither may take a record's change while an earlier
    change of that record waits in the other lane."""
    with sessions.begin() as session:
        records = RecordRepository(session)
        records.upsert("contact", "ann", {"n": 1}, now=NOW)  # interactive, then imported
        records.upsert_many("contact", [("ann", {"n": 2}), ("bob", {"n": 1})], now=NOW, bulk=True)
        records.upsert("contact", "bob", {"n": 2}, now=NOW)  # imported, then interactive

    def lane(name: str) -> list[tuple[str, str]]:
        with sessions() as session:
            return [
                (c.record_id, c.kind)
                for c in ChangeRepository(session).pending(limit=100, now=LATER, lane=name)
            ]

    assert lane(INTERACTIVE) == [("ann", "created")]
    assert lane(BULK) == [("bob", "created")]


def test_a_lane_read_can_leave_out_the_changes_a_batch_in_flight_holds(sessions):
    """The dispatcher reads its next batch while the current one is in flight: the held
    changes are left out by the query, and the limit counts only the others."""
    with sessions.begin() as session:
        RecordRepository(session).upsert_many(
            "contact", [(f"c{i}", {"n": i}) for i in range(10)], now=NOW, bulk=True
        )
    with sessions() as session:
        changes = ChangeRepository(session)
        first = changes.pending(limit=4, now=LATER, lane=BULK)
        held = [c.id for c in first]
        second = changes.pending(limit=4, now=LATER, lane=BULK, skip=held)
        assert [c.record_id for c in first] == ["c0", "c1", "c2", "c3"]
        assert [c.record_id for c in second] == ["c4", "c5", "c6", "c7"]
        assert changes.pending(limit=4, now=LATER, lane=INTERACTIVE, skip=held) == []
        with pytest.raises(ValueError, match="one lane"):
            changes.pending(limit=4, now=LATER, skip=held)


def test_sqlite_reads_the_interactive_lane_from_its_partial_index(tmp_path):
    """An idle interactive lane is read several times a second while an import's changes wait
    in the bulk lane: the read must not walk the import's changes (SQLite uses a partial index
    only for a query that states its predicate)."""
    from crmflow.store._changes import _DUE_INTERACTIVE

    engine = create_store_engine(f"sqlite:///{tmp_path}/plan.db")
    upgrade_database(engine)
    statement = _DUE_INTERACTIVE.compile(dialect=engine.dialect)
    params = statement.construct_params(
        {"now": LATER.isoformat(), "limit": 10, "partition": 0, "partitions": 4}
    )
    args = [params[name] for name in statement.positiontup or ()]
    with engine.connect() as connection:
        plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", tuple(args)).all()
    engine.dispose()
    assert "USING INDEX ix_record_changes_pending_interactive" in plan[0][-1], plan
