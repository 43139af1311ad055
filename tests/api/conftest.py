"""Fixtures of the HTTP API tests: a real uvicorn on a random port serving an API built by
`create_app` over a real store (SQLite and PostgreSQL), and httpx clients."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import pytest
from api_servers import Api, Started, Store, unreachable_temporal
from fastapi import APIRouter
from sqlalchemy import Engine
from temporalio.client import Client

from crmflow.api import ApiSettings, create_app
from crmflow.store import create_session_factory, create_store_engine, upgrade_database


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    engine = create_store_engine(store_url)
    upgrade_database(engine)
    yield Store(engine, create_session_factory(engine))
    engine.dispose()


@pytest.fixture
def start_api(store: Store) -> Iterator[Callable[..., Api]]:
    """Start an API on the test store: `start_api(routers=[...], settings=ApiSettings(...))`."""
    with Started() as started:

        def start(
            *,
            routers: Sequence[APIRouter] = (),
            settings: ApiSettings | None = None,
            temporal: Callable[[], Awaitable[Client]] = unreachable_temporal,
            engine: Engine | None = None,
            services: Any = None,
        ) -> Api:
            app = create_app(
                engine=engine or store.engine,
                temporal=temporal,
                settings=settings,
                routers=routers,
                services=services,
            )
            return started.enter(app, store)

        yield start
