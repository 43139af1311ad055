"""The dashboard's login: an API key (scope read or admin) typed once into the login page,
then a signed session cookie.

The cookie holds no key: `<key id>.<expiry>.<signature>`, the signature an HMAC-SHA256 of the
id and expiry keyed with the key's stored SHA-256 hash. So it needs no secret of its own (it
works across restarts and across API processes sharing the store), it cannot be made without
the key (or the store), and it dies with the key: each page loads the key again by id and
refuses a revoked one, a changed scope, or an expired cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass

from sqlalchemy.orm import Session

from crmflow.store import ApiKey, ApiKeyRepository, ApiScope, hash_key, looks_like_key

COOKIE = "crmflow_dashboard"
ALLOWED = (ApiScope.READ.value, ApiScope.ADMIN.value)


@dataclass(frozen=True)
class Viewer:
    key_id: int
    name: str
    scope: str


def _signature(key_hash: str, key_id: int, expires: int) -> str:
    mac = hmac.new(
        bytes.fromhex(key_hash), f"crmflow-dashboard:{key_id}:{expires}".encode(), hashlib.sha256
    )
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def login(session: Session, key: str) -> tuple[Viewer, ApiKey] | str:
    """The viewer of a key typed into the login page, or why it is refused."""
    key = key.strip()
    if not looks_like_key(key):
        return "not a crmflow API key (crmflow_ and 40 more characters)"
    row = ApiKeyRepository(session).find_by_hash(hash_key(key))
    if row is None or row.revoked_at is not None:
        return "unknown or revoked API key"
    if row.scope not in ALLOWED:
        return f"the key '{row.name}' has scope {row.scope}: the dashboard needs read or admin"
    return Viewer(row.id, row.name, row.scope), row


def cookie_value(row: ApiKey, lifetime: int, *, now: float | None = None) -> str:
    expires = int((now if now is not None else time.time()) + lifetime)
    return f"{row.id}.{expires}.{_signature(row.key_hash, row.id, expires)}"


def viewer(session: Session, value: str | None, *, now: float | None = None) -> Viewer | None:
    """The viewer a cookie stands for, or None (missing, malformed, forged, expired, or its key
    revoked or no longer allowed)."""
    if not value or value.count(".") != 2:
        return None
    raw_id, raw_expires, signature = value.split(".")
    if not (raw_id.isdigit() and raw_expires.isdigit()) or len(raw_id) > 18:
        return None
    key_id, expires = int(raw_id), int(raw_expires)
    if expires < (now if now is not None else time.time()):
        return None
    row = session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None or row.scope not in ALLOWED:
        return None
    if not hmac.compare_digest(signature, _signature(row.key_hash, key_id, expires)):
        return None
    return Viewer(row.id, row.name, row.scope)
