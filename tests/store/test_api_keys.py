"""API keys and idempotency keys in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from crmflow.store import (
    KEY_PATTERN,
    ApiKey,
    ApiKeyExists,
    ApiKeyNotFound,
    ApiKeyRepository,
    ClaimOutcome,
    IdempotencyRecord,
    IdempotencyRepository,
    StoreError,
    generate_key,
    hash_key,
    looks_like_key,
    same_hash,
)
from crmflow.store._engine import alembic_config, create_store_engine, upgrade_database

NOW = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
HOLD = timedelta(seconds=60)


# ---------------------------------------------------------------- the key functions


def test_a_key_has_the_prefix_and_40_random_url_safe_characters() -> None:
    keys = {generate_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert KEY_PATTERN.fullmatch(key), key
        assert key.startswith("crmflow_") and len(key) == len("crmflow_") + 40
        assert looks_like_key(key)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "crmflow_",
        "crmflow_" + "a" * 39,
        "crmflow_" + "a" * 41,
        "crmflow_" + "a" * 39 + "=",
        "Crmflow_" + "a" * 40,
        "crmflow-" + "a" * 40,
        " crmflow_" + "a" * 40,
        "crmflow_" + "a" * 40 + "\n",
    ],
)
def test_what_is_not_a_key(text: str) -> None:
    assert not looks_like_key(text)


def test_the_stored_form_is_the_sha256_of_the_key() -> None:
    key = generate_key()
    assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert same_hash(hash_key(key), hash_key(key))
    assert not same_hash(hash_key(key), hash_key(generate_key()))


# ---------------------------------------------------------------- the repository


def test_only_a_hash_of_the_key_is_stored(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        row, key = ApiKeyRepository(session).create("billing", "ingest", now=NOW)
    with sessions() as session:
        stored = session.get(ApiKey, row.id)
        assert stored is not None
        values = [getattr(stored, column.key) for column in inspect(ApiKey).columns]
        assert key not in [str(value) for value in values]
        assert key[len("crmflow_") :] not in "".join(str(value) for value in values)
        assert stored.key_hash == hash_key(key)
        assert stored.key_hint == key[:12]
        assert (stored.name, stored.scope, stored.created_at) == ("billing", "ingest", NOW)
        assert stored.revoked_at is None and stored.last_used_at is None


def test_a_key_is_found_by_the_key_itself_and_nothing_else(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        row, key = ApiKeyRepository(session).create("web", "read", now=NOW)
    with sessions() as session:
        keys = ApiKeyRepository(session)
        found = keys.find(key)
        assert found is not None and found.id == row.id
        assert keys.find_by_hash(hash_key(key)) is not None
        assert keys.find(generate_key()) is None
        assert keys.find(key[:-1]) is None
        assert keys.find(key.upper()) is None
        assert keys.find(hash_key(key)) is None


def test_names_are_unique_among_keys_not_revoked(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        ApiKeyRepository(session).create("billing", "ingest", now=NOW)
    with pytest.raises(ApiKeyExists, match="billing"), sessions.begin() as session:
        ApiKeyRepository(session).create("billing", "admin", now=NOW)
    with sessions.begin() as session:
        revoked = ApiKeyRepository(session).revoke("billing", now=NOW + timedelta(hours=1))
        assert revoked.revoked_at == NOW + timedelta(hours=1)
    with sessions.begin() as session:
        row, _ = ApiKeyRepository(session).create("billing", "admin", now=NOW + timedelta(hours=2))
        new_id = row.id
    with sessions() as session:
        keys = ApiKeyRepository(session)
        assert [(k.name, k.scope) for k in keys.all()] == [("billing", "admin")]
        assert [k.revoked_at is None for k in keys.all(include_revoked=True)] == [False, True]
        active = keys.active("billing")
        assert active is not None and active.id == new_id


def test_the_database_keeps_names_unique_among_active_keys(
    sessions: sessionmaker[Session],
) -> None:
    # Two processes creating the same name at once: the partial unique index decides.
    def row(key_hash: str, revoked_at: datetime | None = None) -> ApiKey:
        return ApiKey(
            name="twin",
            scope="read",
            key_hash=key_hash,
            key_hint="crmflow_xxxx",
            created_at=NOW,
            revoked_at=revoked_at,
        )

    with sessions.begin() as session:
        session.add_all([row("a" * 64, revoked_at=NOW), row("b" * 64, revoked_at=NOW)])
        session.add(row("c" * 64))
    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.add(row("d" * 64))


def test_revoking_an_unknown_or_revoked_key_says_so(sessions: sessionmaker[Session]) -> None:
    missing = pytest.raises(ApiKeyNotFound, match="no active API key named 'nope'")
    with missing, sessions.begin() as session:
        ApiKeyRepository(session).revoke("nope", now=NOW)
    with sessions.begin() as session:
        ApiKeyRepository(session).create("once", "read", now=NOW)
        ApiKeyRepository(session).revoke("once", now=NOW)
    with pytest.raises(ApiKeyNotFound), sessions.begin() as session:
        ApiKeyRepository(session).revoke("once", now=NOW)


@pytest.mark.parametrize(
    ("name", "scope", "message"),
    [
        ("", "read", "API key name is empty"),
        ("-dash", "read", "use letters, digits"),
        ("has space", "read", "use letters, digits"),
        ("x" * 65, "read", "at most 64 characters"),
        ("ok", "write", "use one of ingest, read, admin"),
        ("ok", "ADMIN", "use one of ingest, read, admin"),
    ],
)
def test_bad_names_and_scopes_are_refused(
    sessions: sessionmaker[Session], name: str, scope: str, message: str
) -> None:
    with pytest.raises(StoreError, match=message), sessions.begin() as session:
        ApiKeyRepository(session).create(name, scope, now=NOW)
    with sessions() as session:
        assert ApiKeyRepository(session).all(include_revoked=True) == []


def test_last_use_is_written_at_most_once_per_period(sessions: sessionmaker[Session]) -> None:
    every = timedelta(minutes=1)
    with sessions.begin() as session:
        row, _ = ApiKeyRepository(session).create("web", "read", now=NOW)
    moments = [NOW, NOW + timedelta(seconds=30), NOW + timedelta(seconds=61)]
    written = []
    for moment in moments:
        with sessions.begin() as session:
            written.append(ApiKeyRepository(session).touch(row.id, now=moment, every=every))
    assert written == [True, False, True]
    with sessions() as session:
        stored = session.get(ApiKey, row.id)
        assert stored is not None and stored.last_used_at == NOW + timedelta(seconds=61)


# ---------------------------------------------------------------- idempotency keys


def api_key_id(sessions: sessionmaker[Session], name: str = "client") -> int:
    with sessions.begin() as session:
        row, _ = ApiKeyRepository(session).create(name, "ingest", now=NOW)
        return row.id


def claim(
    sessions: sessionmaker[Session],
    key_id: int,
    request_hash: str = "h1",
    *,
    owner: str = "first",
    now: datetime = NOW,
    key: str = "k1",
) -> tuple[ClaimOutcome, int | None]:
    with sessions.begin() as session:
        found = IdempotencyRepository(session).claim(
            key_id, key, request_hash, owner=owner, now=now, hold=HOLD
        )
        return found.outcome, found.record_id


def test_a_claimed_key_is_in_flight_then_replays_its_response(
    sessions: sessionmaker[Session],
) -> None:
    key_id = api_key_id(sessions)
    outcome, record_id = claim(sessions, key_id)
    assert outcome is ClaimOutcome.CLAIMED and record_id is not None
    assert claim(sessions, key_id, owner="retry")[0] is ClaimOutcome.IN_FLIGHT
    assert claim(sessions, key_id, "h2", owner="other")[0] is ClaimOutcome.MISMATCH
    with sessions.begin() as session:
        done = IdempotencyRepository(session).complete(
            record_id,
            owner="first",
            status=201,
            headers=[("content-type", "application/json"), ("location", "/x")],
            body=b'{"ok":true}',
            expires_at=NOW + timedelta(days=1),
        )
        assert done
    with sessions() as session:
        peeked = IdempotencyRepository(session).peek(key_id, "k1", "h1", now=NOW)
        assert peeked is not None and peeked.outcome is ClaimOutcome.REPLAY
        assert peeked.response is not None
        assert peeked.response.status == 201
        assert peeked.response.body == b'{"ok":true}'
        assert peeked.response.headers == (("content-type", "application/json"), ("location", "/x"))
        other = IdempotencyRepository(session).peek(key_id, "k1", "h2", now=NOW)
        assert other is not None and other.outcome is ClaimOutcome.MISMATCH
        assert IdempotencyRepository(session).peek(key_id, "k2", "h1", now=NOW) is None
    # Another API key's same idempotency key is another key.
    assert claim(sessions, api_key_id(sessions, "other"))[0] is ClaimOutcome.CLAIMED


def test_an_abandoned_claim_is_taken_over_and_its_owner_cannot_complete(
    sessions: sessionmaker[Session],
) -> None:
    key_id = api_key_id(sessions)
    _, record_id = claim(sessions, key_id, owner="slow")
    assert record_id is not None
    later = NOW + HOLD + timedelta(seconds=1)
    assert claim(sessions, key_id, owner="retry", now=later) == (ClaimOutcome.CLAIMED, record_id)
    assert claim(sessions, key_id, owner="third", now=later)[0] is ClaimOutcome.IN_FLIGHT
    with sessions.begin() as session:
        keys = IdempotencyRepository(session)
        assert not keys.complete(
            record_id, owner="slow", status=200, headers=[], body=b"", expires_at=later
        )
        keys.release(record_id, owner="slow")  # not its own: nothing happens
        assert keys.complete(
            record_id, owner="retry", status=200, headers=[], body=b"r", expires_at=later + HOLD
        )


def test_a_released_key_is_free_and_expired_responses_are_forgotten(
    sessions: sessionmaker[Session],
) -> None:
    key_id = api_key_id(sessions)
    _, record_id = claim(sessions, key_id)
    assert record_id is not None
    with sessions.begin() as session:
        IdempotencyRepository(session).release(record_id, owner="first")
    assert claim(sessions, key_id, "h2", owner="second")[0] is ClaimOutcome.CLAIMED
    with sessions.begin() as session:
        (row,) = session.scalars(select(IdempotencyRecord)).all()
        IdempotencyRepository(session).complete(
            row.id, owner="second", status=200, headers=[], body=b"", expires_at=NOW + HOLD
        )
    after = NOW + HOLD
    # Expired: free for any request, and purged.
    with sessions() as session:
        assert IdempotencyRepository(session).peek(key_id, "k1", "h2", now=after) is None
    assert claim(sessions, key_id, "h3", owner="third", now=after)[0] is ClaimOutcome.CLAIMED
    claim(sessions, key_id, key="k9", now=NOW)
    with sessions.begin() as session:
        assert IdempotencyRepository(session).purge(now=after + HOLD) == 2
    with sessions() as session:
        assert session.scalars(select(IdempotencyRecord)).all() == []


def test_the_migration_goes_down_and_up_again(store_url: str) -> None:
    engine = create_store_engine(store_url)
    try:
        upgrade_database(engine)
        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0006")  # below 0007, whatever follows it
        tables = inspect(engine).get_table_names()
        assert "api_keys" not in tables and "idempotency_keys" not in tables
        upgrade_database(engine)
        tables = inspect(engine).get_table_names()
        assert "api_keys" in tables and "idempotency_keys" in tables
    finally:
        engine.dispose()
