"""Scheduled fan-out: how fast a scheduled run selects its records and starts their enrollments.

    .venv/bin/python bench/scheduled_fanout.py [-n 100000] [--starts 5000] [--rounds 2] [--db URL]

N deal records (default 100,000) are upserted with `RecordRepository.upsert_many`, half of them
matching `stage eq open AND amount gte 1000`. Store: a temporary SQLite file unless --db gives
one, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/crmflow_bench (created if missing; records
`deal-000000`… are upserted into it). Then:

  (a) selection: the ids of the matching records, selected in SQL the way a run selects them
      (`select_matching` + `RecordRepository.matching_ids`, keyset pages of PAGE_SIZE, each page
      in its own session); best of three passes. Target ≤ 1 s on SQLite. On PostgreSQL one
      more pass runs first, right after the load: without statistics yet the planner scans
      every later record for each page; it is printed apart, and the table analyzed (as
      autovacuum does a minute or so after a bulk load) before the three passes.
  (b) starts: a Temporal dev server in memory, with crmflow's search attributes. A scheduled
      workflow is published and activated through the services (its Temporal Schedule is
      created, on a weekday away from today so it never fires), and `run_now` — the code behind
      `crmflow schedule KEY --run-now` — starts a real run: the ScheduledRun workflow, whose
      activity selects the records page by page and starts their enrollments through
      `enroll_selected` (enrollment row, then `start_workflow`, CONCURRENCY at once). Against it,
      a plain loop of `client.start_workflow` with the same concurrency, the same workflow type,
      input, search attributes and summary, to the same server in the same process. Both start
      enrollments on a task queue no worker polls: a start counts once the server accepted it,
      and running the enrollments would only load the server unevenly. Only the run workflow
      has a worker (on its own queue). The run's time is `run_now`'s, end to end: starting the
      run, its selection, the store writes and every start.

100,000 starts at ~290/s would take ~6 min: --starts N (default 5000; 0 = every matching record)
caps how many are started in (b), split over --rounds rounds that alternate the order (plain
first, then the run first) so warm-up and drift fall on both alike. Each round's run has its own
definition whose criteria add `seq` bounds, so it enrolls its share of the matching records while
still selecting over the whole store. Prints both rates and their ratio (target ≥ 0.9).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from ruamel.yaml import YAML
from sqlalchemy import text
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from crmflow import services
from crmflow.activities.models import GENERATION, EnrollmentContext, EnrollmentInput
from crmflow.activities.schedules import SchedulingActivities
from crmflow.definitions import WEEKDAYS, WorkflowDefinition
from crmflow.enrolling import (
    CONCURRENCY,
    PAGE_SIZE,
    EnrollmentStarter,
    enrollment_search_attributes,
)
from crmflow.services import App, Settings
from crmflow.services import schedules as _schedules
from crmflow.services.devserver import temporal_cli_path
from crmflow.store import RecordRepository, ensure_postgres_database, select_matching
from crmflow.worker import EnrollmentWorkflow
from crmflow.worker import search_attributes as sa
from crmflow.worker._scheduled import ScheduledRunWorkflow
from crmflow.worker._worker import workflow_runner

OBJECT_TYPE = "deal"
MATCHING: dict[str, Any] = {
    "all": [
        {"property": "stage", "op": "eq", "value": "open"},
        {"property": "amount", "op": "gte", "value": 1000},
    ]
}
RUN_QUEUE = "bench-runs"  # the run workflow and its activity: a worker polls it
ENROLLMENT_QUEUE = "bench-enrollments"  # the started enrollments: nobody polls it
INSERT_BATCH = 5000
WARM_UP = 200


def record_id(i: int) -> str:
    return f"deal-{i:06d}"  # zero-padded: id order is seq order, as keyset paging walks it


def deals(n: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """Even records match; odd ones fail one test or the other (every other one each)."""
    for i in range(n):
        matching = i % 2 == 0
        yield (
            record_id(i),
            {
                "name": f"Deal {i}",
                "seq": i,
                "stage": "open" if matching or i % 4 == 1 else "closed",
                "amount": 1000 + i % 9000 if matching or i % 4 == 3 else i % 1000,
                "owner": f"rep-{i % 50}",
            },
        )


def insert(app: App, n: int) -> float:
    began = time.perf_counter()
    now = datetime.now(UTC)
    rows = deals(n)
    for _ in range(0, n, INSERT_BATCH):
        batch = [row for _, row in zip(range(INSERT_BATCH), rows, strict=False)]
        with app.sessions.begin() as session:
            RecordRepository(session).upsert_many(OBJECT_TYPE, batch, now=now)
    return time.perf_counter() - began


def select_all(app: App) -> tuple[int, int, float]:
    """(ids, pages, seconds): every matching id, a page at a time, as a run selects them."""
    definition = WorkflowDefinition.model_validate(scheduled("select", MATCHING))
    assert definition.enrollment.criteria is not None
    began = time.perf_counter()
    with app.sessions() as session:
        dialect_name = session.get_bind().dialect.name
    selection = select_matching(
        definition.enrollment.criteria,
        object_type=OBJECT_TYPE,
        now=datetime.now(UTC),
        dialect_name=dialect_name,
    )
    after: str | None = None
    found = pages = 0
    while True:
        with app.sessions() as session:
            page = RecordRepository(session).matching_ids(selection, after=after, limit=PAGE_SIZE)
        if not page:
            return found, pages, time.perf_counter() - began
        found, pages, after = found + len(page), pages + 1, page[-1]


def scheduled(key: str, criteria: dict[str, Any]) -> dict[str, Any]:
    # On a weekday three days away: the Schedule exists and is active but never fires here.
    quiet = WEEKDAYS[(datetime.now(ZoneInfo("Europe/Paris")).weekday() + 3) % 7]
    return {
        "key": key,
        "name": f"Scheduled fan-out {key}",
        "object_type": OBJECT_TYPE,
        "enrollment": {
            "trigger": "schedule",
            "criteria": criteria,
            "schedule": {"every": "week", "at": "08:00", "days": [quiet]},
        },
        "settings": {"timezone": "Europe/Paris"},
        "actions": [{"id": "mark", "type": "set_property", "property": "reviewed", "value": "y"}],
    }


async def publish(app: App, directory: Path, key: str, low: int, high: int) -> WorkflowDefinition:
    """A scheduled workflow enrolling the matching records with `low <= seq < high`."""
    bounded = {
        "all": [
            *MATCHING["all"],
            {"property": "seq", "op": "gte", "value": low},
            {"property": "seq", "op": "lt", "value": high},
        ]
    }
    definition = scheduled(key, bounded)
    path = directory / f"{key}.yaml"
    with path.open("w") as handle:
        YAML().dump(definition, handle)
    services.publish_files(app, [path])
    await services.activate(app, key)  # creates the Temporal Schedule
    return WorkflowDefinition.model_validate(definition)


async def plain_loop(client: Client, definition: WorkflowDefinition, ids: list[str]) -> float:
    """`start_workflow` for each id, CONCURRENCY at once: what the run does, minus crmflow."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def start(n: int, workflow_id: str) -> None:
        ctx = EnrollmentContext(
            enrollment_id=n,
            workflow_key=definition.key,
            workflow_name=definition.name,
            version=1,
            object_type=OBJECT_TYPE,
            record_id=workflow_id,
        )
        async with gate:
            await client.start_workflow(
                EnrollmentWorkflow.run,
                EnrollmentInput(context=ctx, definition=definition, generation=GENERATION),
                id=workflow_id,
                task_queue=ENROLLMENT_QUEUE,
                search_attributes=enrollment_search_attributes(ctx),
                static_summary=f"{definition.name} (v1) for {OBJECT_TYPE} {workflow_id}",
            )

    began = time.perf_counter()
    await asyncio.gather(*(start(n, workflow_id) for n, workflow_id in enumerate(ids)))
    return time.perf_counter() - began


