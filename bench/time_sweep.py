"""Time sweep: the database cost of selecting the records whose time-relative conditions cross
one sweep window, and the write cost of the date index that makes it a range scan.

    .venv/bin/python bench/time_sweep.py [-n 100000] [--import-size 10000] [--seed 7] [--db URL]

N contacts (default 100,000) with `last_activity` (a datetime in the last 400 days),
`renewal_date` (a date alone, within a year before to two years after), `created_at`, a
`trial_end` for one in five, and events (`email_opened` 0-3 times in the last 200 days,
`demo_booked` for one in twenty), written with `RecordRepository.upsert_many` (which keeps the
date index) and the events inserted in bulk. Store: a temporary SQLite file unless --db gives
one, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/crmflow_bench (created if missing; use
an empty one). PostgreSQL is analyzed after the load, as autovacuum does a minute or so later.

Ten workflows with time-relative criteria, goals and `unenroll_when` (re-engagement, win-back,
renewal reminders, trial ended, "has not opened an email in 90 days", a demo goal within 14
days, ...). A sweep selects, for each of them, the records whose terms (`time_terms` of the
criteria, the goal and `unenroll_when`) change in the window (`CrossingRepository.crossing_ids`,
keyset pages of 1,000, each workflow in its own read-only session), as the phase-B sweep will.
Printed: the time of the whole sweep (ten workflows) for 60-second windows placed so that

  (a) ~0.1% of the records cross (a cluster of N/1000 records whose `last_activity` turns 30
      days old, or whose last `email_opened` turns 90 days old, in the window);
  (b) ten times as many cross (a cluster of N/100);
  (c) only the background crosses (records whose values happen to fall in the window);
  (d) the window holds midnight UTC + 1 s: every `renewal_date` (a date alone) of the same day
      crosses at once, the bunching date-only values cause;
  (e) a hundred times as many as (a) cross (a cluster of N/10).

Best of three passes each (target <= 1 s; the cost should follow the crossings, not N). Then
a whole run of the sweep (`TimeSweeper`, what the `crmflow-time-sweep` Schedule runs every
30 s) with the ten workflows published and active, for windows (a), (b), (c) and (d): the
selection for their criteria, each crossing record judged at each instant, the "time passed"
changes appended and the watermarks moved, beside the selection alone for the same terms
(the changes are deleted between passes). Then
the write overhead of the index: --import-size records (12 properties, 3 of them dates)
imported as `crmflow records import` does (`upsert_many`, 1,000 a batch, one transaction),
with the index kept and with its upkeep switched off, alternately, best of five each.
Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, text
from sqlalchemy.orm import Session, sessionmaker

from crmflow.activities.time_sweep import TimeSweeper
from crmflow.conditions import TimeTerm, time_terms
from crmflow.definitions import WorkflowDefinition
from crmflow.store import (
    CrossingRepository,
    Event,
    RecordChange,
    RecordRepository,
    TimeSweep,
    WorkflowRepository,
    create_session_factory,
    create_store_engine,
    ensure_postgres_database,
    upgrade_database,
)
from crmflow.store import _records as records_module

OBJECT_TYPE = "contact"
T = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # the sweep's "now": window (a) is (T, T + 60 s]
WINDOW = timedelta(seconds=60)
CLUSTER_B = T + timedelta(hours=6)  # window (b)
CLUSTER_C = T + timedelta(hours=9)  # window (e)
QUIET = T + timedelta(hours=3)  # window (c)
MIDNIGHT = datetime(2026, 6, 2, tzinfo=UTC)  # window (d)
INSERT_BATCH = 5000
ROUNDS = 5  # of the import, each way: on a shared machine the best of a few is the figure
PAGE_SIZE = 1000

# Ten workflows: their time-relative terms are what a sweep selects on.
WORKFLOWS: list[dict[str, Any]] = [
    {
        "key": "reengage",
        "criteria": {"property": "last_activity", "op": "more_than_ago", "value": "30d"},
        "goal": {"property": "last_activity", "op": "within_last", "value": "1d"},
    },
    {
        "key": "win-back",
        "criteria": {
            "all": [
                {"property": "last_activity", "op": "more_than_ago", "value": "90d"},
                {"property": "lifecycle_stage", "op": "eq", "value": "customer"},
            ]
        },
        "unenroll_when": {"property": "last_activity", "op": "within_last", "value": "7d"},
    },
    {
        "key": "renewal-30",
        "criteria": {
            "all": [
                {"property": "renewal_date", "op": "before", "value": "30d"},
                {"property": "renewal_date", "op": "after", "value": "0s"},
            ]
        },
        "goal": {"property": "renewed", "op": "eq", "value": True},
    },
    {
        "key": "renewal-7",
        "criteria": {"property": "renewal_date", "op": "before", "value": "7d"},
    },
    {
        "key": "renewal-passed",
        "criteria": {"property": "renewal_date", "op": "more_than_ago", "value": "1d"},
    },
    {
        "key": "trial-ended",
        "criteria": {
            "all": [
                {"property": "trial_end", "op": "before", "value": "0s"},
                {"property": "trial_end", "op": "after", "value": "-1d"},
            ]
        },
    },
    {
        "key": "no-opens",
        "criteria": {
            "all": [
                {"not": {"event": "email_opened", "within": "90d"}},
                {"property": "last_activity", "op": "within_last", "value": "365d"},
            ]
        },
    },
    {
        "key": "demo-goal",
        "criteria": {
            "all": [
                {"property": "lifecycle_stage", "op": "eq", "value": "lead"},
                {"property": "created_at", "op": "within_last", "value": "14d"},
            ]
        },
        "goal": {"event": "demo_booked", "within": "14d"},
    },
    {
        "key": "stale-lead",
        "criteria": {
            "all": [
                {"property": "created_at", "op": "more_than_ago", "value": "60d"},
                {"property": "lifecycle_stage", "op": "eq", "value": "lead"},
            ]
        },
    },
    {
        "key": "engaged",
        "criteria": {"event": "email_opened", "within": "7d", "min_count": 2},
    },
]


def definition(spec: dict[str, Any]) -> WorkflowDefinition:
    data: dict[str, Any] = {
        "key": spec["key"],
        "name": spec["key"],
        "enrollment": {"trigger": "criteria", "criteria": spec["criteria"]},
        "actions": [{"id": "wait", "type": "delay", "duration": "1d"}],
    }
    if "goal" in spec:
        data["goal"] = {"criteria": spec["goal"]}
    if "unenroll_when" in spec:
        data["settings"] = {"unenroll_when": spec["unenroll_when"]}
    return WorkflowDefinition.model_validate(data)


def terms_of(workflow: WorkflowDefinition) -> list[TimeTerm]:
    conditions = [workflow.enrollment.criteria]
    if workflow.goal is not None:
        conditions.append(workflow.goal.criteria)
    conditions.append(workflow.settings.unenroll_when)
    return list(dict.fromkeys(term for c in conditions if c is not None for term in time_terms(c)))


# ------------------------------------------------------------------------------- the data


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def contacts(n: int, rng: random.Random) -> Iterator[tuple[str, dict[str, Any], list[Any]]]:
    """(id, properties, events as (name, occurred_at)). The first n/1000 records cross window
    (a), the next n/100 window (b), the next n/10 window (e): half by `last_activity` turning
    30 days old (the instant after 30 days and 1 s lies in the window), half by their only
    `email_opened` turning 90 days old (it ages out 90 days and 1 µs after it happened)."""
    bounds = [(max(n // 1000, 1), T), (max(n // 100, 1), CLUSTER_B), (max(n // 10, 1), CLUSTER_C)]
    day = timedelta(days=1)
    for i in range(n):
        cluster, first = None, 0
        for size, start in bounds:
            if first <= i < first + size:
                cluster = start
            first += size
        created = T - timedelta(seconds=rng.randrange(2 * 365 * 86400))
        properties: dict[str, Any] = {
            "email": f"c{i}@example.com",
            "lifecycle_stage": rng.choice(["subscriber", "lead", "customer", "customer"]),
            "created_at": iso(created),
            "last_activity": iso(T - timedelta(seconds=rng.randrange(400 * 86400))),
            "renewal_date": (T.date() + timedelta(days=rng.randrange(-365, 730))).isoformat(),
        }
        if rng.random() < 0.2:
            properties["trial_end"] = iso(
                T + timedelta(seconds=rng.randrange(-60 * 86400, 60 * 86400))
            )
        events = [
            ("email_opened", T - timedelta(seconds=rng.randrange(200 * 86400)))
            for _ in range(rng.randrange(4))
        ]
        if rng.random() < 0.05:
            events.append(("demo_booked", created + timedelta(seconds=rng.randrange(30 * 86400))))
        if cluster is not None:
            inside = timedelta(seconds=rng.randrange(60))
            if i % 2:
                # more_than_ago 30d turns true at value + 30 d + 1 s, in (cluster, +60 s].
                properties["last_activity"] = iso(cluster + inside - 30 * day)
            else:
                # The last email_opened leaves `within 90d` at occurred_at + 90 d + 1 µs.
                events = [("email_opened", cluster + inside - 90 * day)]
                properties["last_activity"] = iso(cluster - 5 * day)
        yield f"c-{i:06d}", properties, events


def load(sessions: sessionmaker[Session], n: int, seed: int) -> tuple[float, int]:
    """Write the records (the date index kept) and their events; (seconds, events)."""
    rng = random.Random(seed)
    began = time.perf_counter()
    rows = contacts(n, rng)
    total = 0
    while True:
        batch = [row for _, row in zip(range(INSERT_BATCH), rows, strict=False)]
        if not batch:
            return time.perf_counter() - began, total
        events = [
            {
                "object_type": OBJECT_TYPE,
                "record_id": record_id,
                "name": name,
                "occurred_at": occurred_at,
                "properties": {},
            }
            for record_id, _, happened in batch
            for name, occurred_at in happened
        ]
        with sessions.begin() as session:
            RecordRepository(session).upsert_many(
                OBJECT_TYPE, [(record_id, props) for record_id, props, _ in batch], now=T
            )
            if events:
                session.execute(insert(Event), events)
        total += len(events)


# ------------------------------------------------------------------------------ the sweep


def sweep(
    sessions: sessionmaker[Session], workflows: list[list[TimeTerm]], since: datetime
) -> tuple[float, int, int]:
    """One sweep of (since, since + 60 s] over every workflow: (seconds, ids, distinct ids)."""
    began = time.perf_counter()
    found: list[str] = []
    for terms in workflows:
        after: str | None = None
        while True:
            with sessions() as session:
                page = CrossingRepository(session).crossing_ids(
                    terms,
                    object_type=OBJECT_TYPE,
                    since=since,
                    until=since + WINDOW,
                    after=after,
                    limit=PAGE_SIZE,
                )
            found.extend(page)
            if len(page) < PAGE_SIZE:
                break
            after = page[-1]
    return time.perf_counter() - began, len(found), len(set(found))


def publish_all(sessions: sessionmaker[Session], definitions: list[WorkflowDefinition]) -> None:
    """The workflows, published and active (as `crmflow publish` and `activate` leave them)."""
    with sessions.begin() as session:
        workflows = WorkflowRepository(session)
        for workflow in definitions:
            workflows.publish(
                key=workflow.key,
                name=workflow.name,
                object_type=workflow.object_type,
                trigger="criteria",
                definition=workflow.model_dump(mode="json", by_alias=True, exclude_none=True),
                source="",
                source_name="bench",
                now=T,
            )
            workflows.set_active(workflow.key, True, now=T - timedelta(days=1))


def full_sweep(sessions: sessionmaker[Session], since: datetime) -> tuple[float, int, int]:
    """One run of the sweep over (since, since + 60 s]: (seconds, candidates, changes)."""
    with sessions.begin() as session:
        session.execute(delete(RecordChange).where(RecordChange.kind == "time"))
        session.execute(delete(TimeSweep))
        session.execute(
            insert(TimeSweep),
            [{"workflow_key": spec["key"], "swept_to": since} for spec in WORKFLOWS],
        )
    sweeper = TimeSweeper(sessions, clock=lambda _: since + WINDOW)
    began = time.perf_counter()
    result = sweeper.sweep()
    return time.perf_counter() - began, result.candidates, result.changes


# ------------------------------------------------------------------- the index's write cost


class _NoDateIndex:
    """What `RecordRepository` uses when the bench switches the date index's upkeep off."""

    def created(self, *args: Any) -> None:
        pass

    def changed(self, *args: Any) -> None:
        pass

    def apply(self, session: Session) -> None:
        pass


