"""Serving the HTTP API (SPEC §7) on uvicorn: `crmflow serve`, and next to the worker in
`crmflow up`. Stateless: every process reads the store and Temporal, so several `serve`
processes can stand behind one load balancer."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from crmflow.dashboard import DashboardSettings
from crmflow.services import App, OperationFailed, UserError
from crmflow.services.up import freeze_heap

from ._app import create_app
from ._settings import ApiSettings
from .routers import v1_routers

log = logging.getLogger("crmflow.api")


# The API's settings a deployment may change, from the environment of `serve` and `up`.
SETTINGS_FROM_ENV = {
    "CRMFLOW_API_RATE_LIMIT": "rate_limit_per_second",
    "CRMFLOW_API_RATE_BURST": "rate_limit_burst",
    "CRMFLOW_API_MAX_BODY_BYTES": "max_body_bytes",
}


def api_settings(env: Mapping[str, str]) -> ApiSettings:
    """ApiSettings with what the environment sets; a bad value is bad input naming it."""
    values: dict[str, str] = {}
    for variable, name in SETTINGS_FROM_ENV.items():
        value = env.get(variable, "").strip()
        if value:
            values[name] = value
    try:
        return ApiSettings.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0])
        variable = next(v for v, n in SETTINGS_FROM_ENV.items() if n == name)
        raise UserError(f"{variable}={values[name]!r}: {error['msg']}") from None


def build_api(app: App, settings: ApiSettings | None = None) -> FastAPI:
    """The API over an App's store and (lazily connected) Temporal client."""
    return create_app(
        engine=app.engine,
        temporal=app.client,
        settings=settings,
        routers=v1_routers(),
        services=app,
        dashboard=DashboardSettings(
            temporal_ui_url=app.settings.temporal_ui_url, namespace=app.settings.namespace
        ),
    )


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the command's (`stop_on_signals`) stop it, in
    order with the worker."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_api(
    api: FastAPI,
    stop: asyncio.Event,
    *,
    host: str,
    port: int,
    on_ready: Callable[[], None] = lambda: None,
) -> None:
    """Serve `api` until `stop` is set. An address that cannot be listened on (in use, not
    this machine's) is an OperationFailed naming it."""
    try:
        sock = socket.create_server((host, port), family=_family(host))
    except OSError as exc:
        raise OperationFailed(
            f"the API cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    server = _Server(uvicorn.Config(api, log_level="warning", lifespan="off"))
    freeze_heap()
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                serving.result()
                raise OperationFailed(f"the API did not start on {host}:{port}")
            await asyncio.sleep(0.05)
        on_ready()
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
    finally:
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
        sock.close()


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def url_of(host: str, port: int) -> str:
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}"
