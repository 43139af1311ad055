from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from ruamel.yaml import YAML
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from crmflow.starter import services
from crmflow.starter._app import App, Settings
from crmflow.worker import build_worker


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
        worker = build_worker(
            env.client, app.sessions, task_queue=app.settings.task_queue, **kwargs
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
