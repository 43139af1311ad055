"""Records tests/worker/histories/waits_before_continue_as_new.json with the code from before
continue-as-new (commit b97c128): `git archive b97c128 src | tar -x -C DIR`, then
`PYTHONPATH=DIR/src python record_waits_history.py OUT.json`. A wait_for_event that receives
events that do not match before the one that does, then a delay during which the workflow is
paused and resumed: the new code must replay it unchanged. Not collected by pytest.
waits_with_continue_as_new_patch.json is the same scenario recorded with commit 1c053c6, whose
new runs all recorded the continue-as-new patch."""

import asyncio
import json
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from ruamel.yaml import YAML
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

import crmflow
from crmflow import services
from crmflow.activities.models import EventSignal
from crmflow.enrolling import EnrollmentStarter
from crmflow.services import App, Settings
from crmflow.worker import EnrollmentWorkflow, build_worker
from crmflow.worker import search_attributes as sa

DEFINITION = {
    "key": "legacy-waits",
    "name": "Legacy waits",
    "enrollment": {"trigger": "manual"},
    "actions": [
        {
            "id": "opened",
            "type": "wait_for_event",
            "event": "email_opened",
            "where": {"campaign": "welcome"},
            "timeout": "3d",
        },
        {"id": "wait", "type": "delay", "duration": "1d"},
        {"id": "call", "type": "create_task", "title": "Call {{ record.firstname }}"},
    ],
}


async def until_step(app: App, action_id: str) -> None:
    for _ in range(400):
        [found] = services.list_enrollments(app, "legacy-waits")
        if any(s["action_id"] == action_id for s in found["steps"]):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached {action_id}")


async def main(out: str) -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(Path(sys.executable).parent / "temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={
                k.name: IndexedValueType.ValueType(k.indexed_value_type) for k in sa.ALL
            },
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        app = App(Settings(db_url=f"sqlite:///{tmp}/s.db", task_queue="rec"))
        app.use_client(env.client)
        path = Path(tmp) / "legacy.yaml"
        YAML().dump(DEFINITION, path.open("w"))
        services.publish_files(app, [path])
        await services.activate(app, "legacy-waits")
        services.set_record(app, "contact", "ann", {"firstname": "Ann"})
        async with build_worker(
            env.client,
            app.sessions,
            enroller=EnrollmentStarter(app.sessions, env.client, "rec"),
            task_queue="rec",
        ):
            [o] = await services.enroll(app, "legacy-waits", ["ann"])
            handle = env.client.get_workflow_handle(o.temporal_workflow_id)
            await until_step(app, "opened")
            now = datetime.now(UTC)
            for campaign in ("spring", "summer", "autumn", "welcome"):
                event = EventSignal(
                    name="email_opened", properties={"campaign": campaign}, occurred_at=now
                )
                await handle.signal(EnrollmentWorkflow.event_tracked, event)
            await until_step(app, "wait")
            for _ in range(3):
                await handle.signal(EnrollmentWorkflow.pause)
                await handle.signal(EnrollmentWorkflow.resume)
            async with env.time_skipping_unlocked():
                print(await handle.result())
            history = await handle.fetch_history()
        app.close()
    Path(out).write_text(
        json.dumps(
            {
                "workflow_id": o.temporal_workflow_id,
                "recorded_with": crmflow.__file__,
                "history": history.to_json_dict(),
            },
            indent=1,
        )
    )
    await env.shutdown()


asyncio.run(main(sys.argv[1]))
