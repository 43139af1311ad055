"""Head-of-line blocking: while a large import is being dispatched, how soon does a record that
joins a suppression list leave its workflow?

    .venv/bin/python bench/head_of_line.py [-n 100000] [--probes 30] [--partitions 4] [--db URL]

A Temporal dev server in memory; a store (a temporary SQLite file, or --db, e.g.
postgresql+psycopg://postgres@127.0.0.1:5432/crmflow_bench, created if missing and emptied).
Two workflows: `probe` (manual enrollment, suppression list `blocked`, a one-day delay) in which
--probes contacts are enrolled first, on a task queue a worker runs; `buyers`, a criteria
workflow (`lifecyclestage eq customer`). Then -n contacts that match `buyers` are imported in
one transaction, as `crmflow records import` writes them, and a dispatch pool runs as `crmflow
worker` runs it (--partitions). Their enrollments start on a task queue no worker polls (a start
counts once the server accepted it: running 100,000 enrollments would measure the worker, not
the change path). While the import is dispatched, one probe a second joins `blocked`
(`lists add`, an interactive write); its latency runs from that commit to its enrollment's status
`unenrolled` in the store (the dispatcher's signal, the run ending, its status written).

Prints the latencies' p50, p99 and max (target p99 <= 5 s), and how much of the import was
dispatched meanwhile (it must still have been in progress for the figure to mean anything).
Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from sqlalchemy import text
from temporalio.testing import WorkflowEnvironment

from crmflow import services
from crmflow.enrolling import EnrollmentStarter
from crmflow.services import App, Settings
from crmflow.store import reading_sessions
from crmflow.triggers import Dispatcher, DispatchPool
from crmflow.worker import build_worker

sys.path.insert(0, str(Path(__file__).parent))
from dispatch import dev_server, empty_postgres, pending  # noqa: E402  (a sibling script)

PROBES_QUEUE = "hol-probes"  # the probes' enrollments: a worker runs them
BULK_QUEUE = "hol-bulk"  # the import's enrollments: nobody polls it
PROBE: dict[str, Any] = {
    "key": "probe",
    "name": "Probe",
    "object_type": "contact",
    "enrollment": {"trigger": "manual"},
    "settings": {"suppression_lists": ["blocked"]},
    "actions": [{"id": "wait", "type": "delay", "duration": "1d"}],
}
BUYERS: dict[str, Any] = {
    "key": "buyers",
    "name": "Buyers",
    "object_type": "contact",
    "enrollment": {
        "trigger": "criteria",
        "criteria": {"property": "lifecyclestage", "op": "eq", "value": "customer"},
    },
    "actions": [{"id": "mark", "type": "set_property", "property": "welcomed", "value": True}],
}


# The bench observes the store as a separate process would: off the event loop the dispatcher
# and the worker share, in read-only sessions (which never wait for SQLite's write lock).


def status(app: App, record_id: str) -> str | None:
    with reading_sessions(app.sessions)() as session:
        return session.scalar(
            text("SELECT status FROM enrollments WHERE workflow_key = 'probe' AND record_id = :r"),
            {"r": record_id},
        )


def dispatched(app: App, record_id: str) -> bool:
    """Whether the record's list join is marked dispatched (its signals were delivered)."""
    with reading_sessions(app.sessions)() as session:
        return bool(
            session.scalar(
                text(
                    "SELECT count(*) FROM record_changes WHERE record_id = :r "
                    "AND kind = 'listed' AND dispatched_at IS NOT NULL"
                ),
                {"r": record_id},
            )
        )


