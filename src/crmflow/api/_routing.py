"""How every endpoint runs: its API key and scope, its limits, its Idempotency-Key, and its one
store transaction.

Endpoints live on routers made by `scoped_router(scope)`. Its route class runs, in this order,
before the endpoint: authentication (401), the key's rate (429), the scope (403), the body's
media type (415), the Idempotency-Key (a replay, 409 or 422). The endpoint then works in one
store transaction (`StoreSession`, or `UnitOfWork.sessions` for code that opens its own
sessions: they join the same transaction through savepoints), which the route commits after
the endpoint returned a success, together with the stored response of an Idempotency-Key, and
before the client sees the response. Any error, raised or returned (status 400 or more), rolls
everything back: nothing is partly written.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import anyio
from anyio import to_thread
from fastapi import APIRouter, Depends, Request, Security
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker
from starlette.responses import Response
from temporalio.client import Client

from crmflow.store import SQLITE_BEGIN, ApiScope

from ._auth import KeyLookup, Principal
from ._idempotency import Held, IdempotencyKeys, lost_key
from ._json import read_strictly
from ._limits import RateLimiter
from ._problems import (
    FORBIDDEN,
    INTERNAL_ERROR,
    PROBLEM_MEDIA_TYPE,
    RATE_LIMITED,
    UNSUPPORTED_MEDIA_TYPE,
    ApiProblem,
    Problem,
)
from ._settings import ApiSettings

log = logging.getLogger("crmflow.api")

JSON = ("application/json",)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True)
class ApiContext:
    """What the API's routes share: kept on `app.state.crmflow` by `create_app`."""

    engine: Engine
    temporal: Callable[[], Awaitable[Client]]
    settings: ApiSettings
    keys: KeyLookup
    limiter: RateLimiter
    idempotency: IdempotencyKeys
    services: Any
    # SQLite: the turn of this process's writers (see UnitOfWork); None elsewhere.
    write_lock: threading.Lock | None = None


