"""Stores for the condition tests: SQLite always, PostgreSQL when CRMFLOW_TEST_PG_URL is set.

Each store is created once per session and refilled by each test (`CondStore.load`), so that
hypothesis examples stay fast. PostgreSQL gets its own database, dropped at the end, so that
parallel runs and other test modules never share tables with these tests.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from condition_helpers import CondStore
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from crmflow.store._tables import Base

PG_ENV = "CRMFLOW_TEST_PG_URL"


@pytest.fixture(scope="session")
def sqlite_store() -> Iterator[CondStore]:
    engine = create_engine("sqlite://", poolclass=StaticPool)
    Base.metadata.create_all(engine)
    yield CondStore(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def pg_store() -> Iterator[CondStore]:
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set: PostgreSQL condition tests skipped")
    url = make_url(base.replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"crmflow_cond_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = create_engine(url.set(database=name))
    try:
        Base.metadata.create_all(engine)
        yield CondStore(engine)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest) -> CondStore:
    return request.getfixturevalue(f"{'pg' if request.param == 'postgresql' else 'sqlite'}_store")
