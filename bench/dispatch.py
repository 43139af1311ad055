"""The change path: how fast the dispatcher turns the change feed into (no) enrollments.

    .venv/bin/python bench/dispatch.py [--idle 5000] [--enrolling 10000] [--partitions 4]
                                       [--rounds 3] [--pg URL]

A Temporal dev server in memory with crmflow's search attributes (a new one for each store);
an active criteria workflow (`lifecyclestage eq customer`, object type contact). For each
store (a temporary SQLite file, then with --pg, e.g.
postgresql+psycopg://postgres@127.0.0.1:5432/crmflow_bench, created if missing and emptied
first, PostgreSQL):

A dispatch pool runs as `crmflow worker` runs it (--partitions, default 4), from the moment
the changes are committed until the feed is empty; the time it took ends when the last change
was marked dispatched (read off the store: the observer, in the process measured, looks only
twice a second).

  (a) changes that call for nothing: --idle contacts are imported (`upsert_many`, as
      `records import` writes them) with `lifecyclestage: lead`. Each creation is a change the
      workflow's criteria read, so the dispatcher loads the record and decides: no enrollment.
      Time to drain the feed: changes/s (target >= 1,000).
  (b) an import that enrolls: --enrolling contacts are imported with `lifecyclestage:
      customer`; the time to drain the feed (every enrollment row written and its workflow
      started) against a plain loop of `client.start_workflow` for as many workflows (same type,
      input, search attributes, summary; as many at once as the pool can have in flight, 64 per
      partition), half before and half after, to the same server in the same run: starts/s
      of both and their ratio (target >= 0.9). Enrollments start on a task queue no worker
      polls: a start counts once the server accepted it. --rounds times (default 3), each
      with its own contacts, then all rounds together (starts over seconds, for each side):
      the machine is shared, and its speed drifts by 20 % or more over tens of seconds (the
      same loop of 1,000 starts, timed again and again, ran at 150 to 320 starts/s); more
      rounds let both sides meet the same drifts.
      Also printed: CPU time per start of this process (the dispatcher, or the loop), of the
      dev server and (on PostgreSQL) of the database server, in each.

Figures only: nothing is asserted. The machine is shared: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from sqlalchemy import func, select, text
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from crmflow import services
from crmflow.activities.models import GENERATION, EnrollmentContext, EnrollmentInput
from crmflow.definitions import WorkflowDefinition
from crmflow.enrolling import EnrollmentStarter, enrollment_search_attributes
from crmflow.services import App, Settings
from crmflow.services.devserver import temporal_cli_path
from crmflow.services.up import freeze_heap
from crmflow.store import (
    RecordChange,
    RecordRepository,
    ensure_postgres_database,
    reading_sessions,
)
from crmflow.triggers import Dispatcher, DispatchPool
from crmflow.triggers._dispatcher import START_CONCURRENCY
from crmflow.worker import EnrollmentWorkflow
from crmflow.worker import search_attributes as sa

sys.path.insert(0, str(Path(__file__).parent))
from processes import cpu_seconds, postgres_cpu_seconds, server_pid  # noqa: E402  (own module)

QUEUE = "bench-dispatch"  # nobody polls it
IMPORT_BATCH = 1000
DEFINITION: dict[str, Any] = {
    "key": "customers",
    "name": "Customers",
    "object_type": "contact",
    "enrollment": {
        "trigger": "criteria",
        "criteria": {"property": "lifecyclestage", "op": "eq", "value": "customer"},
    },
    "actions": [{"id": "mark", "type": "set_property", "property": "welcomed", "value": True}],
}


def empty_postgres(url: str) -> None:
    ensure_postgres_database(url)
    app = App(Settings(db_url=url))
    with app.engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    app.close()


def import_contacts(app: App, prefix: str, n: int, stage: str) -> None:
    now = datetime.now(UTC)
    for start in range(0, n, IMPORT_BATCH):
        rows = [
            (f"{prefix}-{i:06d}", {"email": f"{prefix}{i}@example.com", "lifecyclestage": stage})
            for i in range(start, min(n, start + IMPORT_BATCH))
        ]
        with app.sessions.begin() as session:
            RecordRepository(session).upsert_many("contact", rows, now=now, bulk=True)


async def dev_server() -> WorkflowEnvironment:
    """A Temporal dev server in memory with crmflow's search attributes, quiet."""
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(),
        search_attributes=list(sa.ALL),
        data_converter=pydantic_data_converter,
        ui=False,
        dev_server_log_level="error",
    )


