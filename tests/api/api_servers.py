"""A real uvicorn on a random port, in a thread, serving an API built by `create_app` over a real
store, and httpx clients for it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client

from crmflow.store import ApiKeyRepository, ApiScope


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run `app` on uvicorn on a random local port in a thread; yields its base URL once it
    answers, and stops it afterwards."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("uvicorn stopped before it served")
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within 20 s")
            time.sleep(0.01)
        assert httpx.get(f"{url}/healthz").status_code == 200
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


async def unreachable_temporal() -> Client:
    """A Temporal getter for APIs whose tests do not need Temporal: nothing listens there."""
    return await Client.connect(f"127.0.0.1:{UNREACHABLE_PORT}")


UNREACHABLE_PORT = free_port()


@dataclass
class Store:
    engine: Engine
    sessions: sessionmaker[Session]

    def key(self, scope: ApiScope | str, name: str | None = None) -> str:
        """A new API key (the key itself, as a client sends it)."""
        with self.sessions.begin() as session:
            row, key = ApiKeyRepository(session).create(
                name or f"{scope}-{time.monotonic_ns()}", str(scope), now=datetime.now(UTC)
            )
        return key

    def revoke(self, name: str) -> None:
        with self.sessions.begin() as session:
            ApiKeyRepository(session).revoke(name, now=datetime.now(UTC))


@dataclass
class Api:
    url: str
    store: Store
    app: FastAPI
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, key: str | None = None, **options: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        client = httpx.Client(base_url=self.url, headers=headers, timeout=30, **options)
        self.clients.append(client)
        return client

    def as_scope(self, scope: ApiScope | str) -> httpx.Client:
        return self.client(self.store.key(scope))


class Started:
    def __init__(self) -> None:
        self.servers: list[Any] = []
        self.apis: list[Api] = []

    def enter(self, app: FastAPI, store: Store) -> Api:
        server = serve(app)
        url = server.__enter__()
        self.servers.append(server)
        api = Api(url, store, app)
        self.apis.append(api)
        return api

    def __enter__(self) -> Started:
        return self

    def __exit__(self, *exc: object) -> None:
        for api in self.apis:
            for client in api.clients:
                client.close()
        for server in reversed(self.servers):
            server.__exit__(None, None, None)
