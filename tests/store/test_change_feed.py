"""The change feed's retries, parking and per-record order, and the dispatcher lease (database
clock, fencing), on real SQLite and PostgreSQL stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from crmflow.store import (
    ChangeNotParked,
    ChangeRepository,
    Fence,
    Lease,
    LeaseRepository,
    RecordRepository,
    database_now,
)

DELAYS = (timedelta(seconds=5), timedelta(seconds=30))
TTL = timedelta(seconds=15)


def change(sessions: sessionmaker[Session], record_id: str, **values: object) -> int:
    """A record change through the repository (it appends the feed entry); its id."""
    with sessions.begin() as session:
        RecordRepository(session).upsert("contact", record_id, values, now=datetime.now(UTC))
        return ChangeRepository(session).last_id()


def lease(sessions: sessionmaker[Session], holder: str) -> Fence | None:
    with sessions.begin() as session:
        return LeaseRepository(session).acquire("dispatcher", holder, TTL)


def due(sessions: sessionmaker[Session], *, later: timedelta = timedelta(0)) -> list[int]:
    with sessions() as session:
        now = database_now(session) + later
        return [c.id for c in ChangeRepository(session).pending(limit=100, now=now)]


def fail(sessions: sessionmaker[Session], change_id: int, fence: Fence) -> object:
    with sessions.begin() as session:
        return ChangeRepository(session).record_failure(
            change_id, "Boom: refused", now=database_now(session), fence=fence, delays=DELAYS
        )


def test_a_failed_change_holds_back_its_record_only_until_its_next_attempt(sessions):
    fence = lease(sessions, "d1")
    assert fence is not None
    ann1, bob1, ann2, bob2 = (
        change(sessions, "ann", a=1),
        change(sessions, "bob", a=1),
        change(sessions, "ann", a=2),
        change(sessions, "bob", a=2),
    )
    failure = fail(sessions, ann1, fence)
    assert (failure.attempts, failure.parked) == (1, False)
    # ann's later change waits behind her failed one; bob's changes do not.
    assert due(sessions) == [bob1, bob2]
    # Once the first retry delay has passed (database time), ann's changes are due, in order.
    assert due(sessions, later=DELAYS[0] + timedelta(seconds=1)) == [ann1, bob1, ann2, bob2]


def test_a_change_is_parked_after_its_last_retry_and_retry_puts_it_back(sessions):
    fence = lease(sessions, "d1")
    assert fence is not None
    poison, later, other = change(sessions, "ann", a=1), change(sessions, "ann", a=2), None
    other = change(sessions, "bob", a=1)
    results = [fail(sessions, poison, fence) for _ in range(len(DELAYS) + 1)]
    assert [(r.attempts, r.parked) for r in results] == [(1, False), (2, False), (3, True)]
    # Parked: never due again by itself, and ann's later change waits behind it.
    assert due(sessions, later=timedelta(days=365)) == [other]
    with sessions() as session:
        feed = ChangeRepository(session)
        entries = {e.change.id: e for e in feed.feed()}
        assert entries[poison].change.parked_at is not None
        assert entries[poison].change.error == "Boom: refused"
        assert entries[later].waiting_behind == poison and entries[other].waiting_behind is None
        assert [e.change.id for e in feed.feed(parked_only=True)] == [poison]
        assert feed.counts() == {"pending": 2, "parked": 1}
    # Retrying refuses what is not parked, naming it, and changes nothing.
    for wrong, why in ((later, "pending"), (99999, "no such change")):
        with sessions.begin() as session, pytest.raises(ChangeNotParked, match=str(wrong)) as exc:
            ChangeRepository(session).retry([poison, wrong])
        assert why in str(exc.value)
    assert due(sessions) == [other]
    with sessions.begin() as session:
        assert ChangeRepository(session).retry([poison]) == [poison]
    assert due(sessions) == [poison, later, other]
    with sessions() as session:
        [entry] = [e for e in ChangeRepository(session).feed() if e.change.id == poison]
        assert entry.change.attempts == 0  # a fresh budget of attempts
    # --all: every parked change.
    for _ in range(len(DELAYS) + 1):
        fail(sessions, poison, fence)
    with sessions.begin() as session:
        assert ChangeRepository(session).retry(None) == [poison]
        assert ChangeRepository(session).retry(None) == []


def test_the_lease_follows_the_database_clock_and_a_takeover_changes_the_token(sessions):
    first = lease(sessions, "d1")
    assert first is not None and first.token == 1
    assert lease(sessions, "d2") is None  # held
    renewed = lease(sessions, "d1")
    assert renewed == first  # a renewal keeps the token
    # d1 stops renewing; once the lease expired (database time), d2 takes it over.
    with sessions.begin() as session:
        session.execute(
            update(Lease).values(expires_at=database_now(session) - timedelta(seconds=1))
        )
    second = lease(sessions, "d2")
    assert second is not None and second.token == 2
    assert lease(sessions, "d1") is None
    # d2 lets go: the lease can be taken at once, and the token is never given out again.
    with sessions.begin() as session:
        LeaseRepository(session).release(second)
    third = lease(sessions, "d1")
    assert third is not None and third.token == 3


def test_a_holder_whose_lease_was_taken_over_cannot_mark(sessions):
    first = lease(sessions, "d1")
    assert first is not None
    ann = change(sessions, "ann", a=1)
    with sessions.begin() as session:
        session.execute(
            update(Lease).values(expires_at=database_now(session) - timedelta(seconds=1))
        )
    second = lease(sessions, "d2")
    assert second is not None
    with sessions.begin() as session:
        feed = ChangeRepository(session)
        now = database_now(session)
        # d1 was paused past its lease: it may neither mark the change done nor count a failure.
        assert feed.mark_dispatched([ann], now=now, fence=first) is False
        assert feed.record_failure(ann, "x", now=now, fence=first, delays=DELAYS) is None
        assert feed.note_error(ann, "x", fence=first) is False
    assert due(sessions) == [ann]
    with sessions.begin() as session:
        assert ChangeRepository(session).mark_dispatched([ann], now=now, fence=second)
    assert due(sessions) == []