class Cpu:
    """CPU time this process, the dev server and PostgreSQL spend from now on."""

    def __init__(self) -> None:
        self.server = server_pid()
        self.began = self.now()

    def now(self) -> list[float]:
        return [cpu_seconds(os.getpid()), cpu_seconds(self.server), postgres_cpu_seconds()]

    def spent(self) -> list[float]:
        """(this process, dev server, PostgreSQL) seconds since it was made."""
        return [after - before for after, before in zip(self.now(), self.began, strict=True)]


def pending(app: App) -> int:
    with reading_sessions(app.sessions)() as session:
        return int(
            session.scalar(text("SELECT count(*) FROM record_changes WHERE dispatched_at IS NULL"))
            or 0
        )


# The partial index of pending changes answers this at once, however long the feed (a count
# would read every pending change on every look, in the process the figures are of).
ANY_PENDING = text("SELECT 1 FROM record_changes WHERE dispatched_at IS NULL LIMIT 1")
# How often the observer looks: it runs in the process the figures are of, so it looks
# seldom, and the feed's end is read off the store instead (`last_marked`).
OBSERVE_EVERY = 0.5


def any_pending(app: App) -> bool:
    with app.engine.connect() as connection:
        return connection.execute(ANY_PENDING).first() is not None


def last_marked(app: App) -> datetime:
    """When the last change was marked dispatched (by the dispatcher, on this machine's
    clock, once everything it called for was done)."""
    with reading_sessions(app.sessions)() as session:
        marked = session.scalar(select(func.max(RecordChange.dispatched_at)))
    assert marked is not None, "no change was dispatched"
    return marked


async def drain(app: App, client: Client, partitions: int) -> tuple[int, float]:
    """Run a dispatch pool as `crmflow worker` does until the feed is empty: (changes, s)."""
    waiting = pending(app)
    holder = Dispatcher(app.sessions, client, task_queue=QUEUE).holder
    starter = EnrollmentStarter(app.sessions, client, QUEUE)
    pool = DispatchPool(
        app.sessions,
        lambda part: Dispatcher(
            app.sessions,
            client,
            task_queue=QUEUE,
            starter=starter,
            partition=part,
            holder=holder,
        ),
        partitions,
    )
    stop = asyncio.Event()
    began = datetime.now(UTC)
    running = asyncio.ensure_future(pool.run(stop))
    # Off the event loop the pool runs on, as a separate observer would be.
    while await asyncio.to_thread(any_pending, app):
        await asyncio.sleep(OBSERVE_EVERY)
    stop.set()
    await running
    return waiting, (last_marked(app) - began).total_seconds()


async def plain_loop(
    client: Client, definition: WorkflowDefinition, ids: list[str], concurrency: int
) -> float:
    """`start_workflow` for each id, `concurrency` at once."""
    gate = asyncio.Semaphore(concurrency)

    async def start(n: int, workflow_id: str) -> None:
        ctx = EnrollmentContext(
            enrollment_id=n,
            workflow_key=definition.key,
            workflow_name=definition.name,
            version=1,
            object_type="contact",
            record_id=workflow_id,
        )
        async with gate:
            await client.start_workflow(
                EnrollmentWorkflow.run,
                EnrollmentInput(context=ctx, definition=definition, generation=GENERATION),
                id=workflow_id,
                task_queue=QUEUE,
                search_attributes=enrollment_search_attributes(ctx),
                static_summary=f"{definition.name} (v1) for contact {workflow_id}",
            )

    began = time.perf_counter()
    await asyncio.gather(*(start(n, workflow_id) for n, workflow_id in enumerate(ids)))
    return time.perf_counter() - began


@dataclass
class Round:
    """One import that enrolls, between two halves of the plain loop."""

    changes: int
    enrolled: int
    dispatch_s: float
    plain_starts: int
    plain_s: float
    concurrency: int
    dispatch_cpu: list[float]  # this process, dev server, PostgreSQL
    plain_cpu: list[float]

    @property
    def ratio(self) -> float:
        return (self.enrolled / self.dispatch_s) / (self.plain_starts / self.plain_s)

    def __str__(self) -> str:
        return (
            f"{self.changes:,} changes, {self.enrolled:,} enrollments started in "
            f"{self.dispatch_s:.2f} s: {self.enrolled / self.dispatch_s:,.0f} starts/s; plain "
            f"start_workflow ({self.concurrency} at once) {self.plain_starts / self.plain_s:,.0f} "
            f"starts/s; ratio {self.ratio:.3f} (target >= 0.9)"
        )

    @classmethod
    def total(cls, rounds: list[Round]) -> Round:
        return cls(
            sum(r.changes for r in rounds),
            sum(r.enrolled for r in rounds),
            sum(r.dispatch_s for r in rounds),
            sum(r.plain_starts for r in rounds),
            sum(r.plain_s for r in rounds),
            rounds[0].concurrency,
            [sum(c) for c in zip(*(r.dispatch_cpu for r in rounds), strict=True)],
            [sum(c) for c in zip(*(r.plain_cpu for r in rounds), strict=True)],
        )


