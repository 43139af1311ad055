"""`crmflow up`: a Temporal dev server, the store, a worker and the HTTP API (with the
dashboard) in one process, until SIGINT/SIGTERM. Here, above the API, because it serves it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from crmflow.api.serving import api_settings, build_api, serve_api, url_of
from crmflow.services import App, Settings
from crmflow.services.api_keys import local_admin_key
from crmflow.services.devserver import DevServer
from crmflow.services.up import (
    STATE_DIR,
    outward_settings,
    serve_worker,
    shown_url,
    stop_on_signals,
    unless_stopped,
)

# The local admin key of the HTTP API, made on the first `crmflow up` (mode 0600).
ADMIN_KEY_FILE = "admin-key"


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
            local = settings.model_copy(
                update=dict(
                    temporal_address=server.target,
                    temporal_ui_url=server.ui_url,
                    tls_cert=None,
                    tls_key=None,
                    tls_ca=None,
                    tls_server_name=None,
                    api_key=None,
                )
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
