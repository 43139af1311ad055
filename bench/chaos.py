"""System chaos: N automatic enrollments of a multi-action workflow through several `crmflow
worker` processes on PostgreSQL and a file-backed Temporal dev server, while workers are
SIGKILLed (and restarted) and the Temporal server is SIGKILLed (and restarted).

    .venv/bin/python bench/chaos.py [-n 10000] [--workers 2] [--worker-kills 5]
                                    [--server-restarts 2] [--worker-pauses 0] [--pg URL]
                                    [--timeout 3600]

Everything is real and separate: the dev server is `temporal server start-dev` (state in a
SQLite file, so a restart keeps it; crmflow's search attributes registered), each worker is a
`crmflow worker` subprocess (worker + change dispatcher, as in production), the store is a
fresh PostgreSQL database (--pg, default postgresql+psycopg://postgres@127.0.0.1:5432/
crmflow_chaos: created if missing, its schema dropped and made anew), and a webhook receiver
runs in this process on 127.0.0.1.

The workflow `chaos` (criteria trigger: `chaos_run` equals this run's id) does, per enrollment:
send_email (the outbox), a webhook POST to the receiver, a 3 s delay, create_task, and
increment_property `visits` by 1. N matching contacts are fed in chunks with `crmflow records
import` (a subprocess per chunk), so the dispatcher enrolls them as the feed goes. The chaos
events (--worker-kills SIGKILLs of a worker, round robin, restarted 2 s later, and
--server-restarts SIGKILLs of the dev server, restarted after --down seconds) are spread over
the run: event i of E fires when (enrolled + completed) / 2N reaches i / (E + 1). A worker that
exits by itself (e.g. while the server is down) is restarted and counted. --worker-pauses adds
stalls: a worker SIGSTOPped for --pause seconds (default 75, past the 60 s start-to-close
timeout of store actions, so Temporal starts another attempt of what it was running
elsewhere), then SIGCONTed, and its stalled attempts carry on.

The run ends when every record is enrolled and every enrollment completed, or at --timeout
(counted from the first import, once the server, the workflow and the workers are up).
Then it prints, from the store and the receiver:
  - enrolled (records with an enrollment, and enrollments), completed, and lost: records never
    enrolled, enrollments not completed (by status);
  - duplicate effects, per record (a second enrollment would be one too): emails (outbox rows)
    other than 1, tasks other than 1, `visits` other than 1 (0 or missing = a lost increment,
    > 1 = a duplicate), records enrolled more than once;
  - webhooks: raw deliveries, distinct Idempotency-Keys, keys delivered more than once (retries
    the receiver dedups by key: at-least-once delivery, not a duplicate effect), and the true
    duplicates the receiver cannot dedup: an enrollment seen under two distinct keys, or a key
    seen with two distinct bodies; completed enrollments without any delivery (lost);
  - steps recorded as failed, by action and outcome.
Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client

from crmflow.services.devserver import temporal_cli_path
from crmflow.store import create_store_engine, ensure_postgres_database, upgrade_database
from crmflow.worker import search_attributes

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/crmflow_chaos"
KEY = "chaos"
CRMFLOW = str(Path(sys.executable).with_name("crmflow"))

DEFINITION = """\
key: chaos
name: Chaos run
object_type: contact
enrollment:
  trigger: criteria
  criteria: {{property: chaos_run, op: eq, value: "{run}"}}
actions:
  - id: welcome
    type: send_email
    subject: "Welcome {{{{ record.rid }}}}"
    body: "Hello {{{{ record.rid }}}}"
  - id: hook
    type: webhook
    url: "http://127.0.0.1:{port}/hook"
    body: {{rid: "{{{{ record.rid }}}}", enrollment: "{{{{ enrollment.id }}}}"}}
  - id: wait
    type: delay
    duration: {delay}
  - id: task
    type: create_task
    title: "Call {{{{ record.rid }}}}"
  - id: bump
    type: increment_property
    property: visits
    by: 1
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ------------------------------------------------------------------ the webhook receiver


@dataclass
class Delivery:
    key: str
    body: str
    at: float  # time.monotonic()


