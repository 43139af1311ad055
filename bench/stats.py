"""`crmflow stats` on a large workflow: the SQL of `StatsRepository.stats` and of the graph's
per-action counts over N enrollments.

    .venv/bin/python bench/stats.py [-n 100000] [--seed 7] [--db URL]

N enrollments (default 100,000) of `examples/lead-nurture.yaml` over two versions (a fifth on
version 1), each with the steps an enrollment of that workflow leaves: `welcome` (send_email,
2% failed with one of three causes), `wait-open` (wait_for_event, 1 minute to 3 days; 5% still
waiting), then `reminder` or `sales-task`; statuses completed, goal_met (30%, 1 hour to 10
days after enrolling), running, unenrolled and failed. About 3.5 steps per enrollment, inserted
in bulk. Store: a temporary SQLite file unless --db names one (e.g.
postgresql+psycopg://postgres@127.0.0.1:5432/crmflow_bench, created if missing; use an empty
one; it is analyzed after the load).

Printed: best of five (wall time, and this process's CPU time in that run): the whole
`stats` (statuses; funnel, failures and waiting-time histograms in one pass; time to goal;
enrollments failed as a whole: four statements), the `stats` of the last 7 days only, and the
graph's counts of one version (one statement); and, as a baseline in the same run, one plain
`SELECT count(*)` over the joined steps and enrollments, to read the others as ratios of the
cheapest pass the database can make. Target (issue 15): `stats` <= 1 s on SQLite at 100,000
enrollments. Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, text

from crmflow.definitions import load_definition_file
from crmflow.store import (
    Enrollment,
    EnrollmentStep,
    StatsRepository,
    Workflow,
    WorkflowVersion,
    create_session_factory,
    create_store_engine,
    ensure_postgres_database,
    upgrade_database,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "lead-nurture.yaml"
KEY = "lead-nurture"
CAUSES = (
    "failed: the record has no email address",
    "failed after retries: SMTP 451 try again later",
    "failed: invalid recipient address",
)


def rows(n: int, seed: int, now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rng = random.Random(seed)
    enrollments: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    for i in range(1, n + 1):
        enrolled = now - timedelta(seconds=rng.randrange(60 * 86400))
        version = 1 if rng.random() < 0.2 else 2
        draw = rng.random()
        status = (
            "goal_met"
            if draw < 0.3
            else "running"
            if draw < 0.35
            else "unenrolled"
            if draw < 0.4
            else "failed"
            if draw < 0.41
            else "completed"
        )
        ended = (
            None
            if status == "running"
            else enrolled + timedelta(seconds=rng.randrange(3600, 10 * 86400))
        )
        enrollments.append(
            {
                "id": i,
                "workflow_key": KEY,
                "version": version,
                "object_type": "contact",
                "record_id": f"c{i}",
                "seq": 1,
                "status": status,
                "reason": "worker crashed" if status == "failed" else None,
                "source": "trigger",
                "enrolled_at": enrolled,
                "ended_at": ended,
                "temporal_workflow_id": f"{KEY}:contact:c{i}:1",
            }
        )
        failed = rng.random() < 0.02
        steps.append(
            {
                "enrollment_id": i,
                "action_id": "welcome",
                "type": "send_email",
                "started_at": enrolled,
                "finished_at": enrolled,
                "outcome": rng.choice(CAUSES) if failed else "sent",
                "detail": {},
            }
        )
        waited = timedelta(seconds=rng.randrange(60, 3 * 86400))
        waiting = status == "running" and rng.random() < 0.9
        steps.append(
            {
                "enrollment_id": i,
                "action_id": "wait-open",
                "type": "wait_for_event",
                "started_at": enrolled,
                "finished_at": None if waiting else enrolled + waited,
                "outcome": "waiting for email_opened" if waiting else "event email_opened received",
                "detail": {},
            }
        )
        if not waiting and status != "goal_met":
            action_id, type_ = rng.choice(
                (("reminder", "send_email"), ("sales-task", "create_task"))
            )
            steps.append(
                {
                    "enrollment_id": i,
                    "action_id": action_id,
                    "type": type_,
                    "started_at": enrolled + waited,
                    "finished_at": enrolled + waited,
                    "outcome": "done",
                    "detail": {},
                }
            )
    return enrollments, steps


def best(label: str, fn: Callable[[], Any], repeat: int = 5) -> float:
    """Best wall time of `repeat` runs, and the CPU time this process spent in that run: on
    SQLite (in-process) the CPU time is what the query costs on an idle core, whatever else
    the machine runs; on PostgreSQL the work is in the server, so only the wall time counts."""
    runs = []
    for _ in range(repeat):
        started, cpu = time.perf_counter(), time.process_time()
        fn()
        runs.append((time.perf_counter() - started, time.process_time() - cpu))
    wall, cpu = min(runs)
    print(f"  {label:<44} {wall * 1000:8.1f} ms wall {cpu * 1000:8.1f} ms CPU")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--db")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{tmp}/bench.db"
        if url.startswith("postgresql"):
            ensure_postgres_database(url)
        engine = create_store_engine(url)
        upgrade_database(engine)
        sessions = create_session_factory(engine)
        now = datetime.now(UTC)
        definition = load_definition_file(EXAMPLE)
        enrollments, steps = rows(args.n, args.seed, now)
        started = time.perf_counter()
        with sessions.begin() as session:
            session.execute(
                insert(Workflow),
                [{"key": KEY, "latest_version": 2, "active": True, "activated_at": now}],
            )
            session.execute(
                insert(WorkflowVersion),
                [
                    {
                        "key": KEY,
                        "version": v,
                        "name": definition.name,
                        "object_type": "contact",
                        "trigger": definition.enrollment.trigger,
                        "definition": definition.model_dump(mode="json"),
                        "source": "",
                        "source_name": str(EXAMPLE),
                        "published_at": now,
                    }
                    for v in (1, 2)
                ],
            )
            for start in range(0, len(enrollments), 10_000):
                session.execute(insert(Enrollment), enrollments[start : start + 10_000])
            for start in range(0, len(steps), 10_000):
                session.execute(insert(EnrollmentStep), steps[start : start + 10_000])
        if engine.dialect.name == "postgresql":
            with engine.begin() as connection:
                connection.execute(text("ANALYZE"))
        print(
            f"{engine.dialect.name}: {len(enrollments):,} enrollments, {len(steps):,} steps "
            f"(loaded in {time.perf_counter() - started:.1f} s)"
        )
        reads = create_session_factory(engine, read_only=True)

        def baseline() -> None:
            with reads() as session:
                session.scalar(
                    select(func.count())
                    .select_from(EnrollmentStep)
                    .join(Enrollment, Enrollment.id == EnrollmentStep.enrollment_id)
                    .where(Enrollment.workflow_key == KEY)
                )

        def stats(since: datetime | None = None) -> Callable[[], Any]:
            def run() -> Any:
                with reads() as session:
                    return StatsRepository(session).stats(KEY, since=since)

            return run

        def counts() -> None:
            with reads() as session:
                StatsRepository(session).action_counts(KEY, version=2)

        base = best("baseline: count(*) of the joined steps", baseline)
        whole = best("stats (all enrollments)", stats())
        week = best("stats --since 7d", stats(now - timedelta(days=7)))
        graph = best("graph --counts (one version)", counts)
        print(
            f"  ratios to the baseline: stats {whole / base:.1f}x, --since 7d {week / base:.1f}x, "
            f"graph counts {graph / base:.1f}x"
        )
        found = stats()()
        v2 = found[0]
        print(
            f"  check: v{v2.version} {v2.enrollments} enrollments, wait-open median "
            f"{v2.waits['wait-open'].median:.0f} s p90 {v2.waits['wait-open'].p90:.0f} s, "
            f"goal {v2.goal_met}, {len(v2.failures)} failure causes"
        )
        engine.dispose()


if __name__ == "__main__":
    main()
