"""The application factory: `create_app(engine=..., temporal=..., settings=..., routers=...)`.

Everything the API needs is handed in; nothing is read from the environment or made at import
time, so tests, `crmflow serve` and `crmflow up` each build the API they need.

Public, without a key: `/healthz`, `/readyz` (what load balancers and orchestrators call) and
the documentation, `/openapi.json` and `/docs` (with its assets): the API's description is
the product's published contract, not a secret, and a browser cannot send a key to open a page.
The docs page calls the API with the key typed into its "Authorize" box. `ApiSettings(docs=
False)` turns the documentation off. Every other route needs a key: see `_routing`.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from importlib.resources import files
from typing import Any

import anyio
from anyio import to_thread
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from temporalio.client import Client

from crmflow.dashboard import DashboardSettings, mount_dashboard
from crmflow.store import create_session_factory

from ._auth import KeyLookup
from ._idempotency import IdempotencyKeys
from ._limits import BodyLimitMiddleware, RateLimiter
from ._logging import RequestLogMiddleware
from ._problems import (
    NOT_READY,
    PROBLEM_MEDIA_TYPE,
    UNAVAILABLE,
    ApiProblem,
    Problem,
    api_problem_handler,
    http_problem_handler,
    problem_response,
    validation_problem_handler,
)
from ._routing import ApiContext, PublicRoute, api_context, is_scoped, require_scoped_route
from ._settings import ApiSettings

log = logging.getLogger("crmflow.api")

OPENAPI_URL = "/openapi.json"
DOCS_URL = "/docs"
DOCS_ASSETS_URL = "/docs/assets"


def _version() -> str:
    try:
        return importlib.metadata.version("crmflow")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def create_app(
    *,
    engine: Engine,
    temporal: Callable[[], Awaitable[Client]],
    settings: ApiSettings | None = None,
    routers: Sequence[APIRouter] = (),
    services: Any = None,
    dashboard: DashboardSettings | None = None,
) -> FastAPI:
    """The HTTP API over a store (`engine`, migrated) and a Temporal client (`temporal`: called
    when a request needs the client; it may connect on its first call and keep the client).

    `routers` are the endpoints, each made by `scoped_router(scope)`; `services` is whatever
    they need besides (endpoints get it through the `services` dependency); `dashboard`: the
    web dashboard's settings (its links into the Temporal Web UI)."""
    settings = settings or ApiSettings()
    for router in routers:
        if not is_scoped(router):
            raise TypeError(
                f"router {router!r} has no API key scope: make it with scoped_router(scope)"
            )
    reads = create_session_factory(engine, read_only=True)
    writes = create_session_factory(engine)
    write_lock = threading.Lock() if engine.dialect.name == "sqlite" else None
    context = ApiContext(
        engine=engine,
        temporal=temporal,
        settings=settings,
        keys=KeyLookup(
            reads=reads,
            writes=writes,
            cache_seconds=settings.key_cache_seconds,
            touch_every=timedelta(seconds=settings.key_last_used_every_seconds),
        ),
        limiter=RateLimiter(rate=settings.rate_limit_per_second, burst=settings.rate_limit_burst),
        idempotency=IdempotencyKeys(
            reads=reads,
            writes=writes,
            ttl=timedelta(seconds=settings.idempotency_ttl_seconds),
            hold=timedelta(seconds=settings.idempotency_hold_seconds),
            write_lock=write_lock,
        ),
        services=services,
        write_lock=write_lock,
    )
    app = FastAPI(
        title="crmflow API",
        version=_version(),
        description=(
            "Records, events and lists in; workflows driven. Every request but /healthz and "
            "/readyz needs `Authorization: Bearer <API key>`. Errors are "
            "`application/problem+json`."
        ),
        openapi_url=OPENAPI_URL if settings.docs else None,
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(require_scoped_route)],
    )
    app.state.crmflow = context
    _problems_in_openapi(app)
    app.add_exception_handler(ApiProblem, api_problem_handler)
    app.add_exception_handler(RequestValidationError, validation_problem_handler)
    app.add_exception_handler(HTTPException, http_problem_handler)
    for error in (OperationalError, PoolTimeout):
        app.add_exception_handler(error, _store_unavailable)
    # The last added runs first: log and catch everything, then refuse oversized bodies.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestLogMiddleware)
    app.include_router(_health_router())
    if settings.docs:
        _add_docs(app)
    for router in routers:
        app.include_router(router)
    mount_dashboard(app, engine=engine, settings=dashboard)
    return app