class Receiver:
    """Answers 200 to every POST and keeps each request's Idempotency-Key and body."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        lock = threading.Lock()
        deliveries = self.deliveries

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    deliveries.append(
                        Delivery(
                            self.headers.get("Idempotency-Key", ""), body.decode(), time.monotonic()
                        )
                    )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------ the Temporal dev server


class TemporalServer:
    """`temporal server start-dev` with its state in a SQLite file: SIGKILL and start again."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.ui_port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            temporal_cli_path(),
            "server",
            "start-dev",
            "--headless",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--ui-port",
            str(self.ui_port),
            "--db-filename",
            str(self.directory / "temporal.db"),
            "--sqlite-pragma",
            "journal_mode=wal",
            "--sqlite-pragma",
            "synchronous=normal",
            "--log-level",
            "error",
            # Registered on the fresh file; a restart finds them in it.
            *search_attributes.dev_server_flags(),
        ]
        with (self.directory / "temporal.log").open("ab") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        asyncio.run(self._wait_ready())

    async def _wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise SystemExit(f"the dev server exited: see {self.directory / 'temporal.log'}")
            try:
                client = await Client.connect(self.target)
                await client.workflow_service.describe_namespace(
                    DescribeNamespaceRequest(namespace="default")
                )
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


# ------------------------------------------------------------------ the workers


@dataclass
class Slot:
    process: subprocess.Popen[bytes] | None = None
    restart_at: float = 0.0
    resume_at: float | None = None  # SIGSTOPped until then
    starts: int = 0


