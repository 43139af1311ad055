"""Records tests/worker/histories/main_legacy_enrollment.json with the main-branch code (commit
00d5183, before execution windows and the new delay kinds): `git archive 00d5183 src | tar -x -C
DIR`, then `PYTHONPATH=DIR/src python record_main_history.py OUT.json`. Not collected by pytest.
generation_1_enrollment.json is the same scenario recorded with commit 95acf01 (generation 1:
every action an activity task, before store actions ran as local activities)."""

import asyncio
import json
import sys
import tempfile
from pathlib import Path

from ruamel.yaml import YAML
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

import crmflow
from crmflow import services
from crmflow.enrolling import EnrollmentStarter
from crmflow.services import App, Settings
from crmflow.worker import build_worker
from crmflow.worker import search_attributes as sa

DEFINITION = {
    "key": "legacy",
    "name": "Legacy",
    "enrollment": {"trigger": "manual"},
    "actions": [
        {"id": "qualify", "type": "set_property", "property": "stage", "value": "lead"},
        {
            "id": "ab",
            "type": "split",
            "paths": [{"percent": 50, "next": "hello"}, {"percent": 50, "next": "hello"}],
        },
        {"id": "hello", "type": "send_email", "subject": "Hi {{ record.firstname }}", "body": "."},
        {"id": "wait", "type": "delay", "duration": "2d"},
        {
            "id": "route",
            "type": "value_branch",
            "property": "stage",
            "cases": {"lead": "later"},
            "otherwise": "end",
        },
        {"id": "later", "type": "delay", "until_date": "2027-06-01T09:00:00"},
        {"id": "call", "type": "create_task", "title": "Call", "due_in": "1d"},
    ],
    "settings": {"timezone": "Europe/Paris"},
}


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
        await services.activate(app, "legacy")
        services.set_record(app, "contact", "ann", {"firstname": "Ann", "email": "ann@example.com"})
        async with build_worker(
            env.client,
            app.sessions,
            enroller=EnrollmentStarter(app.sessions, env.client, "rec"),
            task_queue="rec",
        ):
            [o] = await services.enroll(app, "legacy", ["ann"])
            handle = env.client.get_workflow_handle(o.temporal_workflow_id)
            async with env.time_skipping_unlocked():
                try:
                    await handle.result()
                except Exception as exc:
                    print("CAUSE", repr(exc.__cause__))
                    raise
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
