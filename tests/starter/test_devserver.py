"""The local Temporal dev server of `crmflow up`: start, restart on the same state, port errors."""

from __future__ import annotations

import asyncio
import socket
import uuid
from pathlib import Path

import pytest
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from crmflow.services.devserver import DevServer, DevServerError, temporal_cli_path
from crmflow.worker import search_attributes as sa


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server(state_dir: Path, namespace: str = "default") -> DevServer:
    return DevServer(
        state_dir=state_dir, port=free_port(), ui_port=free_port(), namespace=namespace
    )


async def search_attributes(client: Client) -> dict[str, int]:
    response = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    return dict(response.custom_attributes)


def expected_attributes() -> dict[str, int]:
    return {key.name: int(key.indexed_value_type) for key in sa.ALL}


def test_cli_is_found() -> None:
    assert Path(temporal_cli_path()).is_file()


async def test_restart_keeps_data_and_search_attributes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    workflow_id = f"persisted-{uuid.uuid4().hex[:6]}"
    async with server(state) as first:
        client = await Client.connect(first.target)
        assert expected_attributes().items() <= (await search_attributes(client)).items()
        # No worker: the execution just waits, persisted with its search attributes.
        await client.start_workflow(
            "Nothing",
            id=workflow_id,
            task_queue="nobody-polls",
            search_attributes=TypedSearchAttributes([SearchAttributePair(sa.RECORD_ID, "c-1")]),
        )
    assert not first.running
    assert (state / "temporal.db").exists()
    assert (state / "temporal.log").exists()

    # Same state on other ports: the launch flags are ignored by an existing database.
    async with server(state) as second:
        client = await Client.connect(second.target)
        assert expected_attributes().items() <= (await search_attributes(client)).items()
        description = await client.get_workflow_handle(workflow_id).describe()
        assert description.status == WorkflowExecutionStatus.RUNNING
        assert description.typed_search_attributes.get(sa.RECORD_ID) == "c-1"
        found = [wf.id async for wf in client.list_workflows(f"{sa.RECORD_ID.name} = 'c-1'")]
        assert found == [workflow_id]


async def test_new_namespace_on_existing_state_gets_the_attributes(tmp_path: Path) -> None:
    # The server creates a new --namespace on an existing file but registers no attributes in
    # it: wait_ready adds them.
    state = tmp_path / "state"
    async with server(state):
        pass
    async with server(state, namespace="crmflow-other") as again:
        client = await Client.connect(again.target, namespace="crmflow-other")
        assert expected_attributes().items() <= (await search_attributes(client)).items()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = DevServer(state_dir=tmp_path, port=port, ui_port=free_port())
        with pytest.raises(DevServerError, match=f"port {port} is in use: .*--temporal-port"):
            busy.start()
        busy_ui = DevServer(state_dir=tmp_path, port=free_port(), ui_port=port)
        with pytest.raises(DevServerError, match=f"port {port} is in use"):
            busy_ui.start()
    assert not busy.running and not busy_ui.running


async def test_exit_during_startup_is_reported(tmp_path: Path) -> None:
    dev = server(tmp_path)
    # A directory where the database file should be: the server cannot open it and exits.
    (tmp_path / "temporal.db").mkdir()
    dev.start()
    try:
        with pytest.raises(DevServerError, match="exited with code"):
            await asyncio.wait_for(dev.wait_ready(timeout=30), 60)
    finally:
        dev.stop()
