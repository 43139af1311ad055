"""Idempotency keys of the HTTP API: a POST sent again with the same `Idempotency-Key` gets the
first response back instead of being done twice.

One row per (API key, idempotency key). A request first claims the row (state `in_flight`,
with its own `owner` token and a short `expires_at`), in a transaction of its own so that other
processes see it. It then stores its response in the transaction of its own writes, and only
while it still owns the row: a request that took so long that a retry took the row over can no
longer commit anything (the owner token is a fence, as the dispatcher's lease token is). A row
past `expires_at` is gone: a response kept long enough, or a claim whose request died before
it committed (its writes were rolled back with it, so running the request again is safe).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ._tables import IdempotencyRecord

IN_FLIGHT = "in_flight"
DONE = "done"


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


class ClaimOutcome(Enum):
    CLAIMED = "claimed"
    """The caller holds the key now: run the request."""
    REPLAY = "replay"
    """Done before with the same request: answer with the stored response."""
    IN_FLIGHT = "in_flight"
    """Another request with this key is running."""
    MISMATCH = "mismatch"
    """The key was used for a different request."""


@dataclass(frozen=True, slots=True)
class Claim:
    outcome: ClaimOutcome
    record_id: int | None = None
    response: StoredResponse | None = None


def _decide(row: IdempotencyRecord, request_hash: str) -> Claim:
    """What a row that has not expired means for a request."""
    if row.request_hash != request_hash:
        return Claim(ClaimOutcome.MISMATCH, row.id)
    if row.state == DONE:
        response = StoredResponse(
            status=row.response_status or 200,
            headers=tuple((name, value) for name, value in row.response_headers or []),
            body=row.response_body or b"",
        )
        return Claim(ClaimOutcome.REPLAY, row.id, response)
    return Claim(ClaimOutcome.IN_FLIGHT, row.id)


class IdempotencyRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def _row(self, api_key_id: int, key: str) -> IdempotencyRecord | None:
        return self.session.scalars(
            select(IdempotencyRecord).where(
                IdempotencyRecord.api_key_id == api_key_id, IdempotencyRecord.key == key
            )
        ).one_or_none()

    def peek(self, api_key_id: int, key: str, request_hash: str, *, now: datetime) -> Claim | None:
        """What the key means for this request without writing (None: it is free to claim).
        Lets a retry be answered without waiting for a write lock."""
        row = self._row(api_key_id, key)
        if row is None or row.expires_at <= now:
            return None
        return _decide(row, request_hash)

    def claim(
        self,
        api_key_id: int,
        key: str,
        request_hash: str,
        *,
        owner: str,
        now: datetime,
        hold: timedelta,
    ) -> Claim:
        """Claim the key for a request (until `now + hold`), or say why not. Commit before
        running the request, so that other processes see the claim."""
        row = self._row(api_key_id, key)
        if row is None:
            row = IdempotencyRecord(
                api_key_id=api_key_id,
                key=key,
                request_hash=request_hash,
                owner=owner,
                state=IN_FLIGHT,
                created_at=now,
                expires_at=now + hold,
            )
            try:
                with self.session.begin_nested():
                    self.session.add(row)
                    self.session.flush()
            except IntegrityError:
                # Claimed by another request at the same moment.
                return Claim(ClaimOutcome.IN_FLIGHT)
            return Claim(ClaimOutcome.CLAIMED, row.id)
        if row.expires_at > now:
            return _decide(row, request_hash)
        # Gone: take the row over, unless another request just did (compare and set).
        result = self.session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.id == row.id, IdempotencyRecord.owner == row.owner)
            .where(IdempotencyRecord.expires_at <= now)
            .values(
                request_hash=request_hash,
                owner=owner,
                state=IN_FLIGHT,
                created_at=now,
                expires_at=now + hold,
                response_status=None,
                response_headers=None,
                response_body=None,
            )
            .execution_options(synchronize_session=False)
        )
        if not cast(CursorResult[Any], result).rowcount:
            return Claim(ClaimOutcome.IN_FLIGHT, row.id)
        return Claim(ClaimOutcome.CLAIMED, row.id)

    def complete(
        self,
        record_id: int,
        *,
        owner: str,
        status: int,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        expires_at: datetime,
    ) -> bool:
        """Store the response of the request that owns the row, in that request's transaction.
        False when it no longer owns it: the caller must roll its writes back."""
        result = self.session.execute(
            update(IdempotencyRecord)
            .where(
                IdempotencyRecord.id == record_id,
                IdempotencyRecord.owner == owner,
                IdempotencyRecord.state == IN_FLIGHT,
            )
            .values(
                state=DONE,
                expires_at=expires_at,
                response_status=status,
                response_headers=[[name, value] for name, value in headers],
                response_body=body,
            )
            .execution_options(synchronize_session=False)
        )
        return bool(cast(CursorResult[Any], result).rowcount)

    def release(self, record_id: int, *, owner: str) -> None:
        """Give the key up (the request failed and wrote nothing): a retry runs it again."""
        self.session.execute(
            delete(IdempotencyRecord)
            .where(
                IdempotencyRecord.id == record_id,
                IdempotencyRecord.owner == owner,
                IdempotencyRecord.state == IN_FLIGHT,
            )
            .execution_options(synchronize_session=False)
        )

    def purge(self, *, now: datetime, limit: int = 1000) -> int:
        """Delete up to `limit` rows past their expiry; returns how many."""
        expired = (
            select(IdempotencyRecord.id)
            .where(IdempotencyRecord.expires_at <= now)
            .order_by(IdempotencyRecord.expires_at)
            .limit(limit)
            .scalar_subquery()
        )
        result = self.session.execute(
            delete(IdempotencyRecord)
            .where(IdempotencyRecord.id.in_(expired))
            .execution_options(synchronize_session=False)
        )
        return int(cast(CursorResult[Any], result).rowcount)


__all__ = ["Claim", "ClaimOutcome", "IdempotencyRepository", "StoredResponse"]
