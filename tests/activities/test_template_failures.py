"""A template that cannot render is a permanent failure of its action, recorded as the step's
outcome, for every action that renders templates; the enrollment goes on. Retrying would
render the same template on the same record: it is never retried."""

from __future__ import annotations

from typing import Any

from tests_support import enroll_one, result_of, steps_of

from crmflow import services
from crmflow.activities.config import OutwardSettings
from crmflow.definitions import WorkflowDefinition
from crmflow.limits import MAX_RENDERED_CHARS
from crmflow.services import App
from crmflow.store import WorkflowRepository

ALLOW = OutwardSettings(allow_private_webhooks=True)
COMPARES_TEXT_WITH_A_NUMBER = "{% if record.seats > 10 %}big{% endif %}"


def manual(key: str, actions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "key": key,
        "name": key.title(),
        "enrollment": {"trigger": "manual"},
        "actions": [
            *actions,
            {"id": "after", "type": "set_property", "property": "after", "value": "done"},
        ],
    }


async def run(
    app: App, env: Any, new_worker: Any, key: str, properties: dict[str, Any]
) -> dict[str, str]:
    services.set_record(app, "contact", "ann", {"email": "ann@example.com", **properties})
    async with new_worker(outward=ALLOW):
        result = await result_of(env, await enroll_one(app, key, "ann"))
    assert result.status == "completed"
    assert services.show_record(app, "contact", "ann")["properties"]["after"] == "done"
    return steps_of(app, key)


async def test_a_template_that_fails_to_render_fails_its_action_for_good(
    app, env, new_worker, publish, receiver
):
    template = COMPARES_TEXT_WITH_A_NUMBER
    await publish(
        manual(
            "renders",
            [
                {"id": "set", "type": "set_property", "property": "size", "value": template},
                {
                    "id": "create",
                    "type": "create_record",
                    "object_type": "deal",
                    "properties": {"size": template},
                },
                {"id": "email", "type": "send_email", "subject": template, "body": "b"},
                {
                    "id": "notify",
                    "type": "notify",
                    "to": "sales@example.com",
                    "subject": "s",
                    "body": template,
                },
                {"id": "task", "type": "create_task", "title": "t", "assignee": template},
                {"id": "url", "type": "webhook", "url": receiver.url("/ok?s=") + template},
                {
                    "id": "header",
                    "type": "webhook",
                    "url": receiver.url("/ok"),
                    "headers": {"X-S": template},
                },
                {
                    "id": "body",
                    "type": "webhook",
                    "url": receiver.url("/ok"),
                    "body": {"s": [template]},
                },
            ],
        )
    )
    steps = await run(app, env, new_worker, "renders", {"seats": "many"})
    failure = "failed: template error: '>' not supported between instances of 'str' and 'int'"
    assert {action: outcome for action, outcome in steps.items() if action != "after"} == {
        action: failure
        for action in ("set", "create", "email", "notify", "task", "url", "header", "body")
    }
    assert services.outbox(app) == [] and services.tasks(app) == [] and receiver.requests == []


async def test_a_stored_template_the_rules_now_refuse_never_renders(app, env, new_worker):
    # A version stored before the template rules (they did not exist) is not validated again
    # when it is read; its templates are checked when they render and refused there.
    definition = WorkflowDefinition.model_validate(
        manual(
            "legacy",
            [
                {
                    "id": "email",
                    "type": "send_email",
                    "subject": "{{ record.firstname * 3 }}",
                    "body": "b",
                },
                {
                    "id": "set",
                    "type": "set_property",
                    "property": "letters",
                    "value": "{% for c in record.firstname %}{{ c }}.{% endfor %}",
                },
            ],
        )
    )
    with app.sessions.begin() as session:
        WorkflowRepository(session).publish(
            key="legacy",
            name="Legacy",
            object_type="contact",
            trigger="manual",
            definition=services.definition_json(definition),
            source="(stored by an earlier crmflow)",
            source_name="legacy.yaml",
            now=services.utcnow(),
        )
    await services.activate(app, "legacy")
    steps = await run(app, env, new_worker, "legacy", {"firstname": "Ann"})
    assert steps["email"] == "failed: template: arithmetic ('*') is not allowed"
    assert (
        steps["set"] == "failed: template: {% for %} is not allowed: only {% if %}, elif and else"
    )
    assert services.outbox(app) == []


async def test_a_rendered_field_is_capped(app, env, new_worker, publish):
    await publish(
        manual(
            "notes",
            [
                {
                    "id": "email",
                    "type": "send_email",
                    "subject": "s",
                    "body": "{{ record.notes }}{{ record.more }}",
                }
            ],
        )
    )
    # Each value within the store's text limit; together over the rendered-field cap.
    half = MAX_RENDERED_CHARS // 2
    values = {"notes": "n" * half, "more": "m" * (MAX_RENDERED_CHARS - half + 5)}
    steps = await run(app, env, new_worker, "notes", values)
    assert steps["email"] == "failed: the rendered text has 100,005 characters; at most 100,000"
    assert services.outbox(app) == []


async def test_a_value_the_store_refuses_fails_its_action_for_good(app, env, new_worker, publish):
    """A record near the store's 1 MiB limit, and a rendered value (within the template cap)
    that would take it past: the store refuses the write, the step fails at once (not a day of
    retries), nothing of the effect is kept, and the enrollment goes on."""
    joined = "{{ record.a }}{{ record.b }}"
    await publish(
        manual(
            "refused",
            [{"id": "set", "type": "set_property", "property": "joined", "value": joined}],
        )
    )
    filler = {f"f{n}": "f" * 65_000 for n in range(14)}  # 910,000 characters
    steps = await run(
        app, env, new_worker, "refused", {**filler, "a": "a" * 40_000, "b": "b" * 40_000}
    )
    assert steps["set"].startswith("failed: ") and "1,048,576" in steps["set"], steps["set"][:200]
    assert "joined" not in services.show_record(app, "contact", "ann")["properties"]
