"""Interpreter overhead: N enrollments of a 5-action definition, run by the enrollment workflow,
against a hand-written Temporal workflow calling the same activities, on one dev server, in one run.

    .venv/bin/python bench/enrollment_throughput.py [-n 2000] [--db URL] [--against local]

Prints completions/s of each and their ratio (interpreter / hand-written), and the CPU each
enrollment cost this process (the worker) and the dev server. Enrollment rows are created before
the clock starts for both; the clock runs from the first start to the close time, on the server,
of the round's last run (the bench polls visibility once a second to see that all closed).

The hand-written workflow runs every action as an activity task (the baseline the issue set);
`--against local` compares with one that runs the store-only steps as local activities, as the
interpreter does in runs of generation >= 2: the interpreter's own overhead on equal terms.

Both workflows run on one worker built by `build_worker`, so under the same runner: crmflow's
`workflow_runner()`, unsandboxed (the sandbox re-imported the interpreter's modules for every
run, ~16 ms CPU per enrollment; the tests replay histories under the sandbox instead).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from crmflow.activities.models import GENERATION, EnrollmentContext, EnrollmentInput
from crmflow.definitions import WorkflowDefinition
from crmflow.enrolling import EnrollmentStarter
from crmflow.enrolling import enrollment_search_attributes as search_attributes
from crmflow.services import App, Settings
from crmflow.store import EnrollmentRepository, RecordRepository, WorkflowRepository
from crmflow.worker import build_worker
from crmflow.worker import search_attributes as sa

sys.path.insert(0, str(Path(__file__).parent))
from handwritten import HandWrittenLocalWorkflow, HandWrittenWorkflow  # noqa: E402  (own module)
from processes import cpu_seconds, server_pid  # noqa: E402  (own module)

# The hand-written baselines' workflow types, by --against.
BASELINES = {"activities": "HandWritten", "local": "HandWrittenLocal"}

DEFINITION = WorkflowDefinition.model_validate(
    {
        "key": "bench",
        "name": "Benchmark",
        "enrollment": {"trigger": "manual"},
        "actions": [
            {"id": "qualify", "type": "set_property", "property": "stage", "value": "lead"},
            {
                "id": "route",
                "type": "branch",
                "branches": [
                    {
                        "name": "vip",
                        "when": {"property": "vip", "op": "eq", "value": True},
                        "next": "end",
                    }
                ],
                "otherwise": "welcome",
            },
            {
                "id": "welcome",
                "type": "send_email",
                "subject": "Hi {{ record.name }}",
                "body": "Hello",
            },
            {"id": "wait", "type": "delay", "duration": "1s"},
            {"id": "call", "type": "create_task", "title": "Call {{ record.name }}"},
        ],
    }
)


def prepare(app: App, n: int, prefix: str) -> list[EnrollmentContext]:
    now = datetime.now(UTC)
    contexts = []
    with app.sessions.begin() as session:
        RecordRepository(session).upsert_many(
            "contact",
            [(f"{prefix}{i}", {"name": f"P{i}", "email": f"p{i}@example.com"}) for i in range(n)],
            now=now,
        )
        enrollments = EnrollmentRepository(session)
        for i in range(n):
            e = enrollments.create(
                key="bench",
                version=1,
                object_type="contact",
                record_id=f"{prefix}{i}",
                source="manual",
                now=now,
            )
            contexts.append(
                EnrollmentContext(
                    enrollment_id=e.id,
                    workflow_key="bench",
                    workflow_name="Benchmark",
                    version=1,
                    object_type="contact",
                    record_id=f"{prefix}{i}",
                )
            )
    return contexts


async def run_round(
    client: Client,
    kind: str,
    contexts: list[EnrollmentContext],
    task_queue: str,
    server: int,
    baseline: str,
) -> tuple[float, float, float]:
    """One round of `kind`: its time, and the CPU (s) of this process and of the server."""
    gate = asyncio.Semaphore(64)
    workflow_type = "Enrollment" if kind == "interpreter" else baseline

    async def start(ctx: EnrollmentContext) -> None:
        async with gate:
            await client.start_workflow(
                workflow_type,
                EnrollmentInput(context=ctx, definition=DEFINITION, generation=GENERATION),
                id=f"{kind}:{ctx.record_id}",
                task_queue=task_queue,
                # Both carry the same search attributes: the comparison is about the interpreter.
                search_attributes=search_attributes(ctx),
            )

    query = f"WorkflowType='{workflow_type}' AND ExecutionStatus='Completed'"
    target = (await client.count_workflows(query)).count + len(contexts)
    began, began_at = time.perf_counter(), datetime.now(UTC)
    cpu = cpu_seconds(os.getpid()), cpu_seconds(server)
    await asyncio.gather(*(start(c) for c in contexts))
    started = time.perf_counter()
    # Polled once a second (a visibility count costs the server CPU the workflows share); the
    # round's time is then read off the server: until the last of its runs closed.
    while (await client.count_workflows(query)).count < target:
        await asyncio.sleep(1)
    cpu_after = cpu_seconds(os.getpid()), cpu_seconds(server)
    ids = {f"{kind}:{ctx.record_id}" for ctx in contexts}
    closed = [w.close_time async for w in client.list_workflows(query) if w.id in ids]
    assert len(closed) == len(ids) and all(closed)
    elapsed = (max(c for c in closed if c is not None) - began_at).total_seconds()
    # CPU per enrollment of this process (the worker, and the loop starting the workflows) and
    # of the dev server: the two share the machine's cores.
    worker_ms, server_ms = (
        1000 * (after - before) / len(contexts)
        for after, before in zip(cpu_after, cpu, strict=True)
    )
    print(
        f"  {kind:12s} started {len(contexts)} in {started - began:6.1f} s, "
        f"all completed after {elapsed:6.1f} s -> {len(contexts) / elapsed:6.1f} completions/s; "
        f"CPU per enrollment: worker {worker_ms:.1f} ms, server {server_ms:.1f} ms",
        flush=True,
    )
    return elapsed, cpu_after[0] - cpu[0], cpu_after[1] - cpu[1]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="enrollments per kind (default 2000)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="alternating rounds, A B B A B A A B ... (default 4: a burst of load from elsewhere "
        "in the middle of the run would fall on one kind only with 2)",
    )
    parser.add_argument("--db", help="store URL (default: a temporary SQLite file)")
    parser.add_argument(
        "--against",
        choices=sorted(BASELINES),
        default="activities",
        help="the hand-written baseline: every action an activity task (default), or the "
        "store-only steps as local activities, as the interpreter runs them",
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="crmflow-bench-"))
    app = App(Settings(db_url=args.db or f"sqlite:///{tmp / 'bench.db'}", task_queue="bench"))
    with app.sessions.begin() as session:
        WorkflowRepository(session).publish(
            key="bench",
            name="Benchmark",
            object_type="contact",
            trigger="manual",
            definition=DEFINITION.model_dump(mode="json", by_alias=True, exclude_none=True),
            source="",
            source_name="bench",
            now=datetime.now(UTC),
        )
    temporal = shutil.which("temporal") or str(Path(sys.executable).parent / "temporal")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal,
        data_converter=pydantic_data_converter,
        search_attributes=list(sa.ALL),
    )
    print(
        f"{args.n} enrollments each; store {app.settings.db_url}; dev server in memory; one "
        f"worker; hand-written baseline: {args.against}"
    )
    server = server_pid()
    try:
        worker = build_worker(
            env.client,
            app.sessions,
            enroller=EnrollmentStarter(app.sessions, env.client, "bench"),
            task_queue="bench",
            extra_workflows=[HandWrittenWorkflow, HandWrittenLocalWorkflow],
        )
        async with worker:
            # Alternate the order (A B, B A, B A, A B: Thue-Morse) so warm-up, drift and bursts
            # of load fall on both alike.
            elapsed = {"hand-written": 0.0, "interpreter": 0.0}
            worker_cpu, server_cpu = dict(elapsed), dict(elapsed)
            per_round = args.n // args.rounds
            for round_ in range(args.rounds):
                kinds = ["hand-written", "interpreter"]
                for kind in kinds if round_.bit_count() % 2 == 0 else kinds[::-1]:
                    contexts = prepare(app, per_round, f"{kind[0]}{round_}-")
                    took, worker_s, server_s = await run_round(
                        env.client, kind, contexts, "bench", server, BASELINES[args.against]
                    )
                    elapsed[kind] += took
                    worker_cpu[kind] += worker_s
                    server_cpu[kind] += server_s
    finally:
        await env.shutdown()
        app.close()
    total = per_round * args.rounds
    hand, interp = (total / elapsed[k] for k in ("hand-written", "interpreter"))
    print(f"hand-written: {hand:.1f} completions/s; interpreter: {interp:.1f} completions/s")
    for kind in elapsed:
        print(
            f"{kind}: CPU per enrollment: worker {1000 * worker_cpu[kind] / total:.1f} ms, "
            f"server {1000 * server_cpu[kind] / total:.1f} ms"
        )
    cpu_ratio = sum(c["interpreter"] for c in (worker_cpu, server_cpu)) / sum(
        c["hand-written"] for c in (worker_cpu, server_cpu)
    )
    print(f"CPU per enrollment, worker and server, interpreter / hand-written: {cpu_ratio:.2f}")
    print(f"ratio interpreter / hand-written: {interp / hand:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
