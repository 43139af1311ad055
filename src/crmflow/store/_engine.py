"""Engines, sessions and schema upgrades of the store, for SQLite (local) and PostgreSQL.

SQLite transactions: Python's sqlite3 driver (before 3.16, in "legacy transaction control") emits
no BEGIN before a SELECT and a plain deferred BEGIN before DML, so a transaction that reads and
then writes takes the write lock only at its first write. When two such transactions meet (the
CLI, the worker's activity threads, a dispatcher), the later one cannot upgrade its stale WAL
snapshot and fails at once with "database is locked", whatever the busy timeout. We take over:
the driver emits nothing (`isolation_level = None`) and every transaction starts with
`BEGIN IMMEDIATE`, which takes the write lock up front and so waits its turn under
`busy_timeout` instead of failing. Writes are serialised anyway in SQLite; a session made with
`create_session_factory(engine, read_only=True)` starts with a deferred `BEGIN` instead, so long
reports never hold the write lock (WAL readers never block, nor are blocked by, the writer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

DEFAULT_DB_URL = "sqlite:///.crmflow/crmflow.db"
MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# Execution option choosing how a SQLite transaction begins: "IMMEDIATE" (default) or "DEFERRED".
SQLITE_BEGIN = "crmflow_sqlite_begin"
_BEGIN_MODES = frozenset({"IMMEDIATE", "DEFERRED", "EXCLUSIVE"})
# Key of the PostgreSQL advisory lock that serialises concurrent upgrades ("crmflow" in ASCII).
_MIGRATION_LOCK = 0x63726D666C6F77


def store_url(url: str | URL) -> URL:
    """The SQLAlchemy URL for a user-given store URL: psycopg 3 is the PostgreSQL driver."""
    sa_url = make_url(url)
    if sa_url.drivername in ("postgresql", "postgres"):
        sa_url = sa_url.set(drivername="postgresql+psycopg")
    return sa_url


def create_store_engine(url: str | URL) -> Engine:
    sa_url = store_url(url)
    backend = sa_url.get_backend_name()
    if backend == "sqlite":
        return _create_sqlite_engine(sa_url)
    if backend == "postgresql":
        # Connections idle in the pool across a server restart or failover are tested first.
        return create_engine(sa_url, pool_pre_ping=True)
    return create_engine(sa_url)


def _create_sqlite_engine(sa_url: URL) -> Engine:
    database = sa_url.database or ""
    in_memory = database in ("", ":memory:") or "mode=memory" in database
    if not in_memory and not sa_url.query.get("uri"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    pragmas = ["foreign_keys=ON", "synchronous=NORMAL", "busy_timeout=30000"]
    if not in_memory:
        # Readers and the writer don't block each other; the mode is persistent in the file.
        pragmas.insert(0, "journal_mode=WAL")
    engine = create_engine(sa_url)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver must not BEGIN by itself (see the module docstring): `_on_begin` does.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in pragmas:
                cursor.execute(f"PRAGMA {pragma}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get(SQLITE_BEGIN, "IMMEDIATE")
        if mode not in _BEGIN_MODES:
            raise ValueError(f"{SQLITE_BEGIN} must be one of {sorted(_BEGIN_MODES)}, not {mode!r}")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def create_session_factory(engine: Engine, *, read_only: bool = False) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (they are handed to callers).

    `read_only=True`, on SQLite, starts transactions with a deferred BEGIN: for reports and
    listings, which must not queue behind writers nor hold them up. Writing in such a session
    works but may fail with "database is locked" under contention.
    """
    bind = engine.execution_options(**{SQLITE_BEGIN: "DEFERRED"}) if read_only else engine
    return sessionmaker(bind=bind, expire_on_commit=False)


def reading_sessions(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    """Read-only sessions (see `create_session_factory`) on the engine `sessions` writes to."""
    bind = sessions.kw["bind"]
    engine = bind if isinstance(bind, Engine) else bind.engine
    return create_session_factory(engine, read_only=True)


def alembic_config() -> Config:
    """Alembic configuration of the packaged migrations; no alembic.ini involved."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    # Revisions are numbered in order: 0001_initial.py, 0002_add_something.py, ...
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    return config


def upgrade_database(engine: Engine) -> None:
    """Bring the schema to the latest migration, in one transaction; a no-op when up to date."""
    config = alembic_config()
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # Batch migrations rebuild a table (copy, drop, rename): with foreign keys on, the
            # drop would cascade deletes into child tables. The pragma is ignored inside a
            # transaction, so it is set before BEGIN, and checked at the end instead.
            _sqlite_foreign_keys(connection, on=False)
        try:
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    # Workers starting together: one migrates, the others then find it done.
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK}
                    )
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(f"migration broke foreign keys: {broken[:5]}")
        finally:
            if sqlite:
                _sqlite_foreign_keys(connection, on=True)


def _sqlite_foreign_keys(connection: Connection, *, on: bool) -> None:
    # On the driver connection: through SQLAlchemy the statement would first autobegin.
    connection.connection.driver_connection.execute(  # type: ignore[union-attr]
        f"PRAGMA foreign_keys={'ON' if on else 'OFF'}"
    )


def ensure_postgres_database(url: str | URL) -> None:
    """Create the database of a PostgreSQL URL if it does not exist; other URLs are ignored."""
    sa_url = store_url(url)
    if sa_url.get_backend_name() != "postgresql":
        return
    name = sa_url.database
    if not name:
        raise ValueError(f"no database name in {sa_url.render_as_string(hide_password=True)}")
    # CREATE DATABASE cannot run in a transaction, hence AUTOCOMMIT on the maintenance database.
    admin = create_engine(sa_url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            found = connection.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            )
            if found:
                return
            quoted = connection.dialect.identifier_preparer.quote_identifier(name)
            try:
                connection.exec_driver_sql(f"CREATE DATABASE {quoted}")
            except DBAPIError as exc:
                # Lost a race with another process creating it: duplicate_database, or the
                # unique violation on pg_database that PostgreSQL sometimes reports instead.
                if getattr(exc.orig, "sqlstate", None) not in ("42P04", "23505"):
                    raise
    finally:
        admin.dispose()
