"""Client event ids (migration 0009): one event per id, whoever writes it twice."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import inspect

from crmflow.store import EventRepository, RecordRepository, StoreError
from crmflow.store._engine import (
    alembic_config,
    create_session_factory,
    create_store_engine,
    upgrade_database,
)

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)


def test_an_event_id_is_stored_once(store_url: str) -> None:
    engine = create_store_engine(store_url)
    try:
        upgrade_database(engine)
        sessions = create_session_factory(engine)
        with sessions.begin() as session:
            RecordRepository(session).upsert("contact", "ann", {}, now=NOW)
            events = EventRepository(session)
            first, added = events.add_once(
                "contact", "ann", "x", {}, occurred_at=NOW, client_event_id="e1"
            )
            assert added
            again, added = events.add_once(
                "contact", "ann", "y", {}, occurred_at=NOW, client_event_id="e1"
            )
            assert not added
            assert again.id == first.id
            with pytest.raises(StoreError, match="event id"):
                events.add("contact", "ann", "z", {}, occurred_at=NOW, client_event_id=" e2")
        with sessions() as session:
            assert [e.name for e in EventRepository(session).for_record("contact", "ann")] == ["x"]
    finally:
        engine.dispose()


def test_the_migration_goes_down_and_up_again(store_url: str) -> None:
    engine = create_store_engine(store_url)
    try:
        upgrade_database(engine)
        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0007")
        columns = {c["name"] for c in inspect(engine).get_columns("events")}
        assert "client_event_id" not in columns
        upgrade_database(engine)
        columns = {c["name"] for c in inspect(engine).get_columns("events")}
        assert "client_event_id" in columns
    finally:
        engine.dispose()
