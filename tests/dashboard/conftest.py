"""Fixtures of the dashboard tests: a real store, the API app (with the dashboard mounted) on a
real uvicorn on a random port, a real Temporal dev server with a crmflow worker for the
enrollments the pages show, and the system Chromium driven by Playwright."""

from __future__ import annotations

import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn
from background import Background, eventually, running_dev_server
from playwright.sync_api import sync_playwright
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from crmflow.api import create_app
from crmflow.enrolling import EnrollmentStarter
from crmflow.services import App, Settings
from crmflow.store import ApiKeyRepository
from crmflow.worker import build_worker

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"


@dataclass
class DevServer:
    background: Background
    env: WorkflowEnvironment


@pytest.fixture(scope="session")
def dev_server() -> Iterator[DevServer]:
    with running_dev_server() as (background, env):
        yield DevServer(background, env)


def serve(app: Any) -> tuple[str, Callable[[], None]]:
    """`app` on uvicorn on a random local port, in a thread: its base URL and a stop."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()

    return f"http://127.0.0.1:{port}", stop


@dataclass
class Site:
    """A store, the API with its dashboard served over it, and (when asked) a worker."""

    app: App
    url: str
    background: Background | None = None

    def key(self, scope: str) -> str:
        with self.app.sessions.begin() as session:
            _, key = ApiKeyRepository(session).create(
                f"{scope}-{uuid.uuid4().hex[:8]}", scope, now=datetime.now(UTC)
            )
        return key

    def revoke(self, key: str) -> None:
        with self.app.sessions.begin() as session:
            repo = ApiKeyRepository(session)
            row = repo.find(key)
            assert row is not None
            repo.revoke(row.name, now=datetime.now(UTC))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self.background is not None, "this site has no Temporal"
        return self.background.run(coro)


async def _no_temporal() -> Client:
    raise RuntimeError("no Temporal in this test")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """The dashboard over a fresh SQLite store, without Temporal."""
    app = App(Settings(db_url=f"sqlite:///{tmp_path / 'crmflow.db'}"))
    url, stop = serve(create_app(engine=app.engine, temporal=_no_temporal))
    try:
        yield Site(app, url)
    finally:
        stop()
        app.close()


@pytest.fixture
def live_site(dev_server: DevServer, tmp_path: Path) -> Iterator[Site]:
    """The dashboard over a fresh SQLite store, with a worker on the dev server running its
    enrollments."""
    task_queue = f"dash-{uuid.uuid4().hex[:8]}"
    app = App(Settings(db_url=f"sqlite:///{tmp_path / 'crmflow.db'}", task_queue=task_queue))
    background = dev_server.background
    app.use_client(dev_server.env.client)

    async def make_worker() -> Any:
        client = dev_server.env.client
        return build_worker(
            client,
            app.sessions,
            enroller=EnrollmentStarter(app.sessions, client, task_queue),
            task_queue=task_queue,
        )

    worker = background.run(make_worker())
    running = background.spawn(worker.run())

    async def temporal() -> Client:
        return dev_server.env.client

    url, stop = serve(create_app(engine=app.engine, temporal=temporal))
    try:
        yield Site(app, url, background)
    finally:
        stop()
        background.run(worker.shutdown())
        running.result(30)
        app.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless system Chromium (installed by `.ci/run` from Debian's `chromium`; Playwright
    never downloads a browser here). Per test: Playwright's sync API runs an event loop in
    the main thread while it is open, which later tests' `asyncio.run` could not share."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (as .ci/run does)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Tab:
    """A page of the browser, recording every console error and uncaught page error."""

    page: Any
    errors: list[str]

    def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
def tab(browser: Any) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url} {r.failure}"))
    try:
        yield Tab(page, errors)
    finally:
        context.close()


@pytest.fixture(name="eventually")
def eventually_fixture() -> Callable[..., Any]:
    return eventually
