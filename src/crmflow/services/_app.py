"""Settings and the wiring of one crmflow process (CLI, worker or `up`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client, TLSConfig
from temporalio.contrib.pydantic import pydantic_data_converter

from crmflow.activities.config import ConfigError
from crmflow.enrolling import EnrollmentStarter
from crmflow.store import (
    DEFAULT_DB_URL,
    create_session_factory,
    create_store_engine,
    upgrade_database,
)


@dataclass(frozen=True)
class Settings:
    db_url: str = DEFAULT_DB_URL
    temporal_address: str = "localhost:7233"
    namespace: str = "default"
    # Mutual TLS (both or neither), the server's CA bundle, the name its certificate carries.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    tls_server_name: str | None = None
    api_key: str | None = None
    task_queue: str = "crmflow"

    @classmethod
    def from_env(cls, **overrides: str | None) -> Settings:
        """Environment (SPEC §5), then explicit overrides (the global CLI options)."""
        env = os.environ
        values = {
            "db_url": env.get("CRMFLOW_DB") or DEFAULT_DB_URL,
            "temporal_address": env.get("CRMFLOW_TEMPORAL") or "localhost:7233",
            "namespace": env.get("CRMFLOW_NAMESPACE") or "default",
            "tls_cert": _path(env, "CRMFLOW_TEMPORAL_TLS_CERT"),
            "tls_key": _path(env, "CRMFLOW_TEMPORAL_TLS_KEY"),
            "tls_ca": _path(env, "CRMFLOW_TEMPORAL_TLS_CA"),
            "tls_server_name": (env.get("CRMFLOW_TEMPORAL_TLS_SERVER_NAME") or "").strip() or None,
            "api_key": env.get("CRMFLOW_TEMPORAL_API_KEY") or None,
            "task_queue": env.get("CRMFLOW_TASK_QUEUE") or "crmflow",
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def _path(env: Mapping[str, str], name: str) -> Path | None:
    value = (env.get(name) or "").strip()
    return Path(value) if value else None


def _pem(variable: str, path: Path | None) -> bytes | None:
    """The PEM file a variable names; ConfigError naming the variable and the path."""
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{variable}={path}: cannot read it: {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{variable}={path}: not a PEM file")
    return data


def tls_config(settings: Settings) -> TLSConfig | bool:
    """How to connect: a client certificate and key (mutual TLS) go together, never one
    alone; a CA or server name alone is TLS that checks the server; an API key alone is TLS
    with the system's CAs; nothing is plaintext (a local dev server)."""
    cert, key = settings.tls_cert, settings.tls_key
    if (cert is None) != (key is None):
        given, missing = ("CERT", "KEY") if cert is not None else ("KEY", "CERT")
        raise ConfigError(
            f"CRMFLOW_TEMPORAL_TLS_{given} is set without CRMFLOW_TEMPORAL_TLS_{missing}: "
            "mutual TLS needs both (or neither)"
        )
    if cert is None and settings.tls_ca is None and settings.tls_server_name is None:
        return settings.api_key is not None
    return TLSConfig(
        client_cert=_pem("CRMFLOW_TEMPORAL_TLS_CERT", cert),
        client_private_key=_pem("CRMFLOW_TEMPORAL_TLS_KEY", key),
        server_root_ca_cert=_pem("CRMFLOW_TEMPORAL_TLS_CA", settings.tls_ca),
        domain=settings.tls_server_name,
    )


async def connect_temporal(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.namespace,
        data_converter=pydantic_data_converter,
        tls=tls_config(settings),
        api_key=settings.api_key,
    )


@dataclass
class App:
    """A store and (lazily) a Temporal client; what every service function works with."""

    settings: Settings
    engine: Engine = field(init=False)
    sessions: sessionmaker[Session] = field(init=False)
    _client: Client | None = field(default=None, init=False)
    _starter: EnrollmentStarter | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.engine = create_store_engine(self.settings.db_url)
        upgrade_database(self.engine)
        self.sessions = create_session_factory(self.engine)

    async def client(self) -> Client:
        if self._client is None:
            self._client = await connect_temporal(self.settings)
        return self._client

    def use_client(self, client: Client) -> None:
        """Tests and `up` hand in a client they already have."""
        self._client = client
        self._starter = None

    async def starter(self) -> EnrollmentStarter:
        """The process's one starter: the CLI's services, the dispatcher, simulate and the
        worker's activities that enroll all use it."""
        if self._starter is None:
            client = await self.client()
            self._starter = EnrollmentStarter(self.sessions, client, self.settings.task_queue)
        return self._starter

    def close(self) -> None:
        self.engine.dispose()
