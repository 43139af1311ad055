"""The HTTP API (SPEC §7): FastAPI on uvicorn, over the store and Temporal.

`create_app(engine=..., temporal=..., settings=..., routers=...)` builds it; endpoints live on
routers made by `scoped_router(scope)` and get what they need through the dependencies below:
`CurrentKey` (the caller's API key), `StoreSession` / `RequestUnitOfWork` (the request's one
store transaction, committed by the route after a success), `TemporalClient`, `services`.
Errors are raised as `ApiProblem` (or any FastAPI/Starlette HTTP error) and answered as
`application/problem+json`.
"""

from crmflow.store import ApiScope

from ._app import DOCS_URL, OPENAPI_URL, create_app
from ._auth import Principal
from ._idempotency import HEADER as IDEMPOTENCY_HEADER
from ._idempotency import REPLAYED_HEADER
from ._logging import REQUEST_ID_HEADER
from ._problems import (
    BAD_REQUEST,
    CONFLICT,
    CONTENT_TOO_LARGE,
    FORBIDDEN,
    IDEMPOTENCY_KEY_IN_USE,
    IDEMPOTENCY_KEY_REUSED,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    KINDS,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    NOT_READY,
    PROBLEM_MEDIA_TYPE,
    RATE_LIMITED,
    UNAUTHORIZED,
    UNAVAILABLE,
    UNSUPPORTED_MEDIA_TYPE,
    ApiProblem,
    Problem,
    ProblemItem,
    ProblemKind,
)
from ._routing import (
    JSON,
    ApiContext,
    CurrentKey,
    RequestUnitOfWork,
    StoreSession,
    TemporalClient,
    UnitOfWork,
    scoped_router,
    services,
)
from ._settings import ApiSettings

__all__ = [
    "BAD_REQUEST",
    "CONFLICT",
    "CONTENT_TOO_LARGE",
    "DOCS_URL",
    "FORBIDDEN",
    "IDEMPOTENCY_HEADER",
    "IDEMPOTENCY_KEY_IN_USE",
    "IDEMPOTENCY_KEY_REUSED",
    "INTERNAL_ERROR",
    "INVALID_REQUEST",
    "JSON",
    "KINDS",
    "METHOD_NOT_ALLOWED",
    "NOT_FOUND",
    "NOT_READY",
    "OPENAPI_URL",
    "PROBLEM_MEDIA_TYPE",
    "RATE_LIMITED",
    "REPLAYED_HEADER",
    "REQUEST_ID_HEADER",
    "UNAUTHORIZED",
    "UNAVAILABLE",
    "UNSUPPORTED_MEDIA_TYPE",
    "ApiContext",
    "ApiProblem",
    "ApiScope",
    "ApiSettings",
    "CurrentKey",
    "Principal",
    "Problem",
    "ProblemItem",
    "ProblemKind",
    "RequestUnitOfWork",
    "StoreSession",
    "TemporalClient",
    "UnitOfWork",
    "create_app",
    "scoped_router",
    "services",
]
