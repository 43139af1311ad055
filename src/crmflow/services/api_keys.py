"""API keys of the HTTP API (`crmflow api-keys create|list|revoke`), and the local admin key
that `crmflow up` makes on its first start."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from crmflow.store import (
    ApiKeyExists,
    ApiKeyNotFound,
    ApiKeyRepository,
    ApiScope,
    StoreError,
    check_api_key_name,
    check_api_scope,
)

from ._app import App
from ._base import UserError, utcnow


@dataclass(frozen=True)
class CreatedKey:
    name: str
    scope: str
    key: str

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "scope": self.scope, "key": self.key}


def create_api_key(app: App, name: str, scope: str) -> CreatedKey:
    try:
        check_api_key_name(name)
        checked_scope = check_api_scope(scope)
    except (ValueError, StoreError) as exc:
        raise UserError(str(exc)) from None
    with app.sessions.begin() as session:
        try:
            row, key = ApiKeyRepository(session).create(name, str(checked_scope), now=utcnow())
        except ApiKeyExists as exc:
            raise UserError(str(exc)) from None
        return CreatedKey(row.name, row.scope, key)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def list_api_keys(app: App, *, include_revoked: bool = True) -> list[dict[str, Any]]:
    """Every key, without the key itself (only its hint: the first characters)."""
    with app.sessions() as session:
        return [
            {
                "name": k.name,
                "scope": k.scope,
                "hint": k.key_hint,
                "created_at": _iso(k.created_at),
                "last_used_at": _iso(k.last_used_at),
                "revoked_at": _iso(k.revoked_at),
            }
            for k in ApiKeyRepository(session).all(include_revoked=include_revoked)
        ]


def revoke_api_key(app: App, name: str) -> None:
    with app.sessions.begin() as session:
        try:
            ApiKeyRepository(session).revoke(name, now=utcnow())
        except ApiKeyNotFound as exc:
            raise UserError(str(exc)) from None


LOCAL_ADMIN_KEY_NAME = "local-admin"


def local_admin_key(app: App, path: Path) -> tuple[Path, bool]:
    """`crmflow up`'s admin key: made on first start and saved to `path` (mode 0600, written
    before the key exists in the store: a key is never stored that nobody can read). True if
    made now. A later start keeps the file, or makes a new key if the file is gone."""
    if path.is_file():
        return path, False
    path.parent.mkdir(parents=True, exist_ok=True)
    with app.sessions.begin() as session:
        keys = ApiKeyRepository(session)
        if keys.active(LOCAL_ADMIN_KEY_NAME) is not None:
            # The file was deleted: the old key is lost to its owner, revoke it.
            keys.revoke(LOCAL_ADMIN_KEY_NAME, now=utcnow())
        row, key = keys.create(LOCAL_ADMIN_KEY_NAME, str(ApiScope.ADMIN), now=utcnow())
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(key + "\n")
    return path, True
