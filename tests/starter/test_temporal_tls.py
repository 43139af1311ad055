"""Connecting to a secured Temporal cluster: CRMFLOW_TEMPORAL_TLS_CERT and _KEY go together (one
alone is bad input, never a plaintext connection), _CA and _SERVER_NAME check the server. The
TLS tests go through a TLS-terminating proxy (a test CA, mutual TLS) in front of the real
Temporal test server."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from click.testing import CliRunner
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.testing import WorkflowEnvironment

from crmflow.cli import cli
from crmflow.services import Settings, connect_temporal

SERVER_NAME = "temporal.test"


def run_worker(tmp_path: Path, env: dict[str, str]) -> Any:
    result = CliRunner().invoke(
        cli,
        ["--db", f"sqlite:///{tmp_path / 'crmflow.db'}", "--temporal", "127.0.0.1:1", "worker"],
        env={**env, "CRMFLOW_DEBUG": None},
    )
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def pem_files(tmp_path: Path) -> dict[str, str]:
    ca = trustme.CA()
    client = ca.issue_cert("crmflow-worker")
    files = {
        "ca": tmp_path / "ca.pem",
        "cert": tmp_path / "client.pem",
        "key": tmp_path / "client.key",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    client.cert_chain_pems[0].write_to_path(str(files["cert"]))
    client.private_key_pem.write_to_path(str(files["key"]))
    return {name: str(path) for name, path in files.items()}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"CRMFLOW_TEMPORAL_TLS_CERT": "cert"},
            "crmflow: CRMFLOW_TEMPORAL_TLS_CERT is set without CRMFLOW_TEMPORAL_TLS_KEY: "
            "mutual TLS needs both (or neither)",
        ),
        (
            {"CRMFLOW_TEMPORAL_TLS_KEY": "key"},
            "crmflow: CRMFLOW_TEMPORAL_TLS_KEY is set without CRMFLOW_TEMPORAL_TLS_CERT: "
            "mutual TLS needs both (or neither)",
        ),
    ],
)
def test_a_certificate_without_its_key_is_bad_input_not_plaintext(
    tmp_path, pem_files, given, message
):
    env = {name: pem_files[file] for name, file in given.items()}
    result = run_worker(tmp_path, env)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [message]


@pytest.mark.parametrize("variable", ["CERT", "KEY", "CA"])
def test_an_unreadable_file_names_the_variable_and_the_path(tmp_path, pem_files, variable):
    env = {
        "CRMFLOW_TEMPORAL_TLS_CERT": pem_files["cert"],
        "CRMFLOW_TEMPORAL_TLS_KEY": pem_files["key"],
    }
    missing = str(tmp_path / "nowhere.pem")
    env[f"CRMFLOW_TEMPORAL_TLS_{variable}"] = missing
    result = run_worker(tmp_path, env)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"crmflow: CRMFLOW_TEMPORAL_TLS_{variable}={missing}: cannot read it: "
        "No such file or directory"
    ]


def test_a_file_that_is_not_pem_is_bad_input(tmp_path):
    text = tmp_path / "ca.txt"
    text.write_text("not a certificate\n")
    result = run_worker(tmp_path, {"CRMFLOW_TEMPORAL_TLS_CA": str(text)})
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"crmflow: CRMFLOW_TEMPORAL_TLS_CA={text}: not a PEM file"
    ]


# ------------------------------------------------------------------ through a TLS proxy


@dataclass
class TlsProxy:
    port: int
    client_subjects: list[Any] = field(default_factory=list)  # peer certificate of each client


@contextlib.asynccontextmanager
async def tls_proxy(backend: str, context: ssl.SSLContext) -> AsyncIterator[TlsProxy]:
    """Terminates TLS on 127.0.0.1 and forwards the bytes (HTTP/2, gRPC) to `backend`."""
    host, port = backend.rsplit(":", 1)
    tasks: set[asyncio.Task[Any]] = set()
    writers: list[asyncio.StreamWriter] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        proxy.client_subjects.append(writer.get_extra_info("peercert"))
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writers.extend((writer, up_writer))
        for task in (pipe(reader, up_writer), pipe(up_reader, writer)):
            tasks.add(asyncio.ensure_future(task))

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    proxy = TlsProxy(port=server.sockets[0].getsockname()[1])
    try:
        yield proxy
    finally:
        server.close()
        for writer in writers:
            writer.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
def server_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def proxy_context(server_ca: trustme.CA, pem_files: dict[str, str]) -> ssl.SSLContext:
    """The cluster's side: a certificate for temporal.test, and client certificates required
    (signed by the CA of `pem_files`)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ca.issue_cert(SERVER_NAME).configure_cert(context)
    context.load_verify_locations(cafile=pem_files["ca"])
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["h2"])
    return context


async def test_mutual_tls_with_a_ca_and_a_server_name(
    time_skipping_env: WorkflowEnvironment, server_ca, proxy_context, pem_files, tmp_path
):
    server_ca_file = tmp_path / "server-ca.pem"
    server_ca.cert_pem.write_to_path(str(server_ca_file))
    backend = time_skipping_env.client.service_client.config.target_host
    async with tls_proxy(backend, proxy_context) as proxy:
        settings = Settings(
            temporal_address=f"127.0.0.1:{proxy.port}",
            namespace=time_skipping_env.client.namespace,
            tls_cert=Path(pem_files["cert"]),
            tls_key=Path(pem_files["key"]),
            tls_ca=server_ca_file,
            tls_server_name=SERVER_NAME,
        )
        client = await connect_temporal(settings)
        info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
        assert info.server_version is not None
        # The cluster saw the worker's client certificate.
        assert proxy.client_subjects[0]["subjectAltName"] == (("DNS", "crmflow-worker"),)

        # Without the server name the certificate (for temporal.test) does not match 127.0.0.1.
        with pytest.raises(RuntimeError):
            await connect_temporal(
                Settings(
                    temporal_address=settings.temporal_address,
                    namespace=settings.namespace,
                    tls_cert=settings.tls_cert,
                    tls_key=settings.tls_key,
                    tls_ca=server_ca_file,
                )
            )
        # Without the CA the server's certificate is not trusted.
        with pytest.raises(RuntimeError):
            await connect_temporal(
                Settings(
                    temporal_address=settings.temporal_address,
                    namespace=settings.namespace,
                    tls_cert=settings.tls_cert,
                    tls_key=settings.tls_key,
                    tls_server_name=SERVER_NAME,
                )
            )
