"""Leases: who runs a singleton loop (the change dispatcher) while several workers run.

Expiry is judged by the database's clock, never a worker's, so a worker whose clock is off
cannot take a lease early or keep it late. Each takeover changes the lease's token, and every
write made under the lease checks holder and token in the statement that writes (`Fence`): a
holder that was paused past its lease, and taken over meanwhile, can no longer write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, delete, exists, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ._tables import Lease


def database_now(session: Session) -> datetime:
    """The database server's current time (aware, UTC)."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        value = session.scalar(text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')"))
        return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)
    # clock_timestamp(), not now(): now() is the start of the transaction.
    found = session.scalar(
        select(func.clock_timestamp() if dialect == "postgresql" else func.now())
    )
    assert isinstance(found, datetime)
    return found.replace(tzinfo=UTC) if found.tzinfo is None else found.astimezone(UTC)


# True, inside any statement, while the holder in the parameters still has the lease (built
# once: a statement's cache key costs more than the lookup).
HOLDS = exists().where(
    Lease.name == bindparam("lease_name"),
    Lease.holder == bindparam("lease_holder"),
    Lease.token == bindparam("lease_token"),
)


@dataclass(frozen=True, slots=True)
class Fence:
    """A lease as one holder got it: valid while nobody took the lease over."""

    name: str
    holder: str
    token: int
    # The database's time when the lease was taken or renewed (saves a query to whoever
    # needs the time right after).
    at: datetime = field(default=datetime.min.replace(tzinfo=UTC), compare=False)

    def params(self) -> dict[str, object]:
        """The parameters of HOLDS for this holder."""
        return {"lease_name": self.name, "lease_holder": self.holder, "lease_token": self.token}


class LeaseRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def acquire(self, name: str, holder: str, ttl: timedelta) -> Fence | None:
        """Take or renew the lease `name` for `ttl` (database time); None if another holder
        has it. A renewal keeps the token; a takeover (a new holder) changes it."""
        now = database_now(self.session)
        lease = self.session.get(Lease, name, with_for_update=True)
        if lease is None:
            lease = Lease(name=name, holder=holder, expires_at=now + ttl, token=1)
            try:
                with self.session.begin_nested():
                    self.session.add(lease)
                    self.session.flush()
            except IntegrityError:
                return None  # another holder created it at the same moment
            return Fence(name, holder, lease.token, now)
        if lease.holder != holder:
            if lease.expires_at > now:
                return None
            lease.holder = holder
            lease.token += 1
        lease.expires_at = now + ttl
        self.session.flush()
        return Fence(name, holder, lease.token, now)

    def release(self, fence: Fence) -> None:
        """Let another holder take over at once. The row (and its token) stays, so a token is
        never given out twice."""
        self.session.execute(
            update(Lease)
            .where(Lease.name == fence.name, Lease.holder == fence.holder)
            .where(Lease.token == fence.token)
            .values(expires_at=database_now(self.session) - timedelta(seconds=1))
        )

    def live(self, prefix: str) -> int:
        """How many leases named `prefix`... are held now (database time); forgets those that
        expired over an hour ago (members of a group that are long gone)."""
        now = database_now(self.session)
        named = Lease.name.startswith(prefix, autoescape=True)
        self.session.execute(delete(Lease).where(named, Lease.expires_at < now - _FORGOTTEN))
        return int(
            self.session.scalar(
                select(func.count()).select_from(Lease).where(named, Lease.expires_at > now)
            )
            or 0
        )

    def holders(self, prefix: str) -> dict[str, str]:
        """The leases named `prefix`... held now (database time): name -> holder."""
        now = database_now(self.session)
        found = self.session.execute(
            select(Lease.name, Lease.holder).where(
                Lease.name.startswith(prefix, autoescape=True), Lease.expires_at > now
            )
        )
        return {name: holder for name, holder in found}


_FORGOTTEN = timedelta(hours=1)
