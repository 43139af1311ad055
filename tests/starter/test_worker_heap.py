"""A long-running worker moves its startup heap out of the garbage collector's reach once it has
built everything it serves with, so full collections stop walking it while the worker dispatches
(each one a stall of every enrollment start in flight)."""

from __future__ import annotations

import asyncio
import gc
import uuid
from pathlib import Path

from background import running_dev_server

from crmflow.services import App, Settings
from crmflow.services.up import serve_worker


def test_a_worker_has_frozen_its_startup_heap_when_it_says_it_is_ready(tmp_path: Path) -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    app = App(
        Settings(db_url=f"sqlite:///{tmp_path / 'crmflow.db'}", task_queue=f"heap-{uuid.uuid4()}")
    )
    try:
        # Its own dev server: the worker configures the deployment's time sweep Schedule.
        with running_dev_server() as (background, env):
            app.use_client(env.client)

            async def serve() -> int:
                stop = asyncio.Event()
                frozen: list[int] = []

                def ready() -> None:
                    frozen.append(gc.get_freeze_count())
                    stop.set()

                await serve_worker(app, stop, on_ready=ready)
                return frozen[0]

            frozen = background.run(serve())
    finally:
        app.close()
        gc.unfreeze()
    # The modules, the app, the worker and the pool: some hundred thousand objects.
    assert frozen > 50_000, frozen