class UnitOfWork:
    """The store transaction of one request. It begins at the request's first statement (so a
    SQLite write lock is held from then on only), and only the route commits it: sessions made
    by `sessions` join it through savepoints, and the request's own session refuses a commit
    from anyone else.

    `write_lock` (SQLite): writers of this process take turns on it before they begin, instead
    of polling SQLite's lock with its busy handler, whose growing sleeps let a waiting request
    lose its turn again and again (a long tail of latencies)."""

    def __init__(
        self, engine: Engine, *, read_only: bool, write_lock: threading.Lock | None = None
    ) -> None:
        # SQLite: a reading request must not queue behind writers (see crmflow.store._engine).
        self._bind = engine.execution_options(**{SQLITE_BEGIN: "DEFERRED"}) if read_only else engine
        self._write_lock = None if read_only else write_lock
        self._locked = False
        self._session: Session | None = None
        self._sessions: sessionmaker[Session] | None = None
        self._committing = False
        # True while the request holds an Idempotency-Key: its response must be stored in
        # this transaction, so only the route commits (see `finish`).
        self.deferred = False

    def session(self) -> Session:
        """The request's session (one per request; it connects when first used)."""
        if self._session is None:
            self._session = Session(bind=self._bind, expire_on_commit=False)
            event.listen(self._session, "before_commit", self._before_commit)
            if self._write_lock is not None:
                # Fired in the thread of the first statement, before the BEGIN.
                event.listen(self._session, "after_transaction_create", self._take_turn)
        return self._session

    def _take_turn(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is None and not self._locked and self._write_lock is not None:
            self._write_lock.acquire()
            self._locked = True

    def _before_commit(self, session: Session) -> None:
        # Releasing a savepoint (`begin_nested`) commits nothing: allowed.
        if not self._committing and not session.in_nested_transaction():
            raise RuntimeError(
                "an endpoint committed the request's transaction: the route commits it, after "
                "the endpoint succeeded"
            )

    @property
    def sessions(self) -> sessionmaker[Session]:
        """A session factory inside this transaction, for code that opens its own sessions
        (their commits release savepoints; the route commits the whole)."""
        if self._sessions is None:
            self._sessions = sessionmaker(
                bind=self.session().connection(),
                join_transaction_mode="create_savepoint",
                expire_on_commit=False,
            )
        return self._sessions

    def finish(self) -> None:
        """Commit now, in the endpoint's thread, what the endpoint wrote, when nothing else
        must join this transaction (no Idempotency-Key is held). For an endpoint whose work is
        done and whose answer can no longer fail (plain JSON data): its SQLite write turn then
        ends here, not after a trip through the event loop and another thread, which under
        concurrency doubled the time each writer held the store. With a key held, the route
        commits, with the stored response, as for any endpoint."""
        if not self.deferred:
            self.commit()

    def commit(self) -> None:
        if self._session is None:
            return
        self._committing = True
        try:
            self._session.commit()
        finally:
            self._committing = False
        self.close()

    def close(self) -> None:
        """Roll back whatever was not committed, and give the connection back."""
        try:
            if self._session is not None:
                session, self._session = self._session, None
                self._sessions = None
                session.close()
        finally:
            if self._locked and self._write_lock is not None:
                self._locked = False
                self._write_lock.release()


def api_context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.crmflow
    return context


# The dependencies are coroutines although nothing in them waits: FastAPI runs a plain function
# dependency in a worker thread, a hop per dependency per request.


async def current_key(request: Request) -> Principal:
    principal: Principal = request.state.principal
    return principal


async def unit_of_work(request: Request) -> UnitOfWork:
    unit: UnitOfWork = request.state.unit_of_work
    return unit


async def store_session(request: Request) -> Session:
    # The session connects when first used, in the endpoint's thread.
    return (await unit_of_work(request)).session()


async def temporal_client(request: Request) -> Client:
    return await api_context(request).temporal()


async def services(request: Request) -> Any:
    return api_context(request).services


CurrentKey = Annotated[Principal, Depends(current_key)]
StoreSession = Annotated[Session, Depends(store_session)]
RequestUnitOfWork = Annotated[UnitOfWork, Depends(unit_of_work)]
TemporalClient = Annotated[Client, Depends(temporal_client)]


async def _check_media_type(request: Request, accepted: Sequence[str]) -> None:
    if request.method not in BODY_METHODS or not await request.body():
        return
    given = request.headers.get("content-type", "")
    media_type = given.split(";", 1)[0].strip().lower()
    if media_type in accepted or ("application/json" in accepted and media_type.endswith("+json")):
        return
    shown = f"not {media_type}" if media_type else "no Content-Type was given"
    raise ApiProblem(
        UNSUPPORTED_MEDIA_TYPE,
        f"send the body as {' or '.join(accepted)} ({shown})",
        errors=[(["header", "Content-Type"], f"use {' or '.join(accepted)}")],
    )


def _finish(context: ApiContext, unit: UnitOfWork, held: Held | None, response: Response) -> bool:
    """After the endpoint (in a worker thread): commit a success with its stored response; roll
    an error back. True if the key, if any, is to be released."""
    if response.status_code >= 400:
        unit.close()
        return True
    if held is None:
        unit.commit()
        return False
    if not isinstance(getattr(response, "body", None), bytes | memoryview):
        log.warning("a streamed response cannot be stored for an Idempotency-Key")
        unit.commit()
        return True
    if not context.idempotency.complete(unit.session(), held, response):
        raise lost_key()
    unit.commit()
    return False


async def _run(
    request: Request,
    handle: Callable[[Request], Coroutine[Any, Any, Response]],
    needed: ApiScope,
    media_types: Sequence[str],
) -> Response:
    context = api_context(request)
    principal = await context.keys.authenticate(request)
    request.state.principal = principal
    wait = context.limiter.wait_for(principal.key_id)
    if wait:
        rate = context.settings.rate_limit_per_second
        raise ApiProblem(
            RATE_LIMITED,
            f"over {rate:g} requests per second with this API key; retry in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    if not principal.allows(needed):
        raise ApiProblem(
            FORBIDDEN,
            f"the API key '{principal.name}' has the scope '{principal.scope}'; this needs "
            f"'{needed}' (or 'admin')",
        )
    await _check_media_type(request, media_types)
    await read_strictly(request)
    started = await context.idempotency.begin(request, principal)
    if isinstance(started, Response):
        return started
    held = started
    unit = UnitOfWork(
        context.engine,
        read_only=request.method in SAFE_METHODS,
        write_lock=context.write_lock,
    )
    unit.deferred = held is not None
    request.state.unit_of_work = unit
    try:
        response = await handle(request)
        release = await to_thread.run_sync(_finish, context, unit, held, response)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await to_thread.run_sync(unit.close)
            if held is not None:
                await context.idempotency.release(held)
        raise
    if release and held is not None:
        await context.idempotency.release(held)
    return response


class ApiRoute(APIRoute):
    """A route that needs an API key with `required_scope` (see the module docstring)."""

    required_scope: ClassVar[ApiScope]
    media_types: ClassVar[tuple[str, ...]] = JSON

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        needed, media_types = self.required_scope, self.media_types

        async def guarded(request: Request) -> Response:
            return await _run(request, handle, needed, media_types)

        return guarded


class PublicRoute(APIRoute):
    """A route anyone may call (health and readiness)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def public(request: Request) -> Response:
            request.state.public = True
            return await handle(request)

        return public


async def require_scoped_route(request: Request) -> None:
    """On every route of the app: a route that is neither scoped nor public (put on a plain
    router by mistake) never runs."""
    if getattr(request.state, "principal", None) is None and not getattr(
        request.state, "public", False
    ):
        log.error("%s %s has no API key scope: refused", request.method, request.url.path)
        raise ApiProblem(INTERNAL_ERROR, "this endpoint is not configured with an API key scope")


BEARER = HTTPBearer(
    auto_error=False,
    bearerFormat="crmflow_ and 40 characters",
    description="An API key: `crmflow api-keys create NAME --scope ingest|read|admin`.",
)


def _problem_response(description: str) -> dict[str, Any]:
    return {"description": description, "model": Problem}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _problem_response("No API key, or an unknown or revoked one."),
    403: _problem_response("The API key's scope does not allow this."),
    422: _problem_response("The request is not valid; `errors` locates each problem."),
    429: _problem_response("Over the key's rate limit; retry after `Retry-After` seconds."),
}


def scoped_router(
    scope: ApiScope, *, media_types: Sequence[str] = JSON, **options: Any
) -> APIRouter:
    """A router whose every route needs an API key allowed `scope` (`ingest`, `read` or
    `admin`; an admin key may do everything). `media_types`: the request bodies accepted (415
    for another). Other options go to `APIRouter`."""
    route_class = type(
        f"{scope.value.capitalize()}Route",
        (ApiRoute,),
        {"required_scope": scope, "media_types": tuple(media_types)},
    )
    responses = {**ERROR_RESPONSES, **options.pop("responses", {})}
    dependencies = [Security(BEARER), *options.pop("dependencies", [])]
    return APIRouter(
        route_class=route_class, responses=responses, dependencies=dependencies, **options
    )


def is_scoped(router: APIRouter) -> bool:
    return isinstance(router.route_class, type) and issubclass(router.route_class, ApiRoute)


__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "ApiContext",
    "ApiRoute",
    "CurrentKey",
    "PublicRoute",
    "RequestUnitOfWork",
    "StoreSession",
    "TemporalClient",
    "UnitOfWork",
    "scoped_router",
]
