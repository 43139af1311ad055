"""The request's store transaction: begun at its first statement, committed only by the route,
and (SQLite) the process's writers taking turns on a lock rather than polling SQLite's."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from api_servers import Store
from sqlalchemy import text

from crmflow.api import UnitOfWork
from crmflow.store import RecordRepository

NOW = datetime(2026, 12, 2, tzinfo=UTC)


def test_the_write_turn_is_held_from_the_first_statement_to_the_commit(store: Store) -> None:
    lock = threading.Lock()
    unit = UnitOfWork(store.engine, read_only=False, write_lock=lock)
    session = unit.session()
    assert not lock.locked()  # no statement yet: nothing begun, nobody waits for this request
    RecordRepository(session).upsert("contact", "ann", {"a": 1}, now=NOW)
    assert lock.locked()
    with unit.sessions.begin() as joined:  # a savepoint of the same transaction
        RecordRepository(joined).upsert("contact", "bob", {}, now=NOW)
    unit.commit()
    assert not lock.locked()
    with store.sessions() as check:
        assert RecordRepository(check).get("contact", "bob") is not None


def test_the_write_turn_is_given_back_when_the_request_fails(store: Store) -> None:
    lock = threading.Lock()
    unit = UnitOfWork(store.engine, read_only=False, write_lock=lock)
    with pytest.raises(RuntimeError, match="the route commits it"):
        RecordRepository(unit.session()).upsert("contact", "ann", {}, now=NOW)
        unit.session().commit()
    assert lock.locked()
    unit.close()
    assert not lock.locked()
    with store.sessions() as check:
        assert RecordRepository(check).get("contact", "ann") is None


def test_reading_requests_take_no_write_turn(store: Store) -> None:
    lock = threading.Lock()
    unit = UnitOfWork(store.engine, read_only=True, write_lock=lock)
    assert unit.session().execute(text("SELECT 1")).scalar() == 1
    assert not lock.locked()
    unit.close()


def test_a_unit_never_used_commits_nothing(store: Store) -> None:
    lock = threading.Lock()
    unit = UnitOfWork(store.engine, read_only=False, write_lock=lock)
    unit.commit()
    unit.close()
    assert not lock.locked()
