"""Migrations: a fresh database upgraded to head has exactly the schema of `_tables.py`."""

from __future__ import annotations

import io
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, insert, select, text

import crmflow.store._engine as store_engine
from crmflow.store import Base, Record, RecordDate
from crmflow.store._engine import (
    alembic_config,
    create_store_engine,
    ensure_postgres_database,
    store_url,
    upgrade_database,
)

PG_ENV = "CRMFLOW_TEST_PG_URL"


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    """A PostgreSQL database of its own, beside the one CRMFLOW_TEST_PG_URL names, dropped after."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set: PostgreSQL tests skipped")
    url = store_url(base).set(database=f"crmflow_mig_{uuid.uuid4().hex[:10]}")
    rendered = url.render_as_string(hide_password=False)
    ensure_postgres_database(rendered)
    ensure_postgres_database(rendered)  # a no-op the second time
    try:
        yield rendered
    finally:
        admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fresh' / 'crmflow.db'}"
    else:
        url = request.getfixturevalue("fresh_pg_url")
    engine = create_store_engine(url)
    yield engine
    engine.dispose()


def head() -> str:
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None
    return revision


def test_upgrade_to_head_matches_the_tables(engine: Engine) -> None:
    upgrade_database(engine)
    upgrade_database(engine)  # up to date: nothing to do
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head()
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_concurrent_upgrades_migrate_once(engine: Engine) -> None:
    # Several workers (or the CLI and a worker) starting at once on a fresh database.
    errors: list[BaseException] = []

    def upgrade() -> None:
        try:
            upgrade_database(engine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=upgrade) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head()


def test_partial_unique_index_keeps_its_where(engine: Engine) -> None:
    upgrade_database(engine)
    if engine.dialect.name == "sqlite":
        query = "SELECT sql FROM sqlite_master WHERE name = 'uq_enrollments_one_active'"
    else:
        query = "SELECT indexdef FROM pg_indexes WHERE indexname = 'uq_enrollments_one_active'"
    with engine.connect() as conn:
        definition = conn.exec_driver_sql(query).scalar_one()
    assert "UNIQUE" in definition.upper()
    assert "WHERE" in definition.upper() and "running" in definition and "paused" in definition


def test_upgrade_indexes_the_dates_of_records_stored_before(engine: Engine) -> None:
    # Migration 0006 starts the date index full: records stored by an older version have their
    # date values indexed as RecordRepository indexes every later write (page after page).
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0005")
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    values = ["2026-01-01", "2026-01-01T10:00:30.5+02:00", "soon", 7, "2026-02-30", None]
    rows = [
        {
            "object_type": "deal" if i % 7 == 0 else "contact",
            "id": f"r{i:05d}",
            "properties": {"renewal_date": values[i % len(values)], "p" * 200: "2026-01-01"},
            "created_at": moment,
            "updated_at": moment,
        }
        for i in range(2500)
    ]
    with engine.begin() as connection:
        connection.execute(insert(Record.__table__), rows)
    upgrade_database(engine)
    with engine.connect() as connection:
        found = set(
            connection.execute(
                select(
                    RecordDate.object_type, RecordDate.record_id, RecordDate.property, RecordDate.at
                )
            ).all()
        )
    expected = {
        (row["object_type"], row["id"], "renewal_date", at)
        for i, row in enumerate(rows)
        if (at := {0: 1767225600, 1: 1767254430}.get(i % len(values))) is not None
    }
    assert len(expected) == 834
    assert found == expected


def test_postgres_column_types(fresh_pg_url: str) -> None:
    engine = create_store_engine(fresh_pg_url)
    upgrade_database(engine)
    with engine.connect() as conn:
        types: dict[str, str] = dict(
            conn.execute(
                text(
                    "SELECT table_name || '.' || column_name, data_type"
                    " FROM information_schema.columns WHERE table_schema = 'public'"
                )
            ).all()
        )
    engine.dispose()
    assert types["records.properties"] == "jsonb"
    assert types["workflow_versions.definition"] == "jsonb"
    assert types["records.created_at"] == "timestamp with time zone"
    assert types["events.id"] == "bigint"


def test_sqlite_upgrade_leaves_foreign_keys_on(tmp_path: Path) -> None:
    # upgrade_database turns them off around the migration (batch table rebuilds).
    engine = create_store_engine(f"sqlite:///{tmp_path / 'crmflow.db'}")
    upgrade_database(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


REBUILD_ENROLLMENTS = """
import sqlalchemy as sa
from alembic import op

revision = "9999"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("enrollments", recreate="always") as batch_op:
        batch_op.add_column(sa.Column("note", sa.Text(), nullable=True))


def downgrade():
    pass
"""


def test_sqlite_table_rebuild_keeps_child_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch migration drops and recreates the table; with foreign keys on, the drop would
    # cascade-delete the enrollment's steps.
    engine = create_store_engine(f"sqlite:///{tmp_path / 'crmflow.db'}")
    upgrade_database(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO workflows (key, latest_version, active) VALUES ('w', 1, 1)"
        )
        conn.exec_driver_sql(
            "INSERT INTO enrollments (workflow_key, version, object_type, record_id, seq, status,"
            " source, enrolled_at, temporal_workflow_id)"
            " VALUES ('w', 1, 'contact', 'c1', 1, 'running', 'manual', '2026-01-01', 'w/c1')"
        )
        conn.exec_driver_sql(
            "INSERT INTO enrollment_steps (enrollment_id, action_id, type, started_at, detail)"
            " VALUES (1, 'wait', 'delay', '2026-01-01', '{}')"
        )
    migrations = tmp_path / "migrations"
    shutil.copytree(store_engine.MIGRATIONS_DIR, migrations)
    (migrations / "versions" / "9999_rebuild.py").write_text(
        REBUILD_ENROLLMENTS.format(head=head())
    )
    monkeypatch.setattr(store_engine, "MIGRATIONS_DIR", migrations)
    upgrade_database(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM enrollment_steps").scalar() == 1
        assert conn.exec_driver_sql("SELECT note FROM enrollments").all() == [(None,)]
    engine.dispose()


def test_offline_mode_prints_postgres_sql() -> None:
    config = alembic_config()
    config.set_main_option("sqlalchemy.url", "postgresql://crmflow@localhost/crmflow")
    config.output_buffer = io.StringIO()
    command.upgrade(config, "head", sql=True)
    sql = config.output_buffer.getvalue()
    assert "CREATE TABLE records" in sql
    assert "JSONB" in sql
    assert "WHERE status IN ('running', 'paused')" in sql