@contextmanager
def index_upkeep(on: bool) -> Iterator[None]:
    original = records_module.DateRows
    if not on:
        records_module.DateRows = _NoDateIndex  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        records_module.DateRows = original  # type: ignore[misc]


def import_rows(size: int, prefix: str, rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    def day(span: int) -> str:
        return (date(2026, 6, 1) + timedelta(days=rng.randrange(-span, span))).isoformat()

    return [
        (
            f"{prefix}-{i:06d}",
            {
                "firstname": rng.choice(["Ann", "Bob", "Chen", "Dia", "Eve"]),
                "lastname": f"Name{i}",
                "email": f"{prefix}{i}@example.com",
                "company": rng.choice(["Acme", "Globex", "Initech", "Umbrella"]),
                "lifecycle_stage": rng.choice(["subscriber", "lead", "customer"]),
                "country": rng.choice(["US", "FR", "DE", "GB"]),
                "seats": rng.randrange(1, 500),
                "phone": f"+1555{i:07d}",
                "owner": rng.choice(["alice", "bob", "carol"]),
                "last_activity": iso(T - timedelta(seconds=rng.randrange(400 * 86400))),
                "renewal_date": day(365),
                "created_at": iso(T - timedelta(seconds=rng.randrange(700 * 86400))),
            },
        )
        for i in range(size)
    ]


def timed_import(sessions: sessionmaker[Session], rows: list[tuple[str, dict[str, Any]]]) -> float:
    began = time.perf_counter()
    with sessions.begin() as session:
        records = RecordRepository(session)
        for start in range(0, len(rows), 1000):
            records.upsert_many("import_contact", rows[start : start + 1000], now=T)
    return time.perf_counter() - began


def write_overhead(sessions: sessionmaker[Session], size: int, seed: int) -> tuple[float, float]:
    """(best seconds with the index kept, best without) over ROUNDS alternating rounds, each
    importing `size` new records."""
    rng = random.Random(seed)
    with_index: list[float] = []
    without: list[float] = []
    for round_ in range(ROUNDS):
        for on in (True, False) if round_ % 2 == 0 else (False, True):
            rows = import_rows(size, f"i{round_}{'on' if on else 'off'}", rng)
            with index_upkeep(on):
                (with_index if on else without).append(timed_import(sessions, rows))
    return min(with_index), min(without)


# ----------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=100_000, help="contacts (default 100000)")
    parser.add_argument(
        "--import-size", type=int, default=10_000, help="records per import (default 10000)"
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed (7)")
    parser.add_argument("--db", help="store URL, an empty store (default: a temporary SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crmflow-time-sweep-") as tmp:
        db_url = args.db or f"sqlite:///{Path(tmp) / 'bench.db'}"
        ensure_postgres_database(db_url)  # a no-op for SQLite
        engine = create_store_engine(db_url)
        try:
            upgrade_database(engine)
            sessions = create_session_factory(engine)
            readers = create_session_factory(engine, read_only=True)
            print(f"time sweep: {args.n:,} {OBJECT_TYPE} records; store {engine.url}")
            seconds, events = load(sessions, args.n, args.seed)
            print(f"  loaded in {seconds:.1f} s ({events:,} events; the date index kept)")
            with sessions.begin() as session:
                session.execute(text("ANALYZE"))
                indexed = session.scalar(text("SELECT count(*) FROM record_dates"))
            print(f"  date index: {indexed:,} rows")
            workflows = [terms_of(definition(spec)) for spec in WORKFLOWS]
            print(
                f"  {len(workflows)} workflows, {sum(map(len, workflows))} time terms, "
                f"{sum(len(t.offsets) for w in workflows for t in w)} index ranges per window"
            )
            for label, since in (
                ("(a) ~0.1% cross", T),
                ("(b) 10x as many", CLUSTER_B),
                ("(c) background only", QUIET),
                ("(d) midnight UTC", MIDNIGHT),
                ("(e) 100x as many", CLUSTER_C),
            ):
                passes = [sweep(readers, workflows, since) for _ in range(3)]
                best = min(p[0] for p in passes)
                _, ids, distinct = passes[0]
                share = 100 * distinct / args.n
                print(
                    f"{label:<22} window ({iso(since)}, +60 s]: {distinct:,} records cross "
                    f"({share:.2f}%; {ids:,} workflow x record pairs): {best * 1000:.1f} ms "
                    f"(best of 3; first {passes[0][0] * 1000:.1f} ms; target <= 1000 ms)",
                    flush=True,
                )
            definitions = [definition(spec) for spec in WORKFLOWS]
            publish_all(sessions, definitions)
            criteria = [
                time_terms(d.enrollment.criteria) for d in definitions if d.enrollment.criteria
            ]
            for label, since in (
                ("(a) ~0.1% cross", T),
                ("(b) 10x as many", CLUSTER_B),
                ("(c) background only", QUIET),
                ("(d) midnight UTC", MIDNIGHT),
            ):
                runs = [full_sweep(sessions, since) for _ in range(3)]
                selections = [sweep(readers, criteria, since) for _ in range(3)]
                best, selected = min(r[0] for r in runs), min(p[0] for p in selections)
                _, candidates, changes = runs[0]
                print(
                    f"sweep run {label:<20} {candidates:,} workflow x record crossings judged, "
                    f"{changes:,} changes appended: {best * 1000:.1f} ms; the selection alone "
                    f"{selected * 1000:.1f} ms: ratio {best / max(selected, 1e-9):.1f} "
                    "(best of 3 each)",
                    flush=True,
                )
            kept, off = write_overhead(sessions, args.import_size, args.seed)
            print(
                f"import of {args.import_size:,} records (3 date properties each): "
                f"{kept:.2f} s with the date index, {off:.2f} s without: "
                f"ratio {kept / off:.2f} (best of {ROUNDS} each)"
            )
        finally:
            engine.dispose()


if __name__ == "__main__":
    main()
    sys.stdout.flush()
