"""Limits on what one request and one key may cost: the body size and the request rate."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._problems import CONTENT_TOO_LARGE, problem_response


class BodyLimitMiddleware:
    """Answers 413 to a request whose body is over `max_bytes`: at once when Content-Length says
    so, and while reading otherwise (a chunked body has no Content-Length). The body is read
    here, before the application sees the request, so the limit holds whatever an endpoint
    does, and an oversized request is refused before any work (authentication included)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: str) -> None:
        detail = f"the request body is {size}: at most {self.max_bytes:,} bytes are accepted"
        # The rest of the body is not read: the server closes the connection after this.
        response = problem_response(CONTENT_TOO_LARGE, detail, headers={"Connection": "close"})
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send, f"{int(declared):,} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send, f"over {self.max_bytes:,} bytes")
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # e.g. waiting for the client to disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per API key, in this process: `rate` requests per second on average, up
    to `burst` at once. Several API processes each keep their own buckets, so a key may make
    up to N times the rate across N processes."""

    def __init__(
        self, *, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[int, _Bucket] = {}

    def wait_for(self, key_id: int) -> int:
        """Take a token for the key: 0 if there was one, else the seconds to wait before the
        next one (at least 1: what `Retry-After` says)."""
        if self.rate <= 0:
            return 0
        now = self.clock()
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = _Bucket(tokens=float(self.burst), updated=now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0
        return max(1, math.ceil((1 - bucket.tokens) / self.rate))
