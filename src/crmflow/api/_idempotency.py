"""`Idempotency-Key` on POST requests (the IETF httpapi draft's semantics).

The first request with a key runs; its response (status, body, Content-Type and Location) is
stored in the same transaction as the request's own writes and returned, marked
`Idempotent-Replayed: true`, to every retry with the same key, method, path and body for
`idempotency_ttl_seconds` (24 h). The key is scoped to the API key that sent it. A retry while
the first request still runs gets 409; the same key with another request gets 422 (the draft's
choice: the client made an error, retrying will not help). Only a successful response (below
400) is kept: after an error nothing was written, so the key is released and a retry runs the
request again.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from anyio import to_thread
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request
from starlette.responses import Response

from crmflow.store import (
    Claim,
    ClaimOutcome,
    IdempotencyRepository,
    StoredResponse,
    database_now,
)

from ._auth import Principal
from ._problems import (
    IDEMPOTENCY_KEY_IN_USE,
    IDEMPOTENCY_KEY_REUSED,
    INVALID_REQUEST,
    ApiProblem,
)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# Response headers kept with a stored response.
KEPT_HEADERS = ("content-type", "location")
# Printable ASCII (space included), as the draft's sf-string allows, up to the column's length.
_KEY = re.compile(r"[\x20-\x7e]{1,255}")
PURGE_EVERY_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class Held:
    """A key this request holds while it runs."""

    record_id: int
    owner: str


def request_hash(request: Request, body: bytes) -> str:
    digest = hashlib.sha256()
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    for part in (request.method.encode(), target.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def replay(stored: StoredResponse) -> Response:
    response = Response(stored.body, status_code=stored.status)
    for name, value in stored.headers:
        response.headers[name] = value
    response.headers[REPLAYED_HEADER] = "true"
    return response


class IdempotencyKeys:
    def __init__(
        self,
        *,
        reads: sessionmaker[Session],
        writes: sessionmaker[Session],
        ttl: timedelta,
        hold: timedelta,
        write_lock: threading.Lock | None = None,
    ) -> None:
        self.reads = reads
        self.writes = writes
        # SQLite: writers of this process take turns (see _routing.UnitOfWork).
        self.write_lock = write_lock or contextlib.nullcontext()
        self.ttl = ttl
        self.hold = hold
        self._purged_at = float("-inf")

    def _peek(self, key_id: int, key: str, digest: str) -> Claim | None:
        with self.reads() as session:
            return IdempotencyRepository(session).peek(
                key_id, key, digest, now=database_now(session)
            )

    def _claim(self, key_id: int, key: str, digest: str, owner: str, purge: bool) -> Claim:
        with self.write_lock, self.writes.begin() as session:
            keys = IdempotencyRepository(session)
            now = database_now(session)
            if purge:
                keys.purge(now=now)
            return keys.claim(key_id, key, digest, owner=owner, now=now, hold=self.hold)

    async def begin(self, request: Request, principal: Principal) -> Held | Response | None:
        """Before the endpoint runs: None (no key: run it), a held key (run it), or the
        response to give instead (a replay); 409 or 422 raised."""
        if request.method != "POST":
            return None
        key = request.headers.get(HEADER)
        if key is None:
            return None
        if not _KEY.fullmatch(key):
            raise ApiProblem(
                INVALID_REQUEST,
                f"{HEADER} must be 1 to 255 printable ASCII characters",
                errors=[(["header", HEADER], "1 to 255 printable ASCII characters")],
            )
        digest = request_hash(request, await request.body())
        # A read first: a retry is answered without queueing for a write (SQLite has one
        # writer, which may be the very request being retried).
        claim = await to_thread.run_sync(self._peek, principal.key_id, key, digest)
        owner = uuid.uuid4().hex
        if claim is None:
            purge = time.monotonic() - self._purged_at > PURGE_EVERY_SECONDS
            if purge:
                self._purged_at = time.monotonic()
            claim = await to_thread.run_sync(
                self._claim, principal.key_id, key, digest, owner, purge
            )
        outcome = claim.outcome
        if outcome is ClaimOutcome.CLAIMED:
            assert claim.record_id is not None
            return Held(claim.record_id, owner)
        if outcome is ClaimOutcome.REPLAY:
            assert claim.response is not None
            return replay(claim.response)
        if outcome is ClaimOutcome.MISMATCH:
            raise ApiProblem(
                IDEMPOTENCY_KEY_REUSED,
                f"this {HEADER} was used for a different request (another method, path or "
                "body); use a new key for a new request",
                errors=[(["header", HEADER], "used for a different request")],
            )
        raise ApiProblem(
            IDEMPOTENCY_KEY_IN_USE,
            f"a request with this {HEADER} is in progress; retry once it has finished",
            headers={"Retry-After": "1"},
        )

    def complete(self, session: Session, held: Held, response: Response) -> bool:
        """Store the response in the request's own transaction (`session`); False when the
        request lost its key (it ran longer than the hold and a retry took it over)."""
        kept = response.headers
        headers = [(name, kept[name]) for name in KEPT_HEADERS if name in kept]
        return IdempotencyRepository(session).complete(
            held.record_id,
            owner=held.owner,
            status=response.status_code,
            headers=headers,
            body=bytes(response.body),
            expires_at=database_now(session) + self.ttl,
        )

    def _release(self, held: Held) -> None:
        with self.write_lock, self.writes.begin() as session:
            IdempotencyRepository(session).release(held.record_id, owner=held.owner)

    async def release(self, held: Held) -> None:
        await to_thread.run_sync(self._release, held)


def lost_key() -> ApiProblem:
    return ApiProblem(
        IDEMPOTENCY_KEY_IN_USE,
        f"this request ran so long that a retry took its {HEADER} over; nothing it did was kept",
    )
