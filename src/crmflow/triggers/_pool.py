"""Dispatch partitions spread over the running workers.

The change feed is split into `partitions` by record (`store.change_bucket`), each dispatched
by one `Dispatcher` at a time under its own fenced lease (database clock, a token checked by
every mark). Every worker process runs a pool: it keeps a membership lease alive, counts the
live members, and holds its fair share of the partitions, ceil(partitions / members): it takes
free or expired ones up to its share and gives back the ones over it (after their current
batch). A worker that dies stops renewing: its partition leases and its membership expire
after LEASE_TTL (15 s) and the others take its partitions over; a worker that joins makes the
others give back partitions at their next tick (TICK). Either way a partition moves in well
under 30 s, and a record's changes are never dispatched by two dispatchers at once (the lease)
nor out of order (one partition, in id order).

Why leases in the store and not Temporal as the coordinator: the dispatcher's writes are in the
store, and a fence checked in the same statement as each write is what makes a paused holder
harmless; a Temporal activity per partition would still need that fence, and would add a
heartbeat round trip per batch and a dependency on Temporal for deciding who dispatches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from crmflow.store import LeaseRepository

from ._dispatcher import LEASE, LEASE_TTL, Dispatcher

log = logging.getLogger(__name__)

MEMBER = "member:"
TICK = 2.0  # seconds between two looks at the members and the partitions


class DispatchPool:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        make: Callable[[tuple[int, int]], Dispatcher],
        partitions: int,
        *,
        tick: float = TICK,
    ) -> None:
        """`make(partition)`: a dispatcher for (number, partitions), all with one holder."""
        if partitions < 1:
            raise ValueError("partitions: at least 1")
        self.sessions = sessions
        self.partitions = partitions
        self.tick = tick
        self.dispatchers = [make((n, partitions)) for n in range(partitions)]
        self.holder = self.dispatchers[0].holder
        self.member = f"{MEMBER}{LEASE}:{self.holder}"
        self.running: dict[int, tuple[asyncio.Task[None], asyncio.Event]] = {}

    def held(self) -> list[int]:
        return sorted(self.running)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    await self.rebalance(stop)
                except Exception:
                    log.exception("dispatch pool: looking at the partitions failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.tick)
        finally:
            for _, own_stop in self.running.values():
                own_stop.set()
            await asyncio.gather(*(task for task, _ in self.running.values()))
            self.running.clear()
            await asyncio.to_thread(self._leave)

    async def rebalance(self, stop: asyncio.Event) -> None:
        """Renew the membership, then take or give back partitions to hold a fair share."""
        members, others = await asyncio.to_thread(self._members)
        if others:
            # Two partition counts at once would dispatch a record's changes twice over.
            log.error(
                "dispatch pool: other workers dispatch the feed in another number of "
                "partitions (%s); this one (%d) waits: give every worker one "
                "CRMFLOW_DISPATCH_PARTITIONS",
                ", ".join(others),
                self.partitions,
            )
            share = 0
        else:
            share = math.ceil(self.partitions / max(members, 1))
        for n, (task, _) in list(self.running.items()):
            if task.done():  # its lease went to another holder
                del self.running[n]
        # Start from an offset of our own, so that workers that start together ask for
        # different partitions first.
        offset = hash(self.holder) % self.partitions
        order = [(offset + i) % self.partitions for i in range(self.partitions)]
        for n in reversed(order):
            if len(self.running) <= share:
                break
            if n in self.running:
                task, own_stop = self.running.pop(n)
                own_stop.set()  # it finishes its batch, then releases the lease
                log.info("dispatch partition %d given back (%d members)", n, members)
        for n in order:
            if len(self.running) >= share or stop.is_set():
                break
            dispatcher = self.dispatchers[n]
            if n in self.running or not await asyncio.to_thread(dispatcher.acquire_lease):
                continue
            own_stop = asyncio.Event()
            task = asyncio.ensure_future(
                dispatcher.run(own_stop, while_held=True, reconcile=n == 0)
            )
            self.running[n] = (task, own_stop)
            log.info("dispatch partition %d of %d taken", n, self.partitions)

    def _members(self) -> tuple[int, list[str]]:
        """Renew the membership: how many members are live, and the dispatch leases held now
        for another number of partitions."""
        mine = {d.lease for d in self.dispatchers}
        with self.sessions.begin() as session:
            leases = LeaseRepository(session)
            leases.acquire(self.member, self.holder, LEASE_TTL)
            others = [
                name
                for name in leases.holders(LEASE)
                if name not in mine and (name == LEASE or name.startswith(f"{LEASE}-"))
            ]
            return leases.live(f"{MEMBER}{LEASE}:"), sorted(others)

    def _leave(self) -> None:
        with self.sessions.begin() as session:
            leases = LeaseRepository(session)
            fence = leases.acquire(self.member, self.holder, LEASE_TTL)
            if fence is not None:
                leases.release(fence)
