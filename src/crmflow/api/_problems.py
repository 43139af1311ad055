"""Errors as RFC 9457 problem details (`application/problem+json`), for every error the API
answers: `{type, title, status, detail, errors: [{loc, msg}]}`.

`type` is stable per kind of error (`urn:crmflow:problem:not-found`): clients branch on it,
never on `title` or `detail`, which are for people. `errors` locates each problem in the
request, as a path: `["body", "records", 3, "id"]`, `["path", "object_type"]`,
`["header", "Idempotency-Key"]`; it is empty when the problem is the request as a whole.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.responses import Response

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:crmflow:problem:"

Loc = Sequence[str | int]


@dataclass(frozen=True, slots=True)
class ProblemKind:
    code: str
    status: int
    title: str

    @property
    def type(self) -> str:
        return TYPE_PREFIX + self.code


BAD_REQUEST = ProblemKind("bad-request", 400, "Bad request")
UNAUTHORIZED = ProblemKind("unauthorized", 401, "Missing or invalid API key")
FORBIDDEN = ProblemKind("forbidden", 403, "The API key's scope does not allow this")
NOT_FOUND = ProblemKind("not-found", 404, "Not found")
METHOD_NOT_ALLOWED = ProblemKind("method-not-allowed", 405, "Method not allowed")
CONFLICT = ProblemKind("conflict", 409, "Conflict")
IDEMPOTENCY_KEY_IN_USE = ProblemKind(
    "idempotency-key-in-use", 409, "A request with this Idempotency-Key is in progress"
)
CONTENT_TOO_LARGE = ProblemKind("content-too-large", 413, "Request body too large")
UNSUPPORTED_MEDIA_TYPE = ProblemKind("unsupported-media-type", 415, "Unsupported media type")
INVALID_REQUEST = ProblemKind("invalid-request", 422, "The request is not valid")
IDEMPOTENCY_KEY_REUSED = ProblemKind(
    "idempotency-key-reused", 422, "The Idempotency-Key was used for a different request"
)
RATE_LIMITED = ProblemKind("rate-limited", 429, "Too many requests")
INTERNAL_ERROR = ProblemKind("internal-error", 500, "Internal server error")
UNAVAILABLE = ProblemKind("unavailable", 503, "Service unavailable")
NOT_READY = ProblemKind("not-ready", 503, "Not ready")

KINDS: tuple[ProblemKind, ...] = (
    BAD_REQUEST,
    UNAUTHORIZED,
    FORBIDDEN,
    NOT_FOUND,
    METHOD_NOT_ALLOWED,
    CONFLICT,
    IDEMPOTENCY_KEY_IN_USE,
    CONTENT_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    INVALID_REQUEST,
    IDEMPOTENCY_KEY_REUSED,
    RATE_LIMITED,
    INTERNAL_ERROR,
    UNAVAILABLE,
    NOT_READY,
)
_BY_STATUS = {kind.status: kind for kind in reversed(KINDS)}


class ProblemItem(BaseModel):
    """One problem, located in the request."""

    loc: list[str | int] = Field(description='Path into the request: ["body", "records", 3]')
    msg: str


class Problem(BaseModel):
    """An error (RFC 9457)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="Stable per kind of error: urn:crmflow:problem:<code>")
    title: str
    status: int
    detail: str
    errors: list[ProblemItem] = Field(default_factory=list)


class ApiProblem(Exception):
    """Raise to answer with a problem; nothing the request wrote is kept."""

    def __init__(
        self,
        kind: ProblemKind,
        detail: str,
        *,
        errors: Sequence[tuple[Loc, str]] = (),
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.errors = list(errors)
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


def problem_body(
    kind: ProblemKind,
    detail: str,
    errors: Sequence[tuple[Loc, str]] = (),
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    content: dict[str, Any] = {
        "type": kind.type,
        "title": kind.title,
        "status": kind.status,
        "detail": detail,
        "errors": [{"loc": list(loc), "msg": msg} for loc, msg in errors],
    }
    content.update(extra or {})
    return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def problem_response(
    kind: ProblemKind,
    detail: str,
    *,
    errors: Sequence[tuple[Loc, str]] = (),
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    return Response(
        problem_body(kind, detail, errors, extra),
        status_code=kind.status,
        headers=dict(headers or {}),
        media_type=PROBLEM_MEDIA_TYPE,
    )


def kind_of_status(status: int) -> ProblemKind:
    found = _BY_STATUS.get(status)
    if found is not None:
        return found
    return ProblemKind(f"http-{status}", status, "Error")


def _shown_loc(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def validation_items(errors: Sequence[Mapping[str, Any]]) -> list[tuple[Loc, str]]:
    """FastAPI's validation errors as (loc, msg), without the input (it may hold secrets)."""
    items: list[tuple[Loc, str]] = []
    for error in errors:
        loc = [part if isinstance(part, int) else str(part) for part in error.get("loc", ())]
        msg = str(error.get("msg", "invalid"))
        if error.get("type") == "json_invalid":
            # FastAPI gives ("body", <character position>): a position is no path.
            position = loc[1] if len(loc) > 1 else None
            reason = (error.get("ctx") or {}).get("error", "")
            loc = ["body"]
            msg = f"invalid JSON at character {position}: {reason}".rstrip(": ")
        items.append((loc, msg))
    return items


def summary(items: Sequence[tuple[Loc, str]]) -> str:
    if not items:
        return "the request is not valid"
    loc, msg = items[0]
    more = f" (and {len(items) - 1} more)" if len(items) > 1 else ""
    return f"{_shown_loc(loc)}: {msg}{more}"


async def api_problem_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiProblem)
    return problem_response(
        exc.kind, exc.detail, errors=exc.errors, headers=exc.headers, extra=exc.extra
    )


async def validation_problem_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    items = validation_items(exc.errors())
    return problem_response(INVALID_REQUEST, summary(items), errors=items)


async def http_problem_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = kind_of_status(exc.status_code)
    detail = exc.detail if isinstance(exc.detail, str) else kind.title
    if kind is NOT_FOUND and detail == "Not Found":
        detail = f"no such path: {request.url.path}"
    elif kind is METHOD_NOT_ALLOWED and detail == "Method Not Allowed":
        detail = f"{request.method} is not allowed on {request.url.path}"
    headers = dict(exc.headers or {})
    return problem_response(kind, detail, headers=headers)


__all__ = [
    "KINDS",
    "PROBLEM_MEDIA_TYPE",
    "ApiProblem",
    "Problem",
    "ProblemItem",
    "ProblemKind",
    "problem_response",
]