def rate_line(label: str, count: int, seconds: float, extra: str = "") -> str:
    rate = count / seconds
    return f"    {label:24s} {count:7,} in {seconds:6.1f} s -> {rate:6.1f} starts/s{extra}"


async def measure_starts(app: App, directory: Path, n: int, starts: int, rounds: int) -> None:
    matching = (n + 1) // 2
    starts = matching if starts <= 0 else min(starts, matching)
    per_round = starts // rounds
    print(
        f"(b) enrollment starts: {per_round * rounds:,} of the {matching:,} matching records "
        f"(--starts {starts}; 0 = all), concurrency {CONCURRENCY}, {rounds} round(s), "
        "dev server in memory",
        flush=True,
    )
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(),
        search_attributes=list(sa.ALL),
        data_converter=pydantic_data_converter,
        ui=False,
    )
    client = env.client
    app.use_client(client)
    # Only the run needs a worker; its activity starts the enrollments on a queue nobody polls.
    scheduling = SchedulingActivities(
        app.sessions, EnrollmentStarter(app.sessions, client, ENROLLMENT_QUEUE)
    )
    worker = Worker(
        client,
        task_queue=RUN_QUEUE,
        workflows=[ScheduledRunWorkflow],
        activities=[scheduling.run_schedule],
        workflow_runner=workflow_runner(),
    )
    totals = {"plain": [0, 0.0], "run": [0, 0.0]}
    try:
        async with worker:
            warm = WorkflowDefinition.model_validate(scheduled("warm-up", MATCHING))
            await plain_loop(client, warm, [f"warm-up-{i}" for i in range(WARM_UP)])
            for round_ in range(rounds):
                # The round's share of the matching (even) records: seq in [low, high).
                low, high = 2 * per_round * round_, 2 * per_round * (round_ + 1)
                key = f"fanout-{round_ + 1}"
                definition = await publish(app, directory, key, low, high)
                print(f"  round {round_ + 1}", flush=True)
                for kind in ["plain", "run"] if round_ % 2 == 0 else ["run", "plain"]:
                    if kind == "plain":
                        ids = [f"plain-{round_ + 1}-{i}" for i in range(per_round)]
                        seconds = await plain_loop(client, definition, ids)
                        count, extra = per_round, ""
                        label = "plain start_workflow"
                    else:
                        began = time.perf_counter()
                        result = await _schedules.run_now(app, key, wait=3600)
                        seconds = time.perf_counter() - began
                        assert result is not None and result.enrolled == per_round, result
                        count, label = result.enrolled, "scheduled run (run_now)"
                        extra = (
                            f"  ({result.matched:,} matched, {result.enrolled:,} enrolled, "
                            f"{result.skipped} skipped, {result.failed} failed)"
                        )
                    totals[kind][0] += count
                    totals[kind][1] += seconds
                    print(rate_line(label, count, seconds, extra), flush=True)
    finally:
        await env.shutdown()
    plain = totals["plain"][0] / totals["plain"][1]
    run = totals["run"][0] / totals["run"][1]
    print(f"plain start_workflow loop: {plain:.1f} starts/s; scheduled run: {run:.1f} starts/s")
    print(f"ratio scheduled run / plain loop: {run / plain:.2f} (target >= 0.9)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=100_000, help="deal records (default 100000)")
    parser.add_argument(
        "--starts",
        type=int,
        default=5000,
        help="enrollments started in (b), over all rounds (default 5000; 0 = every match)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    parser.add_argument("--db", help="store URL (default: a temporary SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crmflow-fanout-") as tmp:
        directory = Path(tmp)
        db_url = args.db or f"sqlite:///{directory / 'bench.db'}"
        ensure_postgres_database(db_url)  # a no-op for SQLite
        app = App(Settings(db_url=db_url, task_queue=RUN_QUEUE))
        try:
            print(f"scheduled fan-out: {args.n:,} {OBJECT_TYPE} records; store {db_url}")
            seconds = insert(app, args.n)
            print(f"  inserted in {seconds:.1f} s (upsert_many, {INSERT_BATCH} a transaction)")
            fresh = None
            if app.engine.dialect.name == "postgresql":
                # Right after a bulk load PostgreSQL has no statistics yet (autovacuum analyzes
                # within a minute or so) and plans each page as a scan of every later record.
                fresh = select_all(app)[2]
                with app.engine.begin() as connection:
                    connection.execute(text("ANALYZE records"))
            passes = [select_all(app) for _ in range(3)]
            found, pages, _ = passes[0]
            best = min(seconds for _, _, seconds in passes)
            print(
                f"(a) selection: {found:,} matching ids in {pages} keyset pages of {PAGE_SIZE}: "
                f"{best:.2f} s (best of 3; first {passes[0][2]:.2f} s; target <= 1 s on SQLite)",
                flush=True,
            )
            if fresh is not None:
                print(f"    on PostgreSQL right after the load, before ANALYZE: {fresh:.2f} s")
            await measure_starts(app, directory, args.n, args.starts, max(args.rounds, 1))
        finally:
            app.close()


if __name__ == "__main__":
    asyncio.run(main())
    # The Temporal SDK's Rust threads can abort interpreter teardown (temporalio/sdk-python#300,
    # as `crmflow` notes): everything is closed by now, so skip it.
    sys.stdout.flush()
    os._exit(0)
