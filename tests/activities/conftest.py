"""Real local servers for the outward actions: an HTTP receiver and an SMTP server on 127.0.0.1,
and a worker whose outward activities can be made to die at a chosen point."""

from __future__ import annotations

import contextlib
import inspect
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from temporalio import activity
from temporalio.worker import Worker

from crmflow.activities.custom import CustomActivities, HandlerRegistry
from crmflow.activities.enrollments import EnrollmentActivities
from crmflow.activities.messages import MessageActivities
from crmflow.activities.models import ActionInput
from crmflow.activities.records import RecordActivities
from crmflow.activities.webhooks import WebhookActivities
from crmflow.activities.workflows import WorkflowActivities
from crmflow.worker import EnrollmentWorkflow, workflow_runner


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP endpoint on 127.0.0.1. Paths: /ok (200), /flaky (500 twice, then 200),
    /throttle (429 Retry-After: 1 once, then 200), /missing (404), /hang (hangs 3 s once,
    then 200), /down (always 503)."""

    port: int = 0
    requests: list[Received] = field(default_factory=list)
    hits: dict[str, int] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def to(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path.split("?")[0]
            with lock:
                receiver.requests.append(
                    Received(
                        self.command, path, {k.lower(): v for k, v in self.headers.items()}, body
                    )
                )
                hit = receiver.hits[path] = receiver.hits.get(path, 0) + 1
            status, headers = 200, {}
            if path == "/flaky" and hit <= 2:
                status = 500
            elif path == "/throttle" and hit == 1:
                status, headers = 429, {"Retry-After": "1"}
            elif path == "/missing":
                status = 404
            elif path == "/down":
                status = 503
            elif path == "/hang" and hit == 1:
                time.sleep(3)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "2")
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(b"{}")

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(found))
    server.daemon_threads = True
    found.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield found
    server.shutdown()
    server.server_close()


@dataclass
class Mailbox:
    host: str = "127.0.0.1"
    port: int = 0
    messages: list[Any] = field(default_factory=list)  # email.message.Message
    refuse: set[str] = field(default_factory=set)  # recipients answered 550

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address in self.refuse:
            return "550 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        from email import message_from_bytes

        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    box = Mailbox(port=port)
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box
    controller.stop()


class Crash:
    """Makes each outward activity die once at one point: "before_effect", "after_effect"
    (between the effect and its step row) or "after_complete" (the step is stored, Temporal
    never hears back)."""

    def __init__(self, point: str | None) -> None:
        self.point = point
        self.crashed: set[str] = set()

    def checkpoint(self, point: str, input: ActionInput) -> None:
        if point == self.point and input.action.id not in self.crashed:
            self.crashed.add(input.action.id)
            raise RuntimeError(f"worker died at {point} of {input.action.id}")

    def after_complete(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(real):

            async def run_async(input: ActionInput) -> Any:
                result = await real(input)
                self.checkpoint("after_complete", input)
                return result

            return activity.defn(name=name)(run_async)

        def run(input: ActionInput) -> Any:
            result = real(input)
            self.checkpoint("after_complete", input)
            return result

        return activity.defn(name=name)(run)


def crashing_worker(
    env: Any, app: Any, crash: Crash, *, smtp: Any = None, actions: str | None = None
) -> Worker:
    sessions = app.sessions
    records = RecordActivities(sessions)
    messages = MessageActivities(sessions, smtp=smtp, checkpoint=crash.checkpoint)
    enrollments = EnrollmentActivities(sessions)
    webhooks = WebhookActivities(sessions, allow_private=True, checkpoint=crash.checkpoint)
    workflows = WorkflowActivities(sessions, env.client, app.settings.task_queue)
    custom = CustomActivities(sessions, HandlerRegistry(actions), checkpoint=crash.checkpoint)
    # create_record's effect and step commit together: only a crash before or after it exists.
    records_checked = _store_checkpoints(records.create_record, crash)
    return Worker(
        env.client,
        task_queue=app.settings.task_queue,
        workflows=[EnrollmentWorkflow],
        activities=[
            records.update_record,
            crash.after_complete("create_record", records_checked),
            crash.after_complete("send_email", messages.send_email),
            messages.create_task,
            crash.after_complete("call_webhook", webhooks.call_webhook),
            workflows.enroll_in_workflow,
            workflows.unenroll_from_workflow,
            crash.after_complete("run_custom_action", custom.run_custom_action),
            enrollments.evaluate_branch,
            enrollments.record_step,
            enrollments.finish_enrollment,
        ],
        activity_executor=ThreadPoolExecutor(4),
        workflow_runner=workflow_runner(),
    )


def _store_checkpoints(real: Callable[[ActionInput], Any], crash: Crash) -> Callable[..., Any]:
    def run(input: ActionInput) -> Any:
        crash.checkpoint("before_effect", input)
        result = real(input)
        crash.checkpoint("after_effect", input)
        return result

    return run
