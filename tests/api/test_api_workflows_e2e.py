"""The control endpoints of SPEC §7 end to end, on SQLite and PostgreSQL: a real uvicorn serving
the API, a real Temporal dev server, a crmflow worker and the change dispatcher. A contact and
an event posted over HTTP enroll the record in a criteria workflow published and activated over
HTTP, and the enrollment runs to its end; manual enrollment and unenrollment; errors.

Waits are bounded polls of the API itself, never sleeps."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from api_servers import Api
from background import Background, eventually, running_dev_server
from temporalio.testing import WorkflowEnvironment

from crmflow.api.routers import v1_routers
from crmflow.enrolling import EnrollmentStarter
from crmflow.services import App, Settings
from crmflow.services.publishing import ServiceApp
from crmflow.triggers import Dispatcher
from crmflow.worker import build_worker

T = TypeVar("T")
StartApi = Callable[..., Api]


@pytest.fixture(scope="module")
def dev() -> Iterator[tuple[Background, WorkflowEnvironment]]:
    with running_dev_server() as (background, env):
        yield background, env


class Stack:
    """A worker and a dispatcher on the test's store, and the API whose services use them."""

    def __init__(
        self, dev: tuple[Background, WorkflowEnvironment], store_url: str, start_api: StartApi
    ) -> None:
        self.background, env = dev
        task_queue = f"api-{uuid.uuid4().hex[:8]}"
        target = env.client.service_client.config.target_host
        self.worker_app = App(Settings(db_url=store_url, task_queue=task_queue))
        self.services = ServiceApp(
            Settings(db_url=store_url, temporal_address=target, task_queue=task_queue)
        )

        async def start() -> tuple[Any, asyncio.Event, Dispatcher]:
            worker = build_worker(
                env.client,
                self.worker_app.sessions,
                enroller=EnrollmentStarter(self.worker_app.sessions, env.client, task_queue),
                task_queue=task_queue,
            )
            dispatcher = Dispatcher(self.worker_app.sessions, env.client, task_queue=task_queue)
            return worker, asyncio.Event(), dispatcher

        self.worker, self.stop, dispatcher = self.background.run(start())
        self.running = self.background.spawn(self.worker.run())
        self.dispatching = self.background.spawn(dispatcher.run(self.stop))
        self.api = start_api(routers=v1_routers(), services=self.services)

    def close(self) -> None:
        self.background.loop.call_soon_threadsafe(self.stop.set)
        self.dispatching.result(30)
        self.background.run(self.worker.shutdown())
        self.running.result(30)
        self.services.close()
        self.worker_app.close()


@pytest.fixture
def stack(
    dev: tuple[Background, WorkflowEnvironment], store_url: str, start_api: StartApi
) -> Iterator[Stack]:
    found = Stack(dev, store_url, start_api)
    try:
        yield found
    finally:
        found.close()


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


def signed_up(key: str) -> dict[str, Any]:
    return {
        "key": key,
        "name": "Signed up",
        "enrollment": {
            "trigger": "criteria",
            "criteria": {
                "all": [
                    {"property": "email", "op": "known"},
                    {"event": "signed_up"},
                ]
            },
        },
        "actions": [
            {"id": "mark", "type": "set_property", "property": "stage", "value": "welcomed"},
            {"id": "call", "type": "create_task", "title": "Call {{ record.email }}"},
        ],
    }


MANUAL = """\
key: {key}
name: Waits for a click
enrollment:
  trigger: manual
actions:
  - id: wait-click
    type: wait_for_event
    event: clicked
  - id: thanks
    type: set_property
    property: clicked
    value: true
"""


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    return body


