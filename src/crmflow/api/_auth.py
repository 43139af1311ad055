"""Who is calling: the API key of `Authorization: Bearer <key>`, and what its scope allows.

Keys are looked up in the store by their hash, and each answer (a key, a revoked key, no such
key) is kept in this process for `key_cache_seconds`. A revoke is written to the store, which
every API process reads again once its cached answer is that old: a revoked key is refused
everywhere at most `key_cache_seconds` (2 s by default) after the revoke, however many
processes run, with no message between them.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

from anyio import to_thread
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request

from crmflow.store import ApiKeyRepository, ApiScope, database_now, hash_key, looks_like_key

from ._problems import UNAUTHORIZED, ApiProblem

REALM = 'Bearer realm="crmflow"'
# How many answers a process keeps (so that a flood of made-up keys cannot grow it).
CACHE_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """An API key as a request presents it."""

    key_id: int
    name: str
    scope: ApiScope

    def allows(self, needed: ApiScope) -> bool:
        return self.scope is ApiScope.ADMIN or self.scope is needed


class _Refused(Enum):
    UNKNOWN = "unknown"
    REVOKED = "revoked"


_Answer = Principal | _Refused


def _unauthorized(detail: str, *, error: str | None = "invalid_token") -> ApiProblem:
    challenge = REALM if error is None else f'{REALM}, error="{error}"'
    return ApiProblem(UNAUTHORIZED, detail, headers={"WWW-Authenticate": challenge})


class KeyLookup:
    """Finds the key of a request, through a small per-process cache."""

    def __init__(
        self,
        *,
        reads: sessionmaker[Session],
        writes: sessionmaker[Session],
        cache_seconds: float,
        touch_every: timedelta,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reads = reads
        self.writes = writes
        self.cache_seconds = cache_seconds
        self.touch_every = touch_every
        self.clock = clock
        self._cache: OrderedDict[str, tuple[float, _Answer]] = OrderedDict()

    def _load(self, key_hash: str) -> _Answer:
        with self.reads() as session:
            row = ApiKeyRepository(session).find_by_hash(key_hash)
            if row is None:
                return _Refused.UNKNOWN
            if row.revoked_at is not None:
                return _Refused.REVOKED
            answer = Principal(key_id=row.id, name=row.name, scope=ApiScope(row.scope))
            now = database_now(session)
            stale = row.last_used_at is None or row.last_used_at <= now - self.touch_every
        if stale:
            with self.writes.begin() as session:
                ApiKeyRepository(session).touch(
                    answer.key_id, now=database_now(session), every=self.touch_every
                )
        return answer

    async def find(self, key: str) -> _Answer:
        key_hash = hash_key(key)
        now = self.clock()
        cached = self._cache.get(key_hash)
        if cached is not None and cached[0] > now:
            return cached[1]
        answer = await to_thread.run_sync(self._load, key_hash)
        self._cache[key_hash] = (self.clock() + self.cache_seconds, answer)
        self._cache.move_to_end(key_hash)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return answer

    async def authenticate(self, request: Request) -> Principal:
        """The request's key, or 401 (with `WWW-Authenticate: Bearer`)."""
        header = request.headers.get("authorization")
        if not header:
            raise _unauthorized(
                "no API key: send the header 'Authorization: Bearer <key>'", error=None
            )
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized(
                "the Authorization header must be 'Bearer <key>'", error="invalid_request"
            )
        if not looks_like_key(token):
            raise _unauthorized("not a crmflow API key (crmflow_ and 40 more characters)")
        answer = await self.find(token)
        if answer is _Refused.UNKNOWN:
            raise _unauthorized("unknown API key")
        if answer is _Refused.REVOKED:
            raise _unauthorized("this API key was revoked")
        assert isinstance(answer, Principal)
        return answer
