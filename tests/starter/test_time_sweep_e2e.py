"""The time sweep on a real dev server: the deployment's Schedule (created idempotently, as
every worker does when it starts) starts a `TimeSweep` run on a worker, whose activity hands a
record that aged past 30 days to the dispatcher, which enrolls it, once."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import ScheduleOverlapPolicy
from temporalio.service import RPCError

from crmflow import services
from crmflow.enrolling import EnrollmentStarter
from crmflow.services import App, Settings
from crmflow.triggers import Dispatcher
from crmflow.worker import build_worker
from crmflow.worker._time_sweep import SCHEDULE_ID, ensure_time_sweep_schedule

DevEnv = Any  # conftest.DevEnv


@pytest.fixture
def stack(temporal_dev_env: DevEnv, store_url: str) -> Iterator[tuple[App, Dispatcher]]:
    dev, client = temporal_dev_env, temporal_dev_env.env.client
    task_queue = f"sweep-{uuid.uuid4().hex[:8]}"
    app = App(Settings(db_url=store_url, task_queue=task_queue))
    app.use_client(client)

    async def make_worker() -> Any:
        return build_worker(
            client,
            app.sessions,
            enroller=EnrollmentStarter(app.sessions, client, task_queue),
            task_queue=task_queue,
        )

    worker = dev.background.run(make_worker())
    running = dev.background.spawn(worker.run())
    try:
        yield app, Dispatcher(app.sessions, client, task_queue=task_queue)
    finally:
        dev.background.run(client.get_schedule_handle(SCHEDULE_ID).delete())
        dev.background.run(worker.shutdown())
        running.result(30)
        app.close()


def test_the_schedule_runs_the_sweep_and_the_record_enrolls_once(
    temporal_dev_env: DevEnv,
    stack: tuple[App, Dispatcher],
    write_definition: Callable[[dict[str, Any]], Path],
    eventually: Any,
) -> None:
    app, dispatcher = stack
    dev, client = temporal_dev_env, temporal_dev_env.env.client
    queue = app.settings.task_queue
    # The dev server is the session's: a Schedule left by an earlier test (its run perhaps
    # stuck on a task queue no worker polls now) would skip this test's runs.
    old = client.get_schedule_handle(SCHEDULE_ID)
    with contextlib.suppress(RPCError):
        for action in dev.background.run(old.describe()).info.running_actions:
            with contextlib.suppress(RPCError):
                stuck = client.get_workflow_handle(action.workflow_id)
                dev.background.run(stuck.terminate("a test starts over"))
        dev.background.run(old.delete())
    for _ in range(2):  # idempotent: the second worker to start finds it and updates it
        dev.background.run(
            ensure_time_sweep_schedule(client, task_queue=queue, interval=timedelta(hours=1))
        )
    handle = client.get_schedule_handle(SCHEDULE_ID)
    described = dev.background.run(handle.describe())
    assert described.schedule.spec.intervals[0].every == timedelta(hours=1)
    assert described.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
    assert described.schedule.action.task_queue == queue  # type: ignore[attr-defined]

    key = f"reengage-{uuid.uuid4().hex[:6]}"
    definition = {
        "key": key,
        "name": "Re-engage",
        "enrollment": {
            "trigger": "criteria",
            "criteria": {"property": "last_activity", "op": "more_than_ago", "value": "30d"},
        },
        "actions": [{"id": "hello", "type": "send_email", "subject": "Hi", "body": "."}],
    }
    services.publish_files(app, [write_definition(definition)])
    dev.background.run(services.activate(app, key))
    crossing = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    last = (crossing - timedelta(days=30)).isoformat()
    services.set_record(app, "contact", "ann", {"email": "ann@example.com", "last_activity": last})
    dev.background.run(dispatcher.dispatch_pending())
    assert services.list_enrollments(app, key) == []
    while datetime.now(UTC) <= crossing + timedelta(seconds=1):
        time.sleep(0.2)  # until the term has turned (the sweep reads the database's clock)

    def runs() -> int:
        return len(dev.background.run(handle.describe()).info.recent_actions)

    def enrolled() -> list[dict[str, Any]]:
        dev.background.run(dispatcher.dispatch_pending())
        return services.list_enrollments(app, key)

    for triggered in (1, 2):  # a second run finds nothing new
        dev.background.run(handle.trigger())
        eventually(lambda n=triggered: runs() >= n, what=f"sweep run {triggered}")
        [enrollment] = eventually(enrolled, what="the enrollment")
    last_run = dev.background.run(handle.describe()).info.recent_actions[-1]
    result = dev.background.run(client.get_workflow_handle(last_run.action.workflow_id).result())
    assert result["changes"] == 0
    assert enrollment["record_id"] == "ann" and len(services.list_enrollments(app, key)) == 1