async def run(app: App, env: WorkflowEnvironment, args: argparse.Namespace) -> None:
    client = env.client
    app.use_client(client)
    with tempfile.TemporaryDirectory(prefix="crmflow-hol-") as tmp:
        paths = []
        for definition in (PROBE, BUYERS):
            path = Path(tmp) / f"{definition['key']}.yaml"
            with path.open("w") as handle:
                YAML().dump(definition, handle)
            paths.append(path)
        services.publish_files(app, paths)
    for key in ("probe", "buyers"):
        await services.activate(app, key)
    probes = [f"probe-{i:03d}" for i in range(args.probes)]
    for record_id in probes:
        services.set_record(app, "contact", record_id, {"email": f"{record_id}@example.com"})
    bulk_starter = EnrollmentStarter(app.sessions, client, BULK_QUEUE)
    holder = Dispatcher(app.sessions, client, task_queue=BULK_QUEUE).holder
    pool = DispatchPool(
        app.sessions,
        lambda part: Dispatcher(
            app.sessions,
            client,
            task_queue=BULK_QUEUE,
            starter=bulk_starter,
            partition=part,
            holder=holder,
        ),
        args.partitions,
    )
    # The app's settings name the probes' queue: manual enrollment starts them there.
    worker = build_worker(
        client, app.sessions, enroller=await app.starter(), task_queue=PROBES_QUEUE
    )
    async with worker:
        outcomes = await services.enroll(app, "probe", probes)
        assert all(o.ok for o in outcomes), outcomes
        stop = asyncio.Event()
        dispatching = asyncio.ensure_future(pool.run(stop))
        # Let the probes' own creation changes go through before the import lands.
        while await asyncio.to_thread(pending, app):
            await asyncio.sleep(0.2)
        began = time.perf_counter()
        rows = [
            (f"buyer-{i:06d}", {"email": f"b{i}@example.com", "lifecyclestage": "customer"})
            for i in range(args.n)
        ]
        services.import_rows(app, rows, "contact")  # what `records import` runs
        imported = time.perf_counter() - began
        print(f"  imported {args.n:,} matching contacts in {imported:.1f} s", flush=True)
        latencies, signalled = [], []
        for record_id in probes:
            await asyncio.sleep(1.0)
            joined = time.perf_counter()
            # As `crmflow lists add` in another process would: its commit waits its turn.
            await asyncio.to_thread(
                services.change_list, app, "blocked", [record_id], object_type="contact", add=True
            )
            while not await asyncio.to_thread(dispatched, app, record_id):
                await asyncio.sleep(0.02)
            signalled.append(time.perf_counter() - joined)
            while await asyncio.to_thread(status, app, record_id) != "unenrolled":
                await asyncio.sleep(0.02)
            latencies.append(time.perf_counter() - joined)
        left = await asyncio.to_thread(pending, app)
        stop.set()
        await dispatching
    for what, figures in (
        ("dispatched (the unenroll signal delivered)", signalled),
        ("unenrolled (the run ended, its status written)", latencies),
    ):
        figures.sort()
        p99 = figures[min(len(figures) - 1, round(0.99 * (len(figures) - 1)))]
        print(
            f"  suppression-list join -> {what}, {len(figures)} probes: "
            f"p50 {statistics.median(figures):.2f} s, p99 {p99:.2f} s, max {figures[-1]:.2f} s "
            "(target p99 <= 5 s)"
        )
    done = args.n - left
    print(
        f"  meanwhile {done:,} of the import's {args.n:,} changes were dispatched "
        f"({left:,} still pending at the last probe)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=100_000, help="imported contacts (100000)")
    parser.add_argument("--probes", type=int, default=30, help="suppression joins (30)")
    parser.add_argument("--partitions", type=int, default=4, help="dispatch partitions (4)")
    parser.add_argument("--db", help="store URL (default: a temporary SQLite file)")
    args = parser.parse_args()
    env = await dev_server()
    try:
        with tempfile.TemporaryDirectory(prefix="crmflow-hol-") as tmp:
            db_url = args.db or f"sqlite:///{tmp}/bench.db"
            if args.db:
                empty_postgres(db_url)
            app = App(Settings(db_url=db_url, task_queue=PROBES_QUEUE))
            print(f"head-of-line: store {db_url}, {args.partitions} partitions", flush=True)
            try:
                await run(app, env, args)
            finally:
                app.close()
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
    # The Temporal SDK's Rust threads can abort interpreter teardown (temporalio/sdk-python#300).
    sys.stdout.flush()
    os._exit(0)