def test_an_event_posted_over_http_enrolls_the_record_and_the_enrollment_runs(
    stack: Stack,
) -> None:
    admin, ingest = stack.api.as_scope("admin"), stack.api.as_scope("ingest")
    key = unique("signed-up")
    published = admin.post(
        "/v1/workflows",
        content=json.dumps(signed_up(key)),
        headers={"content-type": "application/json"},
    )
    assert published.status_code == 201, published.text
    assert published.json() == {"key": key, "version": 1}
    assert published.headers["location"] == f"/v1/workflows/{key}"
    activated = admin.post(f"/v1/workflows/{key}/activate", json={})
    assert activated.status_code == 200, activated.text
    assert activated.json()["active"] is True

    put = ingest.put("/v1/records/contact/ann", json={"properties": {"email": "ann@example.com"}})
    assert put.status_code == 200
    tracked = ingest.post(
        "/v1/events", json={"record_id": "ann", "name": "signed_up", "event_id": "signup-ann"}
    )
    assert tracked.status_code == 202, tracked.text

    def completed() -> list[dict[str, Any]] | None:
        found = admin.get(f"/v1/workflows/{key}/enrollments", params={"record_id": "ann"})
        assert found.status_code == 200, found.text
        listed: list[dict[str, Any]] = found.json()
        return listed if listed and listed[0]["status"] == "completed" else None

    (enrollment,) = eventually(completed, what="ann's enrollment to complete")
    assert enrollment["workflow"] == key
    assert enrollment["temporal_workflow_id"] == f"{key}:contact:ann:1"
    assert [s["action_id"] for s in enrollment["steps"]] == ["mark", "call"]
    assert {"version", "object_type", "reason", "enrolled_at", "ended_at"} <= set(enrollment)

    record = admin.get("/v1/records/contact/ann").json()
    assert record["properties"]["stage"] == "welcomed"
    assert record["enrollments"] == [
        {
            "workflow": key,
            "version": 1,
            "status": "completed",
            "temporal_workflow_id": f"{key}:contact:ann:1",
        }
    ]
    history = admin.get(f"/v1/workflows/{key}/records/ann/history")
    assert history.status_code == 200, history.text
    assert isinstance(history.json()["explanation"], str)
    assert [e["status"] for e in history.json()["enrollments"]] == ["completed"]

    # A retried POST of the same event does not count twice: no new change, no re-enrollment.
    again = ingest.post(
        "/v1/events", json={"record_id": "ann", "name": "signed_up", "event_id": "signup-ann"}
    )
    assert again.json()["duplicate"] is True

    listed = admin.get("/v1/workflows").json()
    assert [(w["key"], w["active"]) for w in listed] == [(key, True)]
    shown = admin.get(f"/v1/workflows/{key}").json()
    assert shown["version"] == 1
    assert shown["source_name"] == "body"
    review = admin.get(f"/v1/workflows/{key}/review")
    assert review.status_code == 200, review.text
    deactivated = admin.post(f"/v1/workflows/{key}/deactivate", json={"unenroll_all": False})
    assert deactivated.status_code == 200, deactivated.text
    assert admin.get("/v1/workflows").json()[0]["active"] is False


def test_manual_enrollment_and_unenrollment(stack: Stack) -> None:
    admin, ingest = stack.api.as_scope("admin"), stack.api.as_scope("ingest")
    key = unique("clicks")
    published = admin.post(
        "/v1/workflows",
        content=MANUAL.format(key=key),
        headers={"content-type": "application/yaml"},
    )
    assert published.status_code == 201, published.text
    not_active = admin.post(f"/v1/workflows/{key}/enrollments", json={"record_ids": ["ann"]})
    assert "not active" in problem(not_active, 409)["detail"]
    assert admin.post(f"/v1/workflows/{key}/activate").status_code == 200
    ingest.put("/v1/records/contact/ann", json={"properties": {}})
    enrolled = admin.post(f"/v1/workflows/{key}/enrollments", json={"record_ids": ["ann"]})
    assert enrolled.status_code == 200, enrolled.text
    assert enrolled.json() == [
        {
            "record_id": "ann",
            "enrolled": True,
            "reason": None,
            "temporal_workflow_id": f"{key}:contact:ann:1",
        }
    ]
    twice = admin.post(f"/v1/workflows/{key}/enrollments", json={"record_ids": ["ann"]}).json()
    assert twice[0]["enrolled"] is False
    assert twice[0]["reason"]
    bad = admin.post(f"/v1/workflows/{key}/enrollments", json={"record_ids": ["ok", "a\tb"]})
    assert [e["loc"] for e in problem(bad, 422)["errors"]] == [["body", "record_ids", 1]]

    def waiting() -> bool:
        (found,) = admin.get(f"/v1/workflows/{key}/enrollments").json()
        return bool(found["steps"])

    eventually(waiting, what="the enrollment to start waiting")
    unenrolled = admin.delete(f"/v1/workflows/{key}/enrollments/ann")
    assert unenrolled.status_code == 200, unenrolled.text
    assert unenrolled.json()["unenrolled"] is True
    (found,) = admin.get(f"/v1/workflows/{key}/enrollments", params={"status": "unenrolled"}).json()
    assert found["record_id"] == "ann"
    problem(admin.delete(f"/v1/workflows/{key}/enrollments/ann"), 404)


def test_control_errors(stack: Stack) -> None:
    admin, read = stack.api.as_scope("admin"), stack.api.as_scope("read")
    problem(read.get("/v1/workflows/nope"), 404)
    problem(admin.post("/v1/workflows/nope/activate"), 404)
    problem(admin.get("/v1/workflows/nope/enrollments"), 404)
    assert problem(admin.get("/v1/workflows/Bad_Key"), 422)["errors"][0]["loc"] == ["path", "key"]
    invalid = admin.post(
        "/v1/workflows",
        content="key: broken\nname: Broken\nenrollment:\n  trigger: manual\n"
        "actions:\n  - id: a\n    type: delay\n    next: nowhere\n",
        headers={"content-type": "application/yaml"},
    )
    body = problem(invalid, 422)
    assert any(str(p).startswith("body:") for p in body["problems"])
    assert all(e["msg"].startswith("body:") for e in body["errors"])
    assert read.get("/v1/workflows").json() == []
    problem(
        admin.post("/v1/workflows", content="key: x", headers={"content-type": "text/plain"}),
        415,
    )
