"""Shared fixtures: stores (SQLite always, PostgreSQL when CRMFLOW_TEST_PG_URL is set) and the
time-skipping Temporal test server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pg_databases import fresh_database
from ruamel.yaml import YAML
from sqlalchemy import create_engine, text
from temporal_servers import time_skipping_server
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from crmflow import services
from crmflow.enrolling import EnrollmentStarter
from crmflow.services import App, Settings
from crmflow.worker import build_worker


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    with fresh_database("crmflow_t") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL on each database; PostgreSQL tests get a clean schema each time."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'crmflow.db'}"
    url: str = request.getfixturevalue("pg_url")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'crmflow.db'}"


@pytest_asyncio.fixture
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    async with time_skipping_server() as env:
        yield env


# ---------------------------------------------------------------- an app on a real store


def write_definition(path: Path, definition: dict[str, Any]) -> Path:
    yaml = YAML()
    with path.open("w") as handle:
        yaml.dump(definition, handle)
    return path


@pytest.fixture
def app(store_url: str) -> App:
    app = App(Settings(db_url=store_url, task_queue=f"tq-{uuid.uuid4().hex[:8]}"))
    yield app
    app.close()


@pytest_asyncio.fixture
async def env(time_skipping_env: WorkflowEnvironment, app: App) -> WorkflowEnvironment:
    app.use_client(time_skipping_env.client)
    return time_skipping_env


@pytest.fixture
def new_worker(env: WorkflowEnvironment, app: App) -> Callable[..., Any]:
    @asynccontextmanager
    async def start(**kwargs: Any) -> AsyncIterator[Worker]:
        starter = EnrollmentStarter(app.sessions, env.client, app.settings.task_queue)
        worker = build_worker(
            env.client, app.sessions, enroller=starter, task_queue=app.settings.task_queue, **kwargs
        )
        async with worker:
            yield worker

    return start


@pytest.fixture
def publish(app: App, tmp_path: Path) -> Callable[..., Any]:
    async def go(definition: dict[str, Any], *, activate: bool = True) -> str:
        path = write_definition(
            tmp_path / f"{definition['key']}-{uuid.uuid4().hex[:6]}.yaml", definition
        )
        services.publish_files(app, [path])
        if activate:
            await services.activate(app, definition["key"])
        return definition["key"]

    return go