@dataclass
class Workers:
    """`crmflow worker` subprocesses. A killed or exited one is started again after a pause."""

    count: int
    env: dict[str, str]
    directory: Path
    restart_delay: float = 2.0
    slots: list[Slot] = field(default_factory=list)
    kills: int = 0
    pauses: int = 0
    exits: Counter[int] = field(default_factory=Counter)  # exit codes of unrequested exits

    def start_all(self) -> None:
        self.slots = [Slot() for _ in range(self.count)]
        for i in range(self.count):
            self._start(i)

    def _start(self, i: int) -> None:
        slot = self.slots[i]
        slot.starts += 1
        with (self.directory / f"worker-{i}.log").open("ab") as out:
            slot.process = subprocess.Popen(
                [CRMFLOW, "worker"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self, i: int) -> int | None:
        """SIGKILL worker i; it is started again `restart_delay` later. Returns its pid."""
        process = self.slots[i].process
        if process is None or process.poll() is not None:
            return None
        process.kill()
        process.wait()
        self.kills += 1
        self.slots[i].process = None
        self.slots[i].restart_at = time.monotonic() + self.restart_delay
        return process.pid

    def pause(self, i: int, seconds: float) -> int | None:
        """SIGSTOP worker i (a stall: GC, swap, a frozen VM); SIGCONT `seconds` later."""
        process = self.slots[i].process
        if process is None or process.poll() is not None:
            return None
        process.send_signal(signal.SIGSTOP)
        self.pauses += 1
        self.slots[i].resume_at = time.monotonic() + seconds
        return process.pid

    def supervise(self) -> None:
        now = time.monotonic()
        for i, slot in enumerate(self.slots):
            if slot.resume_at is not None and now >= slot.resume_at and slot.process is not None:
                slot.process.send_signal(signal.SIGCONT)
                slot.resume_at = None
            if slot.process is not None and slot.process.poll() is not None:
                self.exits[slot.process.returncode] += 1
                slot.process = None
                slot.restart_at = now + self.restart_delay
            if slot.process is None and now >= slot.restart_at:
                self._start(i)

    def stop(self) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.send_signal(signal.SIGCONT)
                slot.process.send_signal(signal.SIGTERM)
        for slot in self.slots:
            if slot.process is not None:
                try:
                    slot.process.wait(30)
                except subprocess.TimeoutExpired:
                    slot.process.kill()
                    slot.process.wait()


# ------------------------------------------------------------------ the record feed


class Feeder(threading.Thread):
    """Imports the N matching contacts in chunks, each with `crmflow records import`."""

    def __init__(self, n: int, chunk: int, run: str, directory: Path, env: dict[str, str]):
        super().__init__(daemon=True)
        self.n, self.chunk, self.run_id = n, chunk, run
        self.directory, self.env = directory, env
        self.imported = 0
        self.failures: list[str] = []

    def run(self) -> None:
        for start in range(0, self.n, self.chunk):
            ids = [f"c{i:06d}" for i in range(start, min(self.n, start + self.chunk))]
            path = self.directory / f"contacts-{start:06d}.jsonl"
            path.write_text(
                "".join(
                    json.dumps(
                        {"id": i, "rid": i, "email": f"{i}@example.com", "chaos_run": self.run_id}
                    )
                    + "\n"
                    for i in ids
                )
            )
            done = subprocess.run(
                [CRMFLOW, "records", "import", str(path), "--object", "contact", "--json"],
                env=self.env,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                self.failures.append(done.stderr.strip().splitlines()[-1:][0])
                continue
            self.imported += len(ids)


# ------------------------------------------------------------------ the store


def fresh_database(url: str) -> Engine:
    ensure_postgres_database(url)
    engine = create_store_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    upgrade_database(engine)
    return engine


def progress(engine: Engine) -> tuple[int, int, Counter[str]]:
    """(records enrolled, enrollments completed, enrollments by status)."""
    with engine.connect() as connection:
        statuses = Counter(
            {
                status: int(n)
                for status, n in connection.execute(
                    text(
                        "SELECT status, count(*) FROM enrollments WHERE workflow_key = :k "
                        "GROUP BY status"
                    ),
                    {"k": KEY},
                )
            }
        )
        enrolled = connection.execute(
            text("SELECT count(DISTINCT record_id) FROM enrollments WHERE workflow_key = :k"),
            {"k": KEY},
        ).scalar_one()
    return int(enrolled), statuses["completed"], statuses


def spread(events: list[str], count: int, kind: str) -> list[str]:
    """`events` with `count` events of `kind` inserted at evenly spaced places."""
    merged = list(events)
    for i in range(count):
        merged.insert(round((i + 1) * len(events) / (count + 1)) + i, kind)
    return merged


def chaos_plan(kills: int, restarts: int, pauses: int = 0) -> list[tuple[float, str]]:
    """Events at the fractions 1/(E+1) … E/(E+1) of progress: server restarts and worker
    pauses spread among the worker kills."""
    events = spread(spread(["kill"] * kills, restarts, "restart"), pauses, "pause")
    return [((j + 1) / (len(events) + 1), kind) for j, kind in enumerate(events)]


# ------------------------------------------------------------------ the report


def report(
    engine: Engine,
    n: int,
    receiver: Receiver,
    feeder: Feeder,
    workers: Workers,
    *,
    timed_out: bool,
    events: list[tuple[float, str]],
) -> None:
    with engine.connect() as connection:
        enrollments = connection.execute(
            text("SELECT id, record_id, status, reason FROM enrollments WHERE workflow_key = :k"),
            {"k": KEY},
        ).all()
        emails = Counter(
            r
            for (r,) in connection.execute(
                text("SELECT record_id FROM outbox WHERE workflow_key = :k"), {"k": KEY}
            )
        )
        tasks = Counter(
            r
            for (r,) in connection.execute(
                text("SELECT record_id FROM tasks WHERE workflow_key = :k"), {"k": KEY}
            )
        )
        visits = {
            rid: props.get("visits")
            for rid, props in connection.execute(
                text("SELECT id, properties FROM records WHERE object_type = 'contact'")
            )
        }
        failed_steps = Counter(
            f"{action}: {outcome}"
            for action, outcome in connection.execute(
                text(
                    "SELECT s.action_id, s.outcome FROM enrollment_steps s "
                    "JOIN enrollments e ON e.id = s.enrollment_id "
                    "WHERE e.workflow_key = :k AND s.outcome LIKE 'failed%'"
                ),
                {"k": KEY},
            )
        )
        pending_changes = connection.execute(
            text("SELECT count(*) FROM record_changes WHERE dispatched_at IS NULL")
        ).scalar_one()
    per_record = Counter(r.record_id for r in enrollments)
    by_status = Counter(r.status for r in enrollments)
    completed_ids = {str(r.id) for r in enrollments if r.status == "completed"}
    not_completed = [r for r in enrollments if r.status != "completed"]
    records = set(visits)
    never_enrolled = records - set(per_record)

    print()
    print(
        f"records fed: {feeder.imported} of {n}"
        + (
            f" ({len(feeder.failures)} imports failed: {feeder.failures[0]})"
            if feeder.failures
            else ""
        )
    )
    print(f"enrolled: {len(per_record)} records, {len(enrollments)} enrollments")
    print(f"completed: {by_status['completed']} enrollments")
    others = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items()) if s != "completed")
    print(
        f"lost: {len(never_enrolled)} records never enrolled, {len(not_completed)} enrollments "
        f"not completed{f' ({others})' if others else ''}; {pending_changes} changes not "
        "dispatched" + (" (timed out: this counts work still in flight)" if timed_out else "")
    )
    for r in not_completed[:5]:
        print(f"  e.g. enrollment {r.id} of {r.record_id}: {r.status} {r.reason or ''}")

    def off_by(counts: dict[str, Any], what: str) -> str:
        values = [counts.get(rid) or 0 for rid in per_record]
        missing = sum(1 for v in values if v == 0)
        extra = sum(1 for v in values if v > 1)
        total = sum(values)
        return (
            f"{what}: {total} for {len(per_record)} enrolled records, {missing} records with "
            f"none, {extra} with more than one"
        )

    print("duplicate effects (per enrolled record; each should have exactly one):")
    twice = sum(1 for v in per_record.values() if v > 1)
    print(f"  enrollments: {twice} records enrolled more than once")
    print(f"  {off_by(emails, 'emails')}")
    print(f"  {off_by(tasks, 'tasks')}")
    numbers = {rid: v for rid, v in visits.items() if isinstance(v, int | float)}
    print(f"  {off_by(numbers, 'increments (visits)')}")

    keys_of_enrollment: defaultdict[str, set[str]] = defaultdict(set)
    bodies_of_key: defaultdict[str, set[str]] = defaultdict(set)
    per_key = Counter(d.key for d in receiver.deliveries)
    for d in receiver.deliveries:
        bodies_of_key[d.key].add(d.body)
        try:
            keys_of_enrollment[str(json.loads(d.body)["enrollment"])].add(d.key)
        except (ValueError, KeyError, TypeError):
            keys_of_enrollment["?"].add(d.key)
    print(
        f"webhooks: {len(receiver.deliveries)} deliveries, {len(per_key)} distinct keys; "
        f"{sum(1 for c in per_key.values() if c > 1)} keys delivered more than once "
        f"({sum(c - 1 for c in per_key.values() if c > 1)} extra deliveries, same key: "
        "at-least-once, deduped by the receiver)"
    )
    print(
        f"  duplicates the receiver cannot dedup: "
        f"{sum(1 for keys in keys_of_enrollment.values() if len(keys) > 1)} enrollments under "
        f"more than one key, {sum(1 for b in bodies_of_key.values() if len(b) > 1)} keys with "
        f"distinct bodies; lost: {len(completed_ids - set(keys_of_enrollment))} completed "
        "enrollments without a delivery"
    )
    for key in [k for k, c in per_key.items() if c > 1][:5]:
        times = sorted(d.at for d in receiver.deliveries if d.key == key)
        before = [(at, what) for at, what in events if at < times[-1]]
        cause = (
            f"; last chaos event before it: {before[-1][1]}, {times[-1] - before[-1][0]:.0f} s "
            "earlier"
            if before
            else ""
        )
        print(f"  e.g. {key}: again {times[-1] - times[0]:.0f} s after the first{cause}")
    print(f"failed steps: {sum(failed_steps.values())}")
    for what, count in failed_steps.most_common(5):
        print(f"  {count} × {what[:160]}")
    exits = ", ".join(f"{c} × code {code}" for code, c in sorted(workers.exits.items()))
    print(
        f"workers: {workers.kills} SIGKILLed, {workers.pauses} SIGSTOPped, "
        f"{sum(workers.exits.values())} exited by themselves"
        f"{f' ({exits})' if exits else ''}; {sum(s.starts for s in workers.slots)} starts"
    )