async def enrolling_round(
    app: App,
    client: Client,
    definition: WorkflowDefinition,
    prefix: str,
    args: argparse.Namespace,
    concurrency: int,
) -> Round:
    """(b) once: half of the plain loop, an import of --enrolling contacts that all enroll
    (drained by the pool), the other half of the plain loop."""
    n = args.enrolling
    plain_ids = [f"{prefix}-plain-{i}" for i in range(n)]
    cpu = Cpu()
    plain_first = await plain_loop(client, definition, plain_ids[: n // 2], concurrency)
    plain_cpu = cpu.spent()
    before = enrollments(app)
    import_contacts(app, f"{prefix}-buyer", n, "customer")
    cpu = Cpu()
    handled, dispatched = await drain(app, client, args.partitions)
    dispatch_cpu = cpu.spent()
    enrolled = enrollments(app) - before
    cpu = Cpu()
    plain_second = await plain_loop(client, definition, plain_ids[n // 2 :], concurrency)
    plain_cpu = [a + b for a, b in zip(plain_cpu, cpu.spent(), strict=True)]
    return Round(
        handled,
        enrolled,
        dispatched,
        n,
        plain_first + plain_second,
        concurrency,
        dispatch_cpu,
        plain_cpu,
    )


def enrollments(app: App) -> int:
    with app.sessions() as session:
        return int(session.scalar(text("SELECT count(*) FROM enrollments")) or 0)


async def measure(name: str, db_url: str, client: Client, args: argparse.Namespace) -> None:
    app = App(Settings(db_url=db_url, task_queue=QUEUE))
    app.use_client(client)
    try:
        with tempfile.TemporaryDirectory(prefix="crmflow-dispatch-") as tmp:
            path = Path(tmp) / "customers.yaml"
            with path.open("w") as handle:
                YAML().dump(DEFINITION, handle)
            services.publish_files(app, [path])
        await services.activate(app, DEFINITION["key"])
        freeze_heap()  # as `crmflow worker` does once it has built its worker and pool
        print(f"{name}: {db_url}, {args.partitions} partition(s)", flush=True)

        import_contacts(app, f"{name}-idle", args.idle, "lead")
        handled, seconds = await drain(app, client, args.partitions)
        print(
            f"  (a) {handled:,} changes that call for nothing in {seconds:.2f} s: "
            f"{handled / seconds:,.0f} changes/s (target >= 1,000)",
            flush=True,
        )

        definition = WorkflowDefinition.model_validate(DEFINITION)
        concurrency = START_CONCURRENCY * args.partitions  # as many as the pool has in flight
        # Warm the server and the connection up.
        await plain_loop(client, definition, [f"{name}-warm-{i}" for i in range(200)], concurrency)
        rounds = [
            await enrolling_round(app, client, definition, f"{name}-{r}", args, concurrency)
            for r in range(args.rounds)
        ]
        for r, one in enumerate(rounds):
            print(f"  (b) round {r + 1}: {one}", flush=True)
        overall = Round.total(rounds)
        if len(rounds) > 1:
            print(f"  (b) all {len(rounds)} rounds: {overall}", flush=True)
        for what, (mine, server, database), count in (
            ("dispatcher", overall.dispatch_cpu, overall.enrolled),
            ("plain loop", overall.plain_cpu, overall.plain_starts),
        ):
            postgres = (
                f", PostgreSQL {1000 * database / count:.2f} ms" if "postgres" in db_url else ""
            )
            print(
                f"      CPU per start, {what}: this process {1000 * mine / count:.2f} ms, "
                f"dev server {1000 * server / count:.2f} ms{postgres}",
                flush=True,
            )
    finally:
        app.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--idle", type=int, default=5000, help="changes for nothing (5000)")
    parser.add_argument("--enrolling", type=int, default=10_000, help="enrolling import (10000)")
    parser.add_argument("--pg", help="also on this PostgreSQL URL (emptied first)")
    parser.add_argument("--partitions", type=int, default=4, help="dispatch partitions (4)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="imports that enroll, each between plain loops (3)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crmflow-dispatch-") as tmp:
        stores = [("sqlite", f"sqlite:///{tmp}/bench.db")]
        if args.pg:
            empty_postgres(args.pg)
            stores.append(("postgresql", args.pg))
        for name, url in stores:
            # A server of its own for each store: one in memory slows down as it fills.
            env = await dev_server()
            try:
                await measure(name, url, env.client, args)
            finally:
                await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
    # The Temporal SDK's Rust threads can abort interpreter teardown (temporalio/sdk-python#300).
    sys.stdout.flush()
    os._exit(0)
