"""The long-running commands: `crmflow worker` and `crmflow up` (dev server + store + worker).

Both stop on SIGINT or SIGTERM through an event rather than KeyboardInterrupt, so shutdown runs
in order (worker drained first, then the server stopped) and never ends in a traceback.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from sqlalchemy.engine import make_url
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from crmflow.activities.config import ConfigError, OutwardSettings
from crmflow.store._engine import DEFAULT_DB_URL
from crmflow.triggers import Dispatcher
from crmflow.worker import build_worker

from ._api_keys import local_admin_key
from ._app import App, Settings
from ._serving import api_settings, build_api, serve_api, url_of
from .devserver import DevServer
from .services import OperationFailed, UserError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# The dev server's state sits next to the default SQLite store: everything local in one place.
STATE_DIR = Path(make_url(DEFAULT_DB_URL).database or ".crmflow/crmflow.db").parent
# The local admin key of the HTTP API, made on the first `crmflow up` (mode 0600).
ADMIN_KEY_FILE = "admin-key"


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
    client = await app.client()
    await require_namespace(client, app.settings)
    worker = build_worker(client, app.sessions, task_queue=app.settings.task_queue, outward=outward)
    # Every worker process runs a dispatcher; a lease in the store lets one dispatch at a time.
    dispatcher = Dispatcher(app.sessions, client, task_queue=app.settings.task_queue)
    dispatching = asyncio.ensure_future(dispatcher.run(stop))
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


async def start_api(app: App, stop: asyncio.Event, *, host: str, port: int) -> asyncio.Future[None]:
    """The HTTP API served until `stop` is set, once it listens (a port in use is raised)."""
    ready = asyncio.Event()
    serving = asyncio.ensure_future(
        serve_api(
            build_api(app, api_settings(os.environ)),
            stop,
            host=host,
            port=port,
            on_ready=ready.set,
        )
    )
    waiting = asyncio.ensure_future(ready.wait())
    await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if serving.done():
        serving.result()
    return serving


async def run_up(
    settings: Settings,
    *,
    open_app: Callable[[Settings], App],
    temporal_port: int,
    ui_port: int,
    echo: Callable[[str], None],
    api_port: int = 8080,
    api_host: str = "127.0.0.1",
) -> None:
    """Dev server, store, worker and HTTP API in one process, until SIGINT/SIGTERM.

    `open_app` is the CLI's (it turns an unusable database URL into a user error)."""
    outward_settings()  # bad settings stop `up` before it starts a server
    with stop_on_signals() as stop:
        server = DevServer(
            state_dir=STATE_DIR, port=temporal_port, ui_port=ui_port, namespace=settings.namespace
        )
        echo(f"starting the Temporal dev server (state in {STATE_DIR}/) ...")
        server.start()
        try:
            if not await unless_stopped(stop, server.wait_ready()):
                return
            # The dev server is local and plaintext: a production cluster's TLS or API key
            # settings in the environment are not for it.
            local = replace(
                settings,
                temporal_address=server.target,
                tls_cert=None,
                tls_key=None,
                tls_ca=None,
                tls_server_name=None,
                api_key=None,
            )
            app = open_app(local)
            try:
                key_path, made = local_admin_key(app, STATE_DIR / ADMIN_KEY_FILE)
                api_url = url_of(api_host, api_port)
                api = await start_api(app, stop, host=api_host, port=api_port)
                key_note = "made now" if made else "made on the first start"
                try:
                    await serve_worker(
                        app,
                        stop,
                        on_ready=lambda: echo(
                            "crmflow is up\n"
                            f"  Temporal   {server.target} (namespace {settings.namespace})\n"
                            f"  Web UI     {server.ui_url}\n"
                            f"  store      {shown_url(app.settings.db_url)}\n"
                            f"  worker     task queue {settings.task_queue!r}\n"
                            f"  API        {api_url} (docs {api_url}/docs)\n"
                            f"  admin key  in {key_path} ({key_note}): "
                            f'curl -H "Authorization: Bearer $(cat {key_path})" '
                            f"{api_url}/v1/workflows\n"
                            "Ctrl-C to stop"
                        ),
                    )
                finally:
                    stop.set()
                    await api
            finally:
                app.close()
            echo("stopping ...")
        finally:
            # Stopping takes a few seconds (the server drains): keep the loop, and signals, alive.
            await asyncio.to_thread(server.stop)
        echo("stopped")
