"""Settings and the wiring of one crmflow process (CLI, worker or `up`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client, TLSConfig
from temporalio.contrib.pydantic import pydantic_data_converter

from crmflow.store._engine import (
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
    tls_cert: Path | None = None
    tls_key: Path | None = None
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
            "tls_cert": Path(env["CRMFLOW_TEMPORAL_TLS_CERT"])
            if env.get("CRMFLOW_TEMPORAL_TLS_CERT")
            else None,
            "tls_key": Path(env["CRMFLOW_TEMPORAL_TLS_KEY"])
            if env.get("CRMFLOW_TEMPORAL_TLS_KEY")
            else None,
            "api_key": env.get("CRMFLOW_TEMPORAL_API_KEY") or None,
            "task_queue": env.get("CRMFLOW_TASK_QUEUE") or "crmflow",
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


async def connect_temporal(settings: Settings) -> Client:
    tls: TLSConfig | bool = False
    if settings.tls_cert and settings.tls_key:
        tls = TLSConfig(
            client_cert=settings.tls_cert.read_bytes(),
            client_private_key=settings.tls_key.read_bytes(),
        )
    elif settings.api_key:
        tls = True
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.namespace,
        data_converter=pydantic_data_converter,
        tls=tls,
        api_key=settings.api_key,
    )


@dataclass
class App:
    """A store and (lazily) a Temporal client; what every service function works with."""

    settings: Settings
    engine: Engine = field(init=False)
    sessions: sessionmaker[Session] = field(init=False)
    _client: Client | None = field(default=None, init=False)

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

    def close(self) -> None:
        self.engine.dispose()