# ------------------------------------------------------------------ the run


def cli(env: dict[str, str], *args: str) -> None:
    done = subprocess.run([CRMFLOW, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"crmflow {' '.join(args)}: {done.stderr.strip()}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=10000, help="records (enrollments), default 10000")
    parser.add_argument("--workers", type=int, default=2, help="crmflow worker processes (2)")
    parser.add_argument("--worker-kills", type=int, default=5, help="worker SIGKILLs (5)")
    parser.add_argument("--server-restarts", type=int, default=2, help="dev server SIGKILLs (2)")
    parser.add_argument(
        "--worker-pauses", type=int, default=0, help="worker SIGSTOPs for --pause seconds (0)"
    )
    parser.add_argument(
        "--pause",
        type=float,
        default=75,
        help="seconds a paused worker stays stopped (75: past the 60 s start-to-close timeout "
        "of store actions, so Temporal starts a second attempt elsewhere)",
    )
    parser.add_argument("--pg", metavar="URL", default=DEFAULT_PG, help=f"store ({DEFAULT_PG})")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds (3600)")
    parser.add_argument("--chunk", type=int, default=500, help="records per import (500)")
    parser.add_argument("--delay", default="3s", help="the workflow's delay (3s)")
    parser.add_argument("--down", type=float, default=5, help="seconds the server stays down (5)")
    args = parser.parse_args(argv)

    directory = Path(tempfile.mkdtemp(prefix="crmflow-chaos-"))
    run_id = str(int(time.time()))
    engine = fresh_database(args.pg)
    receiver = Receiver()
    server = TemporalServer(directory)
    env = {
        **os.environ,
        "CRMFLOW_DB": args.pg,
        "CRMFLOW_TEMPORAL": server.target,
        "CRMFLOW_ALLOW_PRIVATE_WEBHOOKS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    workers = Workers(args.workers, env, directory)
    feeder = Feeder(args.n, args.chunk, run_id, directory, env)
    plan = chaos_plan(args.worker_kills, args.server_restarts, args.worker_pauses)
    log(
        f"{args.n} records, {args.workers} workers, {args.worker_kills} worker kills, "
        f"{args.server_restarts} server restarts, {args.worker_pauses} worker pauses; "
        f"logs in {directory}"
    )
    try:
        server.start()
        definition = directory / "chaos.yaml"
        definition.write_text(DEFINITION.format(run=run_id, port=receiver.port, delay=args.delay))
        cli(env, "publish", str(definition))
        cli(env, "activate", KEY)
        workers.start_all()
        feeder.start()
        began = time.monotonic()  # the clock runs from the first import on
        deadline = began + args.timeout
        killed = paused = 0
        timed_out = False
        events: list[tuple[float, str]] = []
        shown = 0.0
        while time.monotonic() < deadline:
            workers.supervise()
            enrolled, completed, _ = progress(engine)
            done = (enrolled + completed) / (2 * args.n)
            if plan and done >= plan[0][0]:
                _, event = plan.pop(0)
                if event == "kill":
                    pid = workers.kill(killed % args.workers)
                    events.append((time.monotonic(), f"SIGKILL worker {killed % args.workers}"))
                    log(f"SIGKILL worker {killed % args.workers} (pid {pid}) at {done:.0%}")
                    killed += 1
                elif event == "pause":
                    i = (killed + paused) % args.workers
                    pid = workers.pause(i, args.pause)
                    events.append((time.monotonic(), f"SIGSTOP worker {i}"))
                    log(f"SIGSTOP worker {i} (pid {pid}) for {args.pause:g} s at {done:.0%}")
                    paused += 1
                else:
                    log(f"SIGKILL the Temporal server at {done:.0%}; down {args.down:g} s")
                    server.kill()
                    events.append((time.monotonic(), "SIGKILL Temporal server"))
                    time.sleep(args.down)
                    server.start()
                    log("Temporal server back")
            if (
                not feeder.is_alive()
                and completed >= feeder.imported
                and enrolled >= feeder.imported
            ):
                break
            if time.monotonic() - shown >= 30:
                shown = time.monotonic()
                log(f"fed {feeder.imported}, enrolled {enrolled}, completed {completed}")
            time.sleep(0.5)
        else:
            timed_out = True
            log(f"timeout after {args.timeout:g} s")
        elapsed = time.monotonic() - began
        log(f"finished after {elapsed:.0f} s; {len(plan)} chaos events not reached")
    finally:
        workers.stop()
        server.stop()
        receiver.close()
    report(engine, args.n, receiver, feeder, workers, timed_out=timed_out, events=events)
    print(f"elapsed: {elapsed:.0f} s")
    engine.dispose()
    for path in directory.glob("*.jsonl"):
        path.unlink()


if __name__ == "__main__":
    main()
