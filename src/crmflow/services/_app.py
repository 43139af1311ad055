"""Settings and the wiring of one crmflow process (CLI, worker or `up`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
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


class Settings(BaseSettings):
    """One process's settings, read from the environment (SPEC §5) in this one place; the
    global CLI options override them (`from_env`). An empty variable counts as unset."""

    model_config = SettingsConfigDict(
        frozen=True, populate_by_name=True, env_ignore_empty=True, extra="ignore"
    )

    db_url: str = Field(DEFAULT_DB_URL, validation_alias="CRMFLOW_DB")
    temporal_address: str = Field("localhost:7233", validation_alias="CRMFLOW_TEMPORAL")
    namespace: str = Field("default", validation_alias="CRMFLOW_NAMESPACE")
    # Mutual TLS (both or neither), the server's CA bundle, the name its certificate carries.
    tls_cert: Path | None = Field(None, validation_alias="CRMFLOW_TEMPORAL_TLS_CERT")
    tls_key: Path | None = Field(None, validation_alias="CRMFLOW_TEMPORAL_TLS_KEY")
    tls_ca: Path | None = Field(None, validation_alias="CRMFLOW_TEMPORAL_TLS_CA")
    tls_server_name: str | None = Field(None, validation_alias="CRMFLOW_TEMPORAL_TLS_SERVER_NAME")
    api_key: str | None = Field(None, validation_alias="CRMFLOW_TEMPORAL_API_KEY")
    task_queue: str = Field("crmflow", validation_alias="CRMFLOW_TASK_QUEUE")
    # Where the dashboard links each enrollment to its execution.
    temporal_ui_url: str = Field(
        "http://localhost:8233", validation_alias="CRMFLOW_TEMPORAL_UI_URL"
    )

    @field_validator("tls_cert", "tls_key", "tls_ca", "tls_server_name", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # Surrounding spaces are dropped; nothing left is unset.
        if isinstance(value, str):
            return value.strip() or None
        return value

    @classmethod
    def from_env(cls, **overrides: str | None) -> Settings:
        """Environment (SPEC §5), then explicit overrides (the global CLI options)."""
        given: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
        return cls(**given)


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
