"""No duplicate effect when the worker dies at any point of an outward action: before the effect,
after the effect but before the activity completes, and after it completed (the step is stored,
Temporal never heard back)."""

from __future__ import annotations

from typing import Any

import custom_handlers
import pytest
from sqlalchemy import select
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from tests_support import Crash, crashing_worker, enroll_one, result_of, steps_of

from crmflow import services
from crmflow.activities.config import SmtpSettings
from crmflow.store import Record
from crmflow.worker import EnrollmentWorkflow, sandboxed_workflow_runner

POINTS = ["before_effect", "after_effect", "after_complete"]
OUTWARD_IDS = {"hook", "mail", "deal", "score"}


def definition(url: str) -> dict[str, Any]:
    return {
        "key": "crashy",
        "name": "Crashy",
        "enrollment": {"trigger": "manual"},
        "actions": [
            {"id": "hook", "type": "webhook", "url": url, "body": {"who": "{{ record.email }}"}},
            {"id": "mail", "type": "send_email", "subject": "Hi", "body": "Hello"},
            {
                "id": "deal",
                "type": "create_record",
                "object_type": "deal",
                "properties": {"name": "Deal"},
            },
            {"id": "score", "type": "custom", "handler": "score", "params": {"points": 5}},
        ],
    }


@pytest.mark.parametrize("point", POINTS)
async def test_no_duplicate_effect_whatever_the_crash_point(
    app, env, publish, receiver, mailbox, point
):
    custom_handlers.calls.clear()
    await publish(definition(receiver.url("/ok")))
    services.set_record(app, "contact", "ann", {"email": "ann@example.com", "score": 2})
    crash = Crash(point)
    worker = crashing_worker(
        env,
        app,
        crash,
        smtp=SmtpSettings(host=mailbox.host, port=mailbox.port),
        actions="score=custom_handlers:score",
    )
    async with worker:
        workflow_id = await enroll_one(app, "crashy", "ann")
        result = await result_of(env, workflow_id)
    assert result.status == "completed"
    # The history, retries included, replays on the interpreter.
    history = await env.client.get_workflow_handle(workflow_id).fetch_history()
    await Replayer(
        workflows=[EnrollmentWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=sandboxed_workflow_runner(),
    ).replay_workflow(history)
    assert crash.crashed == OUTWARD_IDS  # every outward action died once at this point
    steps = steps_of(app, "crashy")
    assert not any(outcome.startswith("failed") for outcome in steps.values()), steps

    # Webhook: the receiver sees a single idempotency key; a second request (same key) only
    # when the worker died between the response and storing the step.
    keys = {r.headers["idempotency-key"] for r in receiver.requests}
    assert len(keys) == 1
    assert len(receiver.requests) == (2 if point == "after_effect" else 1)

    # Email: one Message-ID; sent twice only when the worker died after the SMTP server
    # accepted it and before the delivery was recorded.
    assert len({m["Message-ID"] for m in mailbox.messages}) == 1
    assert len(mailbox.messages) == (2 if point == "after_effect" else 1)
    [stored] = services.outbox(app)
    assert stored["to"] == "ann@example.com"

    # create_record: one record, whatever happened.
    with app.sessions() as session:
        deals = session.scalars(select(Record.id).where(Record.object_type == "deal")).all()
    assert len(deals) == 1

    # custom: the property updates land once (2 + 5), every call saw the same key.
    props = services.show_record(app, "contact", "ann")["properties"]
    assert props["score"] == 7
    assert len({c["key"] for c in custom_handlers.calls}) == 1
    expected_calls = 2 if point == "after_effect" else 1
    assert len(custom_handlers.calls) == expected_calls
