"""The long-running commands: `crmflow worker` and `crmflow up` (dev server + store + worker).

Both stop on SIGINT or SIGTERM through an event rather than KeyboardInterrupt, so shutdown runs
in order (worker drained first, then the server stopped) and never ends in a traceback.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import make_url
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from crmflow.activities.config import (
    ConfigError,
    OutwardSettings,
    dispatch_partitions,
    time_sweep_interval,
)
from crmflow.activities.time_sweep import SWEEP_INTERVAL
from crmflow.store import DEFAULT_DB_URL
from crmflow.triggers import Dispatcher, DispatchPool
from crmflow.worker import build_worker, ensure_time_sweep_schedule

from ._app import App, Settings
from ._base import OperationFailed, UserError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# The dev server's state sits next to the default SQLite store: everything local in one place.
STATE_DIR = Path(make_url(DEFAULT_DB_URL).database or ".crmflow/crmflow.db").parent


def shown_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


@contextmanager
def stop_on_signals() -> Iterator[asyncio.Event]:
    """An event set by SIGINT or SIGTERM while the block runs (inside a running loop)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


async def unless_stopped(stop: asyncio.Event, work: Awaitable[None]) -> bool:
    """Await `work` unless `stop` is set first (then `work` is cancelled). True if it finished."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        stopped.cancel()
        task.result()
        return True
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return False


def freeze_heap() -> None:
    """Move every object alive now (modules, the app, SQLAlchemy's, pydantic's and Temporal's
    tables: some hundred thousand) out of the garbage collector's reach, once a long-running
    command has built everything it serves with. A full collection otherwise walks them all
    while everything else waits: measured at 170-620 ms on the loaded 2-core machine, a stall
    of the whole API (its p99); in a worker dispatching an import, 0.08 ms per enrollment
    started (a full collection every thousand starts, 80 ms each; 0.005 ms once frozen)."""
    gc.collect()
    gc.freeze()


async def require_namespace(client: Client, settings: Settings) -> None:
    # A worker polling a missing namespace fails only once running, in a Rust error message.
    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=settings.namespace)
        )
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        raise OperationFailed(
            f"namespace {settings.namespace!r} does not exist on {settings.temporal_address}"
        ) from None


def outward_settings() -> OutwardSettings:
    """SMTP, webhook and custom action settings of SPEC §5, from the worker's environment."""
    try:
        return OutwardSettings.from_env(os.environ)
    except ConfigError as exc:
        raise UserError(str(exc)) from None


async def serve_worker(app: App, stop: asyncio.Event, *, on_ready: Callable[[], None]) -> None:
    """Run a worker and the change dispatcher until `stop` is set, then shut both down
    gracefully. A fatal worker error (e.g. the server went away for good) is raised."""
    outward = outward_settings()
    try:
        sweep_every = time_sweep_interval(os.environ, SWEEP_INTERVAL)
        partitions = dispatch_partitions(os.environ)
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    client = await app.client()
    await require_namespace(client, app.settings)
    # Time-relative conditions: one Schedule for the deployment, kept as configured by every
    # worker that starts.
    await ensure_time_sweep_schedule(
        client, task_queue=app.settings.task_queue, interval=sweep_every
    )
    starter = await app.starter()
    worker = build_worker(
        client, app.sessions, enroller=starter, task_queue=app.settings.task_queue, outward=outward
    )
    # Every worker process runs a dispatch pool: the feed's partitions are spread over the
    # running workers, each dispatched by one of them at a time (a fenced lease each).
    holder = Dispatcher(app.sessions, client, task_queue=app.settings.task_queue).holder
    pool = DispatchPool(
        app.sessions,
        lambda part: Dispatcher(
            app.sessions,
            client,
            task_queue=app.settings.task_queue,
            starter=starter,
            partition=part,
            holder=holder,
        ),
        partitions,
    )
    freeze_heap()
    dispatching = asyncio.ensure_future(pool.run(stop))
    running = asyncio.ensure_future(worker.run())
    on_ready()
    try:
        if not await unless_stopped(stop, asyncio.shield(running)):
            await worker.shutdown()
        await running
    finally:
        stop.set()
        await dispatching


async def run_worker(app: App, *, echo: Callable[[str], None]) -> None:
    with stop_on_signals() as stop:
        settings = app.settings
        await serve_worker(
            app,
            stop,
            on_ready=lambda: echo(
                f"worker polling task queue {settings.task_queue!r} on "
                f"{settings.temporal_address} (namespace {settings.namespace}); Ctrl-C to stop"
            ),
        )
        echo("worker stopped")