async def _store_unavailable(request: Request, exc: Exception) -> Response:
    """The store is down, unreachable or busy past its timeouts: 503, to retry (a client must
    not take it for a bug, nor retry a 500 blindly)."""
    log.warning("store unavailable in %s %s: %s", request.method, request.url.path, exc)
    return problem_response(
        UNAVAILABLE, "the store did not answer; retry later", headers={"Retry-After": "1"}
    )


def _problems_in_openapi(app: FastAPI) -> None:
    """Error responses are documented as `application/problem+json` (FastAPI documents every
    response model as application/json)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                for response in operation.get("responses", {}).values():
                    content = response.get("content", {})
                    schema = content.get("application/json", {}).get("schema", {})
                    if schema.get("$ref", "").endswith("/Problem"):
                        content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _health_router() -> APIRouter:
    router = APIRouter(route_class=PublicRoute, tags=["health"])

    @router.get("/healthz", summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="The store and Temporal are reachable",
        responses={
            503: {"description": "The store or Temporal is not reachable", "model": Problem}
        },
    )
    async def readyz(request: Request) -> dict[str, Any]:
        context = api_context(request)
        timeout = context.settings.readiness_timeout_seconds
        store, temporal = await asyncio.gather(
            _check("store", timeout, _store_check(context.engine)),
            _check("temporal", timeout, _temporal_check(context.temporal, timeout)),
        )
        checks = {"store": store, "temporal": temporal}
        failed = [(name, state) for name, state in checks.items() if state != "ok"]
        if failed:
            raise ApiProblem(
                NOT_READY,
                "; ".join(f"{name} {state}" for name, state in failed),
                errors=[([name], state) for name, state in failed],
                extra={"checks": checks},
            )
        return {"status": "ready", "checks": checks}

    return router


def _store_check(engine: Engine) -> Callable[[], Awaitable[None]]:
    def ping() -> None:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    async def check() -> None:
        await to_thread.run_sync(ping, abandon_on_cancel=True)

    return check


def _temporal_check(
    temporal: Callable[[], Awaitable[Client]], timeout: float
) -> Callable[[], Awaitable[None]]:
    async def check() -> None:
        client = await temporal()
        healthy = await client.service_client.check_health(timeout=timedelta(seconds=timeout))
        if not healthy:
            raise RuntimeError("the workflow service is not serving")

    return check


async def _check(name: str, timeout: float, check: Callable[[], Awaitable[None]]) -> str:
    """'ok', or what went wrong, in words that show nothing of the setup (the page is
    public); the log has the error itself."""
    try:
        with anyio.fail_after(timeout):
            await check()
    except TimeoutError:
        log.warning("readiness: %s did not answer within %g s", name, timeout)
        return f"did not answer within {timeout:g} s"
    except Exception as exc:
        log.warning("readiness: %s unreachable: %s", name, exc)
        return "unreachable"
    return "ok"


def _add_docs(app: FastAPI) -> None:
    """Swagger UI from the assets the `fastapi-offline` wheel ships: the page loads nothing
    from the internet (no CDN, no online validator)."""
    assets = files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=str(assets)), name="docs-assets")

    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{OPENAPI_URL}",
            title="crmflow API",
            swagger_js_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},
        )

    app.add_route(DOCS_URL, docs, include_in_schema=False)
