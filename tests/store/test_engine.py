"""The store engine: SQLite pragmas and transactions, URL handling."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, text

from crmflow.store._engine import (
    DEFAULT_DB_URL,
    create_session_factory,
    create_store_engine,
    store_url,
)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'store.db'}")
    yield engine
    engine.dispose()


def begins(engine: Engine) -> list[str]:
    """The BEGIN statements the engine sends from now on."""
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.startswith("BEGIN"):
            seen.append(statement)

    return seen


def test_default_url_is_a_local_sqlite_file() -> None:
    assert DEFAULT_DB_URL == "sqlite:///.crmflow/crmflow.db"


def test_sqlite_file_gets_its_directory_and_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "crmflow.db"
    engine = create_store_engine(f"sqlite:///{path}")
    assert path.parent.is_dir()
    with engine.connect() as conn:
        pragmas = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("foreign_keys", "journal_mode", "synchronous", "busy_timeout")
        }
    engine.dispose()
    assert pragmas == {
        "foreign_keys": 1,
        "journal_mode": "wal",
        "synchronous": 1,  # NORMAL
        "busy_timeout": 30000,
    }


def test_sqlite_in_memory_works() -> None:
    engine = create_store_engine("sqlite://")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_transactions_begin_immediate_and_read_only_deferred(engine: Engine) -> None:
    seen = begins(engine)
    with create_session_factory(engine)() as session, session.begin():
        session.execute(text("SELECT 1"))
    with create_session_factory(engine, read_only=True)() as session, session.begin():
        session.execute(text("SELECT 1"))
    assert seen == ["BEGIN IMMEDIATE", "BEGIN DEFERRED"]


def test_rollback_undoes_ddl_and_released_savepoints(engine: Engine) -> None:
    # Both fail in the driver's legacy mode, which emits no BEGIN before DDL or SAVEPOINT.
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        with conn.begin_nested():
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        conn.rollback()
        assert (
            conn.exec_driver_sql("SELECT count(*) FROM sqlite_master WHERE name = 't'").scalar()
            == 0
        )


def test_foreign_keys_are_enforced(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        conn.exec_driver_sql("CREATE TABLE child (parent_id INTEGER REFERENCES parent (id))")
    with pytest.raises(Exception, match="FOREIGN KEY"), engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO child VALUES (42)")


def test_concurrent_read_modify_write_transactions_wait_their_turn(engine: Engine) -> None:
    # Read then write, as the repositories do: with deferred BEGINs the second writer fails at
    # once with "database is locked" (its WAL snapshot is stale); BEGIN IMMEDIATE queues it.
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE counter (n INTEGER NOT NULL)")
        conn.exec_driver_sql("INSERT INTO counter VALUES (0)")
    sessions = create_session_factory(engine)
    errors: list[BaseException] = []
    threads_count, increments = 4, 25

    def writer() -> None:
        try:
            for _ in range(increments):
                with sessions() as session, session.begin():
                    n = session.execute(text("SELECT n FROM counter")).scalar_one()
                    time.sleep(0.001)  # widen the window between the read and the write
                    session.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT n FROM counter").scalar() == threads_count * increments


def test_two_engines_on_one_file_do_not_lock_each_other_out(tmp_path: Path) -> None:
    # The CLI and the worker are separate processes: separate engines, one file.
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first, second = create_store_engine(url), create_store_engine(url)
    with first.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE log (who TEXT)")
    errors: list[BaseException] = []

    def writer(engine: Engine, who: str) -> None:
        try:
            for _ in range(20):
                with engine.begin() as conn:
                    conn.exec_driver_sql("SELECT count(*) FROM log").scalar()
                    conn.exec_driver_sql("INSERT INTO log VALUES (?)", (who,))
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(engine, name))
        for engine, name in ((first, "cli"), (second, "worker"))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with first.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM log").scalar() == 40
    first.dispose()
    second.dispose()


@pytest.mark.parametrize(
    "given",
    ["postgresql://u@h/db", "postgres://u@h/db", "postgresql+psycopg://u@h/db"],
)
def test_postgres_urls_use_psycopg3(given: str) -> None:
    assert store_url(given).drivername == "postgresql+psycopg"
    engine = create_store_engine(given)  # no connection is made yet
    assert engine.dialect.driver == "psycopg"
    assert engine.pool._pre_ping  # type: ignore[attr-defined]
    engine.dispose()
