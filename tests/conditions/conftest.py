"""Stores for the condition tests: SQLite always, PostgreSQL when CRMFLOW_TEST_PG_URL is set.

Each store is created once per session and refilled by each test (`CondStore.load`), so that
hypothesis examples stay fast. PostgreSQL gets its own database, dropped at the end, so that
parallel runs and other test modules never share tables with these tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from condition_helpers import CondStore
from pg_databases import fresh_database
from sqlalchemy import create_engine
from sqlalchemy.pool import StaticPool

from crmflow.store import Base


@pytest.fixture(scope="session")
def sqlite_store() -> Iterator[CondStore]:
    engine = create_engine("sqlite://", poolclass=StaticPool)
    Base.metadata.create_all(engine)
    yield CondStore(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def pg_store() -> Iterator[CondStore]:
    with fresh_database("crmflow_cond") as url:
        engine = create_engine(url)
        try:
            Base.metadata.create_all(engine)
            yield CondStore(engine)
        finally:
            engine.dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest) -> CondStore:
    return request.getfixturevalue(f"{'pg' if request.param == 'postgresql' else 'sqlite'}_store")
