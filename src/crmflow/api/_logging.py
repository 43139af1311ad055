"""One log line per request, and the last resort for unexpected errors.

The log line has the method, the path (never the query string), the status, the time taken,
the name of the API key and the request id; never a header's value, so never a key.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._problems import INTERNAL_ERROR, problem_response

log = logging.getLogger("crmflow.api")
REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_state(scope: Scope) -> dict[str, Any]:
    """The request's state (what `request.state` reads and writes)."""
    state: dict[str, Any] = scope.setdefault("state", {})
    return state


class RequestLogMiddleware:
    """Gives each request an id (the client's X-Request-ID when it is a plain token), logs one
    line when it is answered, and turns an unexpected exception into a 500 problem: logged
    with its traceback, never shown to the client."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get(REQUEST_ID_HEADER.lower(), "")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        state = request_state(scope)
        state["request_id"] = request_id
        status = 0
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception(
                "unexpected error in %s %s (request %s)", scope["method"], scope["path"], request_id
            )
            if status:
                raise  # the response has begun: the server can only close the connection
            detail = f"unexpected error; the server's log has it under request id {request_id}"
            await problem_response(INTERNAL_ERROR, detail)(scope, receive, send_with_id)
        finally:
            principal = state.get("principal")
            log.info(
                "%s %s -> %s in %.1f ms (key %s, request %s)",
                scope["method"],
                scope["path"],
                status or "no response",
                (time.perf_counter() - started) * 1000,
                getattr(principal, "name", "-"),
                request_id,
            )
