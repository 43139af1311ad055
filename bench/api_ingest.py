"""HTTP API ingestion: single-record upserts under concurrency, and batch upserts against the
record repository called directly, on SQLite and PostgreSQL.

    .venv/bin/python bench/api_ingest.py [--requests 3000] [--concurrency 16] [--batches 20]
                                         [--pg URL]

The API runs as `crmflow serve` does (uvicorn, one process) in a child process on a random
port, over a fresh store: a temporary SQLite file, then with --pg (e.g.
postgresql+psycopg://postgres@127.0.0.1:5432/crmflow_bench, created if missing, emptied first)
PostgreSQL. The per-key rate limit is off (it would answer 429 past 200 requests/s: it limits
clients, it is not what is measured). The client runs in this process: for (a) a minimal
HTTP/1.1 client on keep-alive connections (httpx cost as much CPU per request as the server),
for (b) httpx. (a) runs twice: with group commit (the default) and with one transaction per
request (`ApiSettings(group_commit=False)`), each on its own server over the same store.

  (a) --requests `PUT /v1/records/contact/{id}` (a new contact each, 3 properties) from
      --concurrency tasks at once, after 200 unmeasured ones: requests/s and p50/p99 latency
      (targets >= 300 req/s, p99 <= 100 ms on SQLite).
  (b) --batches `POST /v1/records/contact/batch` of 1,000 new contacts each, one at a time,
      alternating with the same batch written by `RecordRepository.upsert_many` in one
      transaction in this process (as `records import` does): records/s of both and their
      ratio (targets >= 5,000 records/s, ratio >= 0.8).

Figures only: nothing is asserted. The machine is shared: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import text

from crmflow.api import ApiSettings
from crmflow.api.serving import build_api
from crmflow.services import Settings
from crmflow.services.api_keys import create_api_key
from crmflow.services.publishing import ServiceApp
from crmflow.services.up import freeze_heap
from crmflow.store import RecordRepository
from crmflow.store._engine import ensure_postgres_database

BATCH = 1000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(db_url: str, port: int, group_commit: bool) -> None:
    """The child process: the API over `db_url` on 127.0.0.1:port until SIGTERM."""
    app = ServiceApp(Settings(db_url=db_url, temporal_address="127.0.0.1:1"))
    api = build_api(app, ApiSettings(rate_limit_per_second=0, group_commit=group_commit))
    freeze_heap()  # as `crmflow serve` does
    uvicorn.run(api, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def empty_postgres(url: str) -> None:
    ensure_postgres_database(url)
    app = ServiceApp(Settings(db_url=url))
    with app.engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    app.close()


class Server:
    def __init__(self, db_url: str, *, group_commit: bool = True) -> None:
        self.db_url = db_url
        self.app = ServiceApp(Settings(db_url=db_url))  # migrates the store
        self.port = free_port()
        self.key = create_api_key(self.app, f"bench-{self.port}", "admin").key
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", db_url, "--port", str(self.port)]
            + ([] if group_commit else ["--no-group-commit"])
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the API did not start")
            time.sleep(0.1)

    def close(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)
        self.app.close()


def contact(i: int, prefix: str) -> dict[str, Any]:
    return {"email": f"{prefix}{i}@example.com", "n": i, "stage": "lead"}


class Connection:
    """A minimal HTTP/1.1 keep-alive client for the single PUTs: httpx itself took about as
    much CPU per request as the server here (4 ms), and the machine has two cores, so the
    load generator would have measured itself as much as the API."""

    def __init__(self, host: str, port: int, key: str) -> None:
        self.host, self.port, self.key = host, port, key
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def put(self, path: str, body: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(
            (
                f"PUT {path} HTTP/1.1\r\nHost: {self.host}\r\n"
                f"Authorization: Bearer {self.key}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def singles(
    server: Server, requests: int, concurrency: int, prefix: str = "s"
) -> dict[str, float]:
    latencies: list[float] = []
    failures = 0
    connections = [Connection("127.0.0.1", server.port, server.key) for _ in range(concurrency)]

    async def run(connection: Connection, prefix: str, ids: range, measured: bool) -> None:
        nonlocal failures
        for i in ids:
            body = json.dumps({"properties": contact(i, prefix)}).encode()
            started = time.perf_counter()
            status = await connection.put(f"/v1/records/contact/{prefix}{i}", body)
            if status != 200:
                failures += 1
            if measured:
                latencies.append(time.perf_counter() - started)

    async def wave(prefix: str, total: int, measured: bool) -> float:
        share = -(-total // concurrency)
        started = time.perf_counter()
        await asyncio.gather(
            *(
                run(c, prefix, range(w * share, min(total, (w + 1) * share)), measured)
                for w, c in enumerate(connections)
            )
        )
        return time.perf_counter() - started

    try:
        await wave(f"warm-{prefix}", 200, measured=False)
        elapsed = await wave(prefix, requests, measured=True)
    finally:
        for connection in connections:
            connection.close()
    latencies.sort()
    return {
        "rps": requests / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "failures": failures,
    }


def batches(server: Server, count: int) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {server.key}"}
    api_seconds = direct_seconds = 0.0
    with httpx.Client(base_url=server.url, headers=headers, timeout=120) as client:
        warm = [{"id": f"bw{i}", "properties": contact(i, "bw")} for i in range(BATCH)]
        assert client.post("/v1/records/contact/batch", json={"records": warm}).is_success
        for b in range(count):
            body = {
                "records": [
                    {"id": f"b{b}-{i}", "properties": contact(i, f"b{b}-")} for i in range(BATCH)
                ]
            }
            started = time.perf_counter()
            response = client.post("/v1/records/contact/batch", json=body)
            api_seconds += time.perf_counter() - started
            if response.status_code != 200:
                raise SystemExit(f"batch refused: {response.text[:300]}")
            rows = [(f"d{b}-{i}", contact(i, f"d{b}-")) for i in range(BATCH)]
            started = time.perf_counter()
            with server.app.sessions.begin() as session:
                RecordRepository(session).upsert_many("contact", rows, now=datetime.now(UTC))
            direct_seconds += time.perf_counter() - started
    api_rate = count * BATCH / api_seconds
    direct_rate = count * BATCH / direct_seconds
    return {"api": api_rate, "direct": direct_rate, "ratio": api_rate / direct_rate}


def measure(name: str, db_url: str, args: argparse.Namespace) -> None:
    server = Server(db_url)
    try:
        single = asyncio.run(singles(server, args.requests, args.concurrency))
        batch = batches(server, args.batches)
    finally:
        server.close()
    # The same singles with one transaction per request, on the same store, for comparison.
    alone_server = Server(db_url, group_commit=False)
    try:
        alone = asyncio.run(singles(alone_server, args.requests, args.concurrency, prefix="t"))
    finally:
        alone_server.close()
    for label, found in (("group commit", single), ("a transaction each", alone)):
        failed = f", {found['failures']:.0f} failed" if found["failures"] else ""
        print(
            f"{name}: (a) {args.requests} single PUTs at concurrency {args.concurrency}, "
            f"{label}: {found['rps']:.0f} req/s, p50 {found['p50']:.1f} ms, "
            f"p99 {found['p99']:.1f} ms{failed}"
        )
    print(
        f"{name}: (b) {args.batches} batches of {BATCH}: API {batch['api']:,.0f} records/s, "
        f"repository directly {batch['direct']:,.0f} records/s, ratio {batch['ratio']:.2f}"
    )
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--pg", metavar="URL", help="also measure on this PostgreSQL database")
    parser.add_argument("--serve", metavar="DB_URL", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--no-group-commit", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, not args.no_group_commit)
        return
    with tempfile.TemporaryDirectory() as directory:
        measure("SQLite", f"sqlite:///{Path(directory) / 'bench.db'}", args)
    if args.pg:
        empty_postgres(args.pg)
        measure("PostgreSQL", args.pg, args)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
