"""Fixtures of the store tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from crmflow.store import create_session_factory, create_store_engine, upgrade_database


@pytest.fixture
def sessions(store_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on the test's store (SQLite, and PostgreSQL when configured), migrated."""
    engine = create_store_engine(store_url)
    upgrade_database(engine)
    yield create_session_factory(engine)
    engine.dispose()
