"""Repositories against real SQLite and PostgreSQL stores, migrated by Alembic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from crmflow.store import (
    AlreadyEnrolled,
    Enrollment,
    EnrollmentRepository,
    EventRepository,
    ListRepository,
    Record,
    RecordChange,
    RecordDate,
    RecordRepository,
    StepWrite,
    StoreError,
    WorkflowRepository,
    load_snapshot,
)
from crmflow.store import _records as records_module

NOW = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


def publish(session: Session, key: str = "welcome", object_type: str = "contact") -> int:
    return (
        WorkflowRepository(session)
        .publish(
            key=key,
            name="Welcome",
            object_type=object_type,
            trigger="manual",
            definition={"key": key},
            source="key: welcome",
            source_name="welcome.yaml",
            now=NOW,
        )
        .version
    )


def test_records_merge_and_null_removes_a_property(sessions):
    with sessions.begin() as session:
        records = RecordRepository(session)
        _, created = records.upsert("contact", "ann", {"a": 1, "b": "x"}, now=NOW)
        assert created
        record, created = records.upsert("contact", "ann", {"b": None, "c": True}, now=NOW)
        assert not created
        assert record.properties == {"a": 1, "c": True}
    with sessions() as session:
        record = RecordRepository(session).require("contact", "ann")
        assert record.properties == {"a": 1, "c": True}
        assert record.created_at == NOW


def test_bulk_upsert_counts_created_and_updated(sessions):
    with sessions.begin() as session:
        records = RecordRepository(session)
        assert records.upsert_many("contact", [("a", {"x": 1}), ("b", {"x": 2})], now=NOW) == (2, 0)
        assert records.upsert_many("contact", [("b", {"y": 3}), ("c", {})], now=NOW) == (1, 1)
        assert records.require("contact", "b").properties == {"x": 2, "y": 3}
        assert all(records.get("contact", i) is not None for i in ("a", "b", "c"))


def test_a_bulk_upsert_looks_existing_records_up_a_slice_at_a_time(sessions, monkeypatch):
    """One IN list of every id fails past 65,535 parameters on PostgreSQL: the lookup goes a
    slice at a time, and records in any slice are still found and updated, not created."""
    monkeypatch.setattr(records_module, "LOOKUP_SLICE", 3)
    with sessions.begin() as session:
        records = RecordRepository(session)
        assert records.upsert_many("contact", [(f"r{i}", {"x": i}) for i in range(7)], now=NOW)
        rows = [(f"r{i}", {"y": i}) for i in range(10)] + [("r0", {"z": 1})]
        assert records.upsert_many("contact", rows, now=NOW) == (3, 8)
        assert records.require("contact", "r6").properties == {"x": 6, "y": 6}
        assert records.require("contact", "r0").properties == {"x": 0, "y": 0, "z": 1}
        assert records.require("contact", "r9").properties == {"y": 9}


def test_a_bulk_upsert_looks_existing_records_up_by_their_primary_key(sessions):
    """`upsert_many` finds the existing records by probing the primary key with object type
    and id, whatever the table's statistics say. On a new PostgreSQL store (never analyzed),
    `id IN (...)` was planned as a probe by object type alone, filtered: an import in one
    transaction then rescanned every record it had written for each batch of 1,000 (100,000
    records: 95 s instead of 4.5 s)."""
    with sessions.begin() as session:
        RecordRepository(session).upsert_many(
            "contact", [(f"p{i}", {"n": i}) for i in range(30)], now=NOW
        )
    with sessions.begin() as session:
        records = RecordRepository(session)
        records.upsert_many("contact", [(f"c{i}", {"n": i}) for i in range(5000)], now=NOW)
        lookup = records._lookup("contact", [f"c{i}" for i in range(4000, 5000)])
        sql = lookup.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
        postgres = session.get_bind().dialect.name == "postgresql"
        explain = "EXPLAIN " if postgres else "EXPLAIN QUERY PLAN "
        plan = "\n".join(str(row[-1]) for row in session.execute(text(explain + str(sql))))
        found = session.scalars(lookup).all()
    assert sorted(r.id for r in found) == sorted(f"c{i}" for i in range(4000, 5000))
    if postgres:
        probes = [line for line in plan.splitlines() if "Index Cond" in line]
        assert any("(id)::text =" in line for line in probes), plan
    else:
        assert "(object_type=? AND id=?)" in plan, plan


def test_a_bulk_upsert_writes_what_the_same_writes_one_by_one_write(sessions):
    """New records go in by multi-row INSERTs, not the ORM: the records, their change feed
    entries and their date index rows are those of the same writes made one at a time, an id
    written twice in the batch included (created, then changed; a write that changes nothing
    makes no entry). Records are given in any order."""
    writes = [
        ("old", {"n": 2, "renewal": "2027-01-01"}),
        ("ann", {"n": 1, "signed_up": "2026-10-01"}),
        ("bob", {}),
        ("ann", {"n": 2, "signed_up": None, "renewal": "2027-03-01"}),
        ("ann", {"n": 2}),
        ("old", {"n": 3}),
    ]

    def written(object_type: str, batch: bool) -> tuple[object, ...]:
        with sessions.begin() as session:
            records = RecordRepository(session)
            records.upsert(object_type, "old", {"n": 1}, now=NOW)
        with sessions.begin() as session:
            records = RecordRepository(session)
            if batch:
                assert records.upsert_many(object_type, writes, now=NOW) == (2, 4)
            else:
                for record_id, values in writes:
                    records.upsert(object_type, record_id, values, now=NOW)
        with sessions() as session:
            rows = session.execute(
                select(Record.id, Record.properties, Record.created_at, Record.updated_at)
                .where(Record.object_type == object_type)
                .order_by(Record.id)
            ).all()
            feed = session.execute(
                select(
                    RecordChange.record_id,
                    RecordChange.kind,
                    RecordChange.properties,
                    RecordChange.before,
                    RecordChange.occurred_at,
                )
                .where(RecordChange.object_type == object_type)
                # Each record's entries in order (the order across records is no contract).
                .order_by(RecordChange.record_id, RecordChange.id)
            ).all()
            dates = session.execute(
                select(RecordDate.record_id, RecordDate.property, RecordDate.at)
                .where(RecordDate.object_type == object_type)
                .order_by(RecordDate.record_id, RecordDate.property)
            ).all()
        return [tuple(r) for r in rows], [tuple(f) for f in feed], [tuple(d) for d in dates]

    one_by_one = written("contact", batch=False)
    assert written("company", batch=True) == one_by_one
    assert [kind for _, kind, *_ in one_by_one[1]] == [
        "created",
        "updated",
        "created",
        "created",
        "updated",
        "updated",
    ]


def test_lists_keep_one_object_type_and_deleting_a_record_removes_its_data(sessions):
    with sessions.begin() as session:
        RecordRepository(session).upsert("contact", "ann", {}, now=NOW)
        RecordRepository(session).upsert("deal", "d1", {}, now=NOW)
        lists = ListRepository(session)
        assert lists.add("vip", "contact", "ann", now=NOW)
        assert not lists.add("vip", "contact", "ann", now=NOW)
        with pytest.raises(StoreError, match="holds contact records"):
            lists.add("vip", "deal", "d1", now=NOW)
        EventRepository(session).add(
            "contact", "ann", "form_submitted", {"form": "demo"}, occurred_at=NOW
        )
    with sessions.begin() as session:
        snapshot = load_snapshot(session, "contact", "ann")
        assert snapshot is not None
        assert snapshot.lists == frozenset({"vip"})
        assert [e.name for e in snapshot.events] == ["form_submitted"]
        assert RecordRepository(session).delete("contact", "ann", now=NOW)
    with sessions() as session:
        assert ListRepository(session).members("vip") == []
        assert EventRepository(session).for_record("contact", "ann") == []
        assert load_snapshot(session, "contact", "ann") is None


def test_versions_are_immutable_and_numbered_and_object_type_is_fixed(sessions):
    with sessions.begin() as session:
        assert publish(session) == 1
        assert publish(session) == 2
        with pytest.raises(StoreError, match="cannot change object_type"):
            publish(session, object_type="deal")
    with sessions() as session:
        workflows = WorkflowRepository(session)
        assert [v.version for v in workflows.versions("welcome")] == [1, 2]
        assert workflows.version("welcome").version == 2
        assert workflows.require("welcome").active is False


def test_one_active_enrollment_per_record_is_enforced_by_the_store(sessions):
    with sessions.begin() as session:
        publish(session)
        enrollments = EnrollmentRepository(session)
        first = enrollments.create(
            key="welcome",
            version=1,
            object_type="contact",
            record_id="ann",
            source="manual",
            now=NOW,
        )
        assert (first.seq, first.temporal_workflow_id) == (1, "welcome:contact:ann:1")
        with pytest.raises(AlreadyEnrolled):
            enrollments.create(
                key="welcome",
                version=1,
                object_type="contact",
                record_id="ann",
                source="manual",
                now=NOW,
            )
    # Even a writer that skips the check cannot add a second running enrollment.
    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.add(
            Enrollment(
                workflow_key="welcome",
                version=1,
                object_type="contact",
                record_id="ann",
                seq=2,
                status="running",
                source="manual",
                enrolled_at=NOW,
                temporal_workflow_id="welcome:contact:ann:2",
            )
        )
    with sessions.begin() as session:
        enrollments = EnrollmentRepository(session)
        assert enrollments.set_status(first.id, "completed", ended_at=NOW, only_from=["running"])
        assert not enrollments.set_status(first.id, "paused", only_from=["running"])
        second = enrollments.create(
            key="welcome",
            version=1,
            object_type="contact",
            record_id="ann",
            source="manual",
            now=NOW,
        )
        assert second.seq == 2
        assert enrollments.count_by_status("welcome") == {"completed": 1, "running": 1}


def test_enrollments_of_a_page_are_created_in_one_statement_or_none(sessions):
    with sessions.begin() as session:
        publish(session)
        enrollments = EnrollmentRepository(session)
        ann = enrollments.create(
            key="welcome", version=1, object_type="contact", record_id="ann", source="m", now=NOW
        )
        enrollments.set_status(ann.id, "completed", ended_at=NOW)
        created = enrollments.create_many(
            key="welcome",
            version=1,
            object_type="contact",
            record_ids=["ann", "bob"],
            source="schedule",
            now=NOW,
        )
        assert [(e.record_id, e.seq, e.status, e.temporal_workflow_id) for e in created] == [
            ("ann", 2, "running", "welcome:contact:ann:2"),
            ("bob", 1, "running", "welcome:contact:bob:1"),
        ]
        assert all(e.id for e in created)
        assert set(enrollments.active_among("welcome", "contact", ["ann", "bob", "cy"])) == {
            "ann",
            "bob",
        }
        # One record of the page enrolled now: nothing of the page is inserted.
        with pytest.raises(AlreadyEnrolled):
            enrollments.create_many(
                key="welcome",
                version=1,
                object_type="contact",
                record_ids=["cy", "bob"],
                source="schedule",
                now=NOW,
            )
        assert enrollments.active_for("welcome", "contact", "cy") is None
        assert enrollments.count_by_status("welcome") == {"completed": 1, "running": 2}


def test_a_step_is_written_once_and_completed_in_place(sessions):
    with sessions.begin() as session:
        publish(session)
        enrollment = EnrollmentRepository(session).create(
            key="welcome",
            version=1,
            object_type="contact",
            record_id="ann",
            source="manual",
            now=NOW,
        )
        repo = EnrollmentRepository(session)
        started = StepWrite("wait", "delay", NOW, None, None, {})
        repo.write_step(enrollment.id, started)
        repo.write_step(enrollment.id, started)
        done = StepWrite("wait", "delay", NOW, NOW + timedelta(days=2), "waited", {})
        repo.write_step(enrollment.id, done)
        repo.write_step(enrollment.id, StepWrite("wait", "delay", NOW, NOW, "again", {}))
        [step] = repo.steps([enrollment.id])[enrollment.id]
        assert (step.finished_at, step.outcome) == (NOW + timedelta(days=2), "waited")


@pytest.mark.parametrize(
    ("object_type", "record_id", "values", "message"),
    [
        ("contact", "ann", {"score": float("nan")}, "NaN or Infinity"),
        ("contact", "ann", {"scores": [1, float("inf")]}, "NaN or Infinity"),
        ("contact", "ann", {"note": "a\x00b"}, "NUL"),
        ("contact", "ann", {"note": {"deep": "\udc80"}}, "lone surrogate"),
        ("contact", "ann", {"a\x00b": 1}, "NUL"),
        ("contact", "x" * 1200, {}, "at most 255"),
        ("contact", "a\x00b", {}, "control character"),
        ("Contact", "ann", {}, "object type"),
        ("contact", "ann", {f"p{n}": "x" * 60_000 for n in range(18)}, "at most 1,048,576"),
    ],
)
def test_records_refuse_what_would_break_the_store(
    sessions: sessionmaker[Session],
    object_type: str,
    record_id: str,
    values: dict[str, object],
    message: str,
) -> None:
    """Whoever writes (the CLI, a workflow action, a custom handler): a NaN makes SQLite's JSON
    functions fail on every record of the type, PostgreSQL refuses NUL, Temporal a workflow id
    over 1,000 bytes. Refused on create and on update; nothing is written."""
    with sessions.begin() as session:
        RecordRepository(session).upsert("contact", "ann", {"ok": 1}, now=NOW)
    with pytest.raises(StoreError, match=message), sessions.begin() as session:
        RecordRepository(session).upsert(object_type, record_id, values, now=NOW)
    if record_id == "ann" and object_type == "contact":
        with pytest.raises(StoreError, match=message), sessions.begin() as session:
            RecordRepository(session).update(object_type, record_id, values, now=NOW)
    with sessions() as session:
        assert RecordRepository(session).require("contact", "ann").properties == {"ok": 1}
        assert session.scalar(select(func.count()).select_from(Record)) == 1


def test_a_record_over_the_size_limit_may_still_shrink(sessions: sessionmaker[Session]) -> None:
    big = {f"p{n}": "x" * 60_000 for n in range(17)}
    with sessions.begin() as session:
        RecordRepository(session).upsert("contact", "ann", big, now=NOW)
    with pytest.raises(StoreError, match="1,048,576"), sessions.begin() as session:
        RecordRepository(session).update("contact", "ann", {"p17": "x" * 60_000}, now=NOW)
    with sessions.begin() as session:
        RecordRepository(session).update("contact", "ann", {"p0": None, "p1": "y"}, now=NOW)


def test_lists_and_events_refuse_bad_names_and_properties(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        RecordRepository(session).upsert("contact", "ann", {}, now=NOW)
    for name in ("", " webinar", "l" * 129, "a\x00b"):
        with pytest.raises(StoreError, match="list name"), sessions.begin() as session:
            ListRepository(session).add(name, "contact", "ann", now=NOW)
    for name, properties in [
        ("e" * 129, {}),
        ("opened\n", {}),
        ("opened", {"score": float("nan")}),
        ("opened", {"First Name": "Ann"}),
        ("opened", {"n": 2**64}),
        ("opened", {f"p{n}": "x" * 60_000 for n in range(5)}),
    ]:
        with pytest.raises(StoreError), sessions.begin() as session:
            EventRepository(session).add("contact", "ann", name, properties, occurred_at=NOW)
    with sessions() as session:
        assert ListRepository(session).lists_of("contact", "ann") == []
        assert EventRepository(session).for_record("contact", "ann") == []
