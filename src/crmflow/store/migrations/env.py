"""Alembic environment of the store, run by `crmflow.store._engine.upgrade_database` (online, on
the connection it passes in `config.attributes["connection"]`), by `scripts/new_migration.py`
(autogenerate), and by `command.upgrade(config, "head", sql=True)` with a `sqlalchemy.url`
main option (offline: prints the SQL).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context
from sqlalchemy import Connection

from crmflow.store._engine import create_store_engine, store_url
from crmflow.store._tables import Base, UtcDateTime

config = context.config
target_metadata = Base.metadata


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    if type_ != "type":
        return False
    # Migrations are frozen history and must not import crmflow, whose types may change later:
    # the stored type of UtcDateTime is a plain timezone-aware DateTime.
    if isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    # Alembic renders this variant as `JSONB(astext_type=Text())`, with `Text` never imported.
    if isinstance(obj, sa.JSON) and "postgresql" in getattr(obj, "_variant_mapping", {}):
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        return 'sa.JSON().with_variant(postgresql.JSONB(), "postgresql")'
    return False


def _options(dialect_name: str) -> dict[str, Any]:
    return {
        "target_metadata": target_metadata,
        "render_item": render_item,
        "compare_type": True,
        # SQLite can't ALTER most things: batch operations rebuild the table instead. The
        # rendered `batch_alter_table` blocks also run as plain ALTERs on PostgreSQL.
        "render_as_batch": dialect_name == "sqlite",
    }


def run_migrations_offline() -> None:
    url = store_url(config.get_main_option("sqlalchemy.url") or "sqlite://")
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **_options(url.get_backend_name()),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(connection=connection, **_options(connection.dialect.name))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("pass a connection in config.attributes or a sqlalchemy.url option")
    engine = create_store_engine(url)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
