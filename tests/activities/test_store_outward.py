"""create_record, enroll_in_workflow, unenroll_from_workflow and custom actions in real
enrollments."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import custom_handlers
import pytest
from click.testing import CliRunner
from sqlalchemy import select
from tests_support import enroll_one, result_of, steps_of

from crmflow import services
from crmflow.activities import custom as custom_module
from crmflow.activities.config import ConfigError, OutwardSettings, parse_actions_setting
from crmflow.activities.custom import HandlerRegistry
from crmflow.cli import cli
from crmflow.store import AssociationRepository, RecordChange

HANDLERS = (
    "score=custom_handlers:score,nothing=custom_handlers:nothing,"
    "flaky=custom_handlers:flaky,bad_return=custom_handlers:bad_return"
)


def manual(key: str, actions: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "key": key,
        "name": key.title(),
        "enrollment": {"trigger": "manual"},
        "actions": actions,
        **extra,
    }


async def test_create_record_makes_one_associated_record_seen_by_the_change_feed(
    app, env, new_worker, publish
):
    await publish(
        manual(
            "deals",
            [
                {
                    "id": "open-deal",
                    "type": "create_record",
                    "object_type": "deal",
                    "properties": {"name": "Deal for {{ record.firstname }}", "amount": 100},
                }
            ],
        )
    )
    services.set_record(app, "contact", "ann", {"firstname": "Ann"})
    async with new_worker():
        await result_of(env, await enroll_one(app, "deals", "ann"))
    outcome = steps_of(app, "deals")["open-deal"]
    new_id = outcome.removeprefix("created deal '").removesuffix("'")
    deal = services.show_record(app, "deal", new_id)
    assert deal["properties"] == {"name": "Deal for Ann", "amount": 100}
    assert deal["associations"] == [{"object_type": "contact", "id": "ann"}]
    shown = services.show_record(app, "contact", "ann")["associations"]
    assert shown == [{"object_type": "deal", "id": new_id}]
    with app.sessions() as session:
        assert AssociationRepository(session).of_record("contact", "ann") == [("deal", new_id)]
        assert AssociationRepository(session).of_record("deal", new_id) == [("contact", "ann")]
        kinds = session.scalars(
            select(RecordChange.kind).where(RecordChange.object_type == "deal")
        ).all()
    assert kinds == ["created"]


async def test_enroll_in_workflow_and_unenroll_from_workflow(app, env, new_worker, publish):
    await publish(manual("nurture", [{"id": "wait", "type": "delay", "duration": "30d"}]))
    await publish(manual("other", [{"id": "wait", "type": "delay", "duration": "30d"}]))
    await publish(
        manual(
            "router",
            [
                {"id": "to-nurture", "type": "enroll_in_workflow", "workflow": "nurture"},
                {"id": "again", "type": "enroll_in_workflow", "workflow": "nurture"},
                {"id": "inactive", "type": "enroll_in_workflow", "workflow": "dormant"},
                {"id": "hold", "type": "delay", "duration": "1h"},
                {"id": "out", "type": "unenroll_from_workflow", "workflows": ["nurture", "other"]},
            ],
        )
    )
    await publish(
        manual("dormant", [{"id": "wait", "type": "delay", "duration": "1d"}]), activate=False
    )
    services.set_record(app, "contact", "ann", {"firstname": "Ann"})
    async with new_worker():
        await result_of(env, await enroll_one(app, "router", "ann"))
        [nurtured] = services.list_enrollments(app, "nurture")
        nurture_result = await result_of(env, nurtured["temporal_workflow_id"])
    steps = steps_of(app, "router")
    assert steps["to-nurture"] == "enrolled in 'nurture'"
    assert steps["again"].startswith("not enrolled in 'nurture': ")
    assert "already enrolled" in steps["again"]
    assert steps["inactive"] == "failed: workflow 'dormant' is not active"
    assert steps["out"] == "unenrolled from nurture"
    assert nurture_result.status == "unenrolled"
    [nurtured] = services.list_enrollments(app, "nurture")
    assert nurtured["status"] == "unenrolled"
    assert nurtured["reason"] == "unenrolled by 'router'"


async def test_enrolling_is_idempotent_across_retries(app, env, new_worker, publish):
    """A retry of the same step (same origin) finds the enrollment it made, also after it
    ended, instead of enrolling the record a second time."""
    await publish(
        manual("quick", [{"id": "mark", "type": "set_property", "property": "q", "value": 1}])
    )
    services.set_record(app, "contact", "ann", {"firstname": "Ann"})
    from crmflow.enrolling import EnrollmentStarter
    from crmflow.services import load_version

    definition, version = load_version(app, "quick")
    starter = EnrollmentStarter(app.sessions, env.client, app.settings.task_queue)
    async with new_worker():
        first = await starter.start(definition, version, "ann", source="workflow", origin="7:go")
        await result_of(env, first.temporal_workflow_id)
        again = await starter.start(definition, version, "ann", source="workflow", origin="7:go")
    assert first.ok and again.ok
    assert again.temporal_workflow_id == first.temporal_workflow_id
    assert len(services.list_enrollments(app, "quick")) == 1


async def test_custom_actions_update_the_record_and_failures_are_recorded(
    app, env, new_worker, publish
):
    custom_handlers.calls.clear()
    custom_handlers.failures_left["flaky"] = 2
    await publish(
        manual(
            "custom",
            [
                {"id": "score", "type": "custom", "handler": "score", "params": {"points": 5}},
                {"id": "nothing", "type": "custom", "handler": "nothing"},
                {"id": "flaky", "type": "custom", "handler": "flaky"},
                {"id": "unknown", "type": "custom", "handler": "nope"},
                {"id": "bad", "type": "custom", "handler": "bad_return"},
                {"id": "after", "type": "set_property", "property": "done", "value": True},
            ],
        )
    )
    services.set_record(app, "contact", "ann", {"firstname": "Ann", "score": 2})
    async with new_worker(outward=OutwardSettings(actions=HANDLERS)):
        result = await result_of(env, await enroll_one(app, "custom", "ann"))
    assert result.status == "completed"
    steps = steps_of(app, "custom")
    assert steps["score"] == "custom score: updated score, scored_by"
    assert steps["nothing"] == "custom nothing: done"
    assert steps["flaky"] == "custom flaky: updated synced"
    assert steps["unknown"].startswith("failed: no custom action handler 'nope' is registered")
    assert steps["bad"].startswith("failed: handler 'bad_return' returned list")
    props = services.show_record(app, "contact", "ann")["properties"]
    assert (props["score"], props["scored_by"], props["synced"], props["done"]) == (
        7,
        "custom",
        True,
        True,
    )
    [call, _] = custom_handlers.calls
    assert call["params"] == {"points": 5} and call["workflow"] == "custom"
    assert call["key"].startswith("crmflow-")


def test_handlers_come_from_entry_points_and_the_setting(monkeypatch):
    seen: list[str] = []

    def fake_entry_points(*, group: str) -> list[Any]:
        seen.append(group)
        return [
            SimpleNamespace(name="ep_score", load=lambda: custom_handlers.score),
            SimpleNamespace(name="score", load=lambda: custom_handlers.nothing),
        ]

    monkeypatch.setattr(custom_module.importlib.metadata, "entry_points", fake_entry_points)
    registry = HandlerRegistry("score=custom_handlers:score")
    assert seen == ["crmflow.actions"]
    assert registry.names() == ["ep_score", "score"]
    assert registry.get("ep_score") is custom_handlers.score
    # The setting wins over an entry point of the same name.
    assert registry.get("score") is custom_handlers.score
    with pytest.raises(KeyError):
        registry.get("missing")


def test_the_actions_setting_is_checked():
    assert parse_actions_setting(" a = m:f , b=m.n:g.h ") == {"a": "m:f", "b": "m.n:g.h"}
    with pytest.raises(ConfigError, match="CRMFLOW_ACTIONS"):
        parse_actions_setting("a=module_without_function")
    with pytest.raises(ConfigError, match="CRMFLOW_ACTIONS"):
        parse_actions_setting("justaname")


async def test_a_dry_run_worker_sends_nothing_and_says_what_it_would_do(
    app, env, new_worker, publish, receiver, mailbox
):
    """What `simulate` uses: no request, no SMTP, no handler call."""
    from crmflow.activities.config import SmtpSettings

    custom_handlers.calls.clear()
    await publish(
        manual(
            "dry",
            [
                {"id": "hook", "type": "webhook", "url": receiver.url("/ok")},
                {"id": "mail", "type": "send_email", "subject": "Hi", "body": "Hello"},
                {"id": "score", "type": "custom", "handler": "score"},
            ],
        )
    )
    services.set_record(app, "contact", "ann", {"email": "ann@example.com"})
    outward = OutwardSettings(
        smtp=SmtpSettings(host=mailbox.host, port=mailbox.port),
        allow_private_webhooks=True,
        actions=HANDLERS,
        dry_run=True,
    )
    async with new_worker(outward=outward):
        await result_of(env, await enroll_one(app, "dry", "ann"))
    steps = steps_of(app, "dry")
    assert steps["hook"] == f"simulated: POST {receiver.url('/ok')} (not sent)"
    assert steps["mail"] == "email to ann@example.com: Hi"
    assert steps["score"] == "simulated: custom score (not run)"
    assert receiver.requests == [] and mailbox.messages == [] and custom_handlers.calls == []
    assert "score" not in services.show_record(app, "contact", "ann")["properties"]


async def test_a_running_handler_does_not_hold_the_store(app, env, new_worker, publish, tmp_path):
    """A slow handler (say, a 35 s call to another system) runs while `crmflow records set`
    writes the same record: on SQLite the handler no longer holds the write lock, on
    PostgreSQL no row lock. The handler's updates still land once, after it returns."""
    custom_handlers.slow_started.clear()
    custom_handlers.slow_release.clear()
    custom_handlers.slow_calls.clear()
    await publish(manual("slow", [{"id": "sync", "type": "custom", "handler": "slow"}]))
    services.set_record(app, "contact", "ann", {"firstname": "Ann"})
    async with new_worker(outward=OutwardSettings(actions="slow=custom_handlers:slow")):
        workflow_id = await enroll_one(app, "slow", "ann")
        assert await asyncio.to_thread(custom_handlers.slow_started.wait, 60)
        try:
            written = await asyncio.to_thread(
                CliRunner().invoke,
                cli,
                ["--db", app.settings.db_url, "records", "set", "ann", "phone=555"],
                env={"CRMFLOW_DEBUG": None},
            )
        finally:
            custom_handlers.slow_release.set()
        result = await result_of(env, workflow_id)
    assert written.exit_code == 0, written.output
    assert result.status == "completed"
    assert steps_of(app, "slow")["sync"] == "custom slow: updated synced"
    assert custom_handlers.slow_calls == [{"firstname": "Ann"}]  # called once
    props = services.show_record(app, "contact", "ann")["properties"]
    assert props == {"firstname": "Ann", "phone": "555", "synced": "slow"}
