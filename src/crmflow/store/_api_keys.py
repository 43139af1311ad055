"""API keys of the HTTP API: the key functions (pure) and the repository.

A key is `crmflow_` followed by 40 URL-safe characters (240 random bits): the fixed prefix lets
secret scanners (and people) recognise a leaked key. Only the SHA-256 of a key is stored, and a
request's key is found by that hash. A slow salted hash (bcrypt, argon2) exists to make guessing
a low-entropy password expensive; a 240-bit random key cannot be guessed at any speed, and a
salted hash could not be looked up: each request would have to try every stored key, at about
100 ms each. SHA-256 keeps the lookup one indexed query, and a stolen table still gives no key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crmflow.definitions import InvalidInput, shown

from ._records import StoreError
from ._tables import ApiKey

KEY_PREFIX = "crmflow_"
KEY_RANDOM_LENGTH = 40
KEY_PATTERN = re.compile(rf"{KEY_PREFIX}[A-Za-z0-9_-]{{{KEY_RANDOM_LENGTH}}}")
"""What a key looks like (for secret scanners too): `crmflow_[A-Za-z0-9_-]{40}`."""
KEY_HINT_LENGTH = len(KEY_PREFIX) + 4
API_KEY_NAME_MAX_LENGTH = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class ApiScope(StrEnum):
    """What a key may do: `ingest` writes records, events and lists; `read` reads everything;
    `admin` does everything."""

    INGEST = "ingest"
    READ = "read"
    ADMIN = "admin"


def generate_key() -> str:
    """A new key: the prefix and 40 URL-safe characters from the system's CSPRNG."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_LENGTH * 3 // 4)


def hash_key(key: str) -> str:
    """The stored form of a key: SHA-256, hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def looks_like_key(text: str) -> bool:
    """Whether `text` has the form of a key (no lookup is worth making otherwise)."""
    return KEY_PATTERN.fullmatch(text) is not None


def same_hash(stored: str, computed: str) -> bool:
    """Compare two key hashes in constant time (the row was found by its hash; this check does
    not depend on the database's comparison rules)."""
    return hmac.compare_digest(stored.encode("ascii"), computed.encode("ascii"))


def check_api_key_name(value: Any) -> str:
    """1-64 characters: letters, digits, '.', '_', '-', starting with a letter or digit."""
    if not isinstance(value, str):
        raise InvalidInput(f"API key name {shown(value)}: must be text")
    if not value:
        raise InvalidInput("API key name is empty")
    if not _NAME.fullmatch(value) or len(value) > API_KEY_NAME_MAX_LENGTH:
        raise InvalidInput(
            f"API key name {shown(value)}: use letters, digits, '.', '_' and '-' (starting "
            f"with a letter or digit), at most {API_KEY_NAME_MAX_LENGTH} characters"
        )
    return value


def check_api_scope(value: Any) -> ApiScope:
    try:
        return ApiScope(value)
    except ValueError:
        choices = ", ".join(scope.value for scope in ApiScope)
        raise InvalidInput(f"API key scope {shown(value)}: use one of {choices}") from None


class ApiKeyExists(StoreError):
    def __init__(self, name: str) -> None:
        super().__init__(f"an API key named '{name}' exists already (revoke it first)")
        self.name = name


class ApiKeyNotFound(StoreError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no active API key named {shown(name)}")
        self.name = name


class ApiKeyRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def create(self, name: str, scope: str, *, now: datetime) -> tuple[ApiKey, str]:
        """A new key; returns the row and the key itself, which is not stored anywhere."""
        try:
            check_api_key_name(name)
            checked_scope = check_api_scope(scope)
        except InvalidInput as exc:
            raise StoreError(str(exc)) from None
        if self.active(name) is not None:
            raise ApiKeyExists(name)
        key = generate_key()
        row = ApiKey(
            name=name,
            scope=checked_scope.value,
            key_hash=hash_key(key),
            key_hint=key[:KEY_HINT_LENGTH],
            created_at=now,
        )
        try:
            with self.session.begin_nested():
                self.session.add(row)
                self.session.flush()
        except IntegrityError:
            raise ApiKeyExists(name) from None  # made by someone else at the same moment
        return row, key

    def active(self, name: str) -> ApiKey | None:
        return self.session.scalars(
            select(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_(None))
        ).one_or_none()

    def all(self, *, include_revoked: bool = False) -> list[ApiKey]:
        stmt = select(ApiKey)
        if not include_revoked:
            stmt = stmt.where(ApiKey.revoked_at.is_(None))
        return list(self.session.scalars(stmt.order_by(ApiKey.created_at, ApiKey.id)))

    def revoke(self, name: str, *, now: datetime) -> ApiKey:
        row = self.active(name)
        if row is None:
            raise ApiKeyNotFound(name)
        row.revoked_at = now
        self.session.flush()
        return row

    def find_by_hash(self, key_hash: str) -> ApiKey | None:
        """The key (revoked or not) with this hash."""
        row = self.session.scalars(select(ApiKey).where(ApiKey.key_hash == key_hash)).one_or_none()
        if row is None or not same_hash(row.key_hash, key_hash):
            return None
        return row

    def find(self, key: str) -> ApiKey | None:
        """The key (revoked or not) a request presents; None for anything else."""
        if not looks_like_key(key):
            return None
        return self.find_by_hash(hash_key(key))

    def touch(self, key_id: int, *, now: datetime, every: timedelta) -> bool:
        """Record a use of the key, unless one was recorded less than `every` ago (a write per
        request would cost more than the request). True if it wrote."""
        result = self.session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id)
            .where(or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= now - every))
            .values(last_used_at=now)
        )
        return bool(cast(CursorResult[Any], result).rowcount)


__all__ = [
    "API_KEY_NAME_MAX_LENGTH",
    "KEY_PATTERN",
    "KEY_PREFIX",
    "ApiKeyExists",
    "ApiKeyNotFound",
    "ApiKeyRepository",
    "ApiScope",
    "check_api_key_name",
    "check_api_scope",
    "generate_key",
    "hash_key",
    "looks_like_key",
    "same_hash",
]
