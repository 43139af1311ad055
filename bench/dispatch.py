"""The change path: how fast the dispatcher turns the change feed into (no) enrollments.

    .venv/bin/python bench/dispatch.py [--idle 5000] [--enrolling 10000] [--partitions 4]
                                       [--pg URL]

A Temporal dev server in memory with crmflow's search attributes; an active criteria workflow
(`lifecyclestage eq customer`, object type contact). For each store (a temporary SQLite file,
then with --pg, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/crmflow_bench, created if
missing and emptied first, PostgreSQL):

A dispatch pool runs as `crmflow worker` runs it (--partitions, default 4), from the moment
the changes are committed until the feed is empty.

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
      polls: a start counts once the server accepted it.

Figures only: nothing is asserted. The machine is shared: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from sqlalchemy import text
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from crmflow import services
from crmflow.activities.models import GENERATION, EnrollmentContext, EnrollmentInput
from crmflow.definitions import WorkflowDefinition
from crmflow.enrolling import EnrollmentStarter, enrollment_search_attributes
from crmflow.services import App, Settings
from crmflow.services.devserver import temporal_cli_path
from crmflow.store import RecordRepository, ensure_postgres_database, reading_sessions
from crmflow.triggers import Dispatcher, DispatchPool
from crmflow.triggers._dispatcher import START_CONCURRENCY
from crmflow.worker import EnrollmentWorkflow
from crmflow.worker import search_attributes as sa

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
            RecordRepository(session).upsert_many("contact", rows, now=now)


async def dev_server() -> WorkflowEnvironment:
    """A Temporal dev server in memory with crmflow's search attributes, quiet."""
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(),
        search_attributes=list(sa.ALL),
        data_converter=pydantic_data_converter,
        ui=False,
        dev_server_log_level="error",
    )


def pending(app: App) -> int:
    with reading_sessions(app.sessions)() as session:
        return int(
            session.scalar(text("SELECT count(*) FROM record_changes WHERE dispatched_at IS NULL"))
            or 0
        )


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
    began = time.perf_counter()
    running = asyncio.ensure_future(pool.run(stop))
    # Off the event loop the pool runs on, as a separate observer would be.
    while await asyncio.to_thread(pending, app):
        await asyncio.sleep(0.05)
    seconds = time.perf_counter() - began
    stop.set()
    await running
    return waiting, seconds


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
        print(f"{name}: {db_url}, {args.partitions} partition(s)", flush=True)

        import_contacts(app, f"{name}-idle", args.idle, "lead")
        handled, seconds = await drain(app, client, args.partitions)
        print(
            f"  (a) {handled:,} changes that call for nothing in {seconds:.2f} s: "
            f"{handled / seconds:,.0f} changes/s (target >= 1,000)",
            flush=True,
        )

        definition = WorkflowDefinition.model_validate(DEFINITION)
        n = args.enrolling
        # Warm the server and the connection up, then alternate: plain, dispatcher, plain.
        concurrency = START_CONCURRENCY * args.partitions  # as many as the pool has in flight
        await plain_loop(client, definition, [f"{name}-warm-{i}" for i in range(200)], concurrency)
        plain_ids = [f"{name}-plain-{i}" for i in range(n)]
        plain_first = await plain_loop(client, definition, plain_ids[: n // 2], concurrency)
        import_contacts(app, f"{name}-buyer", n, "customer")
        handled, dispatched = await drain(app, client, args.partitions)
        with app.sessions() as session:
            enrolled = session.scalar(text("SELECT count(*) FROM enrollments"))
        plain_second = await plain_loop(client, definition, plain_ids[n // 2 :], concurrency)
        plain = n / (plain_first + plain_second)
        rate = (enrolled or 0) / dispatched
        print(
            f"  (b) {handled:,} changes, {enrolled:,} enrollments started in {dispatched:.2f} s: "
            f"{rate:,.0f} starts/s; plain start_workflow ({concurrency} at once) {plain:,.0f} "
            "starts/s; "
            f"ratio {rate / plain:.2f} (target >= 0.9)",
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
    args = parser.parse_args()
    env = await dev_server()
    try:
        with tempfile.TemporaryDirectory(prefix="crmflow-dispatch-") as tmp:
            await measure("sqlite", f"sqlite:///{tmp}/bench.db", env.client, args)
        if args.pg:
            empty_postgres(args.pg)
            await measure("postgresql", args.pg, env.client, args)
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
    # The Temporal SDK's Rust threads can abort interpreter teardown (temporalio/sdk-python#300).
    sys.stdout.flush()
    os._exit(0)
