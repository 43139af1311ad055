"""`review`, enrolling the existing records on activation, and why a record is (not) enrolled:
through the service functions and the CLI, on a real store (SQLite and PostgreSQL) and, where
enrollments run, the time-skipping server. No dispatcher runs unless a test drives one, so the
change feed stays as each test leaves it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from crmflow import services
from crmflow.services import App, UserError
from crmflow.services import review as _review
from crmflow.store import WorkflowRepository
from crmflow.triggers import Dispatcher

LEAD = {"property": "stage", "op": "eq", "value": "lead"}
Cli = Any  # conftest.Cli (conftest modules are not importable by name)


def definition(key: str = "nurture", **overrides: Any) -> dict[str, Any]:
    """Leads enroll; customers meet the goal; `dnc` suppresses. A record with slow=true waits
    30 days (it stays enrolled); any other ends at once."""
    found: dict[str, Any] = {
        "key": key,
        "name": "Nurture",
        "enrollment": {"trigger": "criteria", "criteria": LEAD},
        "goal": {"criteria": {"property": "customer", "op": "eq", "value": True}},
        "settings": {"suppression_lists": ["dnc"]},
        "actions": [
            {
                "id": "route",
                "type": "branch",
                "branches": [
                    {
                        "name": "slow",
                        "when": {"property": "slow", "op": "eq", "value": True},
                        "next": "wait",
                    }
                ],
                "otherwise": "end",
            },
            {"id": "wait", "type": "delay", "duration": "30d"},
        ],
    }
    for name, value in overrides.items():
        found[name] = {**found[name], **value} if isinstance(value, dict) else value
    return found


MANUAL = {
    "key": "by-hand",
    "name": "By hand",
    "enrollment": {"trigger": "manual"},
    "actions": [{"id": "wait", "type": "delay", "duration": "1d"}],
}
SCHEDULED = {
    "key": "weekly",
    "name": "Weekly",
    "enrollment": {
        "trigger": "schedule",
        "criteria": LEAD,
        "schedule": {"every": "week", "at": "08:00", "days": ["fri"]},
    },
    "actions": [{"id": "wait", "type": "delay", "duration": "1d"}],
}


def add(app: App, record_id: str, **properties: Any) -> None:
    services.set_record(app, "contact", record_id, properties)


def why(app: App, key: str, record_id: str) -> dict[str, Any]:
    return services.history(app, key, record_id)["explanation"]


def status_of(app: App, key: str, record_id: str) -> str | None:
    found = services.list_enrollments(app, key, record_id=record_id)
    return found[-1]["status"] if found else None


async def wait_for(predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := predicate()):
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)
    return value


async def enroll(app: App, key: str, *record_ids: str) -> None:
    outcomes = await services.enroll(app, key, record_ids)
    assert all(o.ok for o in outcomes), outcomes


# ---------------------------------------------------------------- enroll existing


async def test_enroll_existing_enrolls_exactly_the_records_that_may_enroll(
    app: App, env: WorkflowEnvironment, new_worker: Any, publish: Any, tmp_path: Path
) -> None:
    await publish(definition(), activate=False)
    rows = [
        {
            "id": f"r{i:03}",
            "stage": "lead" if i % 2 == 0 else "other",
            **({"customer": True} if i % 6 == 0 else {}),
            **({"slow": True} if i in (2, 4) else {}),
        }
        for i in range(300)
    ]
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows))
    services.import_records(app, path, "contact")
    dnc = [f"r{i:03}" for i in range(0, 300, 5)]
    services.change_list(app, "dnc", dnc, object_type="contact", add=True)
    enrolled_by_hand = {"r002", "r004", "r008"}  # r002, r004 stay enrolled; r008 ends
    expected = {
        row["id"]
        for row in rows
        if row["stage"] == "lead" and row["id"] not in dnc and "customer" not in row
    } - enrolled_by_hand

    async with new_worker():
        await services.activate(app, "nurture")
        await enroll(app, "nurture", *sorted(enrolled_by_hand))
        await wait_for(lambda: status_of(app, "nurture", "r008") == "completed")
        counts = _review.review(app, "nurture").as_json()
        # 150 leads: 30 in dnc, 40 more customers, 2 enrolled now, 1 enrolled before.
        assert {k: counts[k] for k in ("matching", "suppressed", "goal_met")} == {
            "matching": 150,
            "suppressed": 30,
            "goal_met": 40,
        }
        assert (counts["enrolled_now"], counts["enrolled_before"]) == (2, 1)
        assert counts["would_enroll"] == len(expected) == 77

        await services.deactivate(app, "nurture")  # r002 and r004 pause: still enrolled
        seen: list[tuple[int, int]] = []

        def progress(done: int, total: int) -> None:
            with app.sessions() as session:  # active before the first record is enrolled
                assert WorkflowRepository(session).require("nurture").active
            seen.append((done, total))

        result = await services.activate(app, "nurture", enroll_existing=True, on_progress=progress)
        assert result.resumed == 2 and result.existing is not None
        assert result.existing.as_json() == {
            "matching": 150,
            "enrolled": 77,
            "skipped": 73,
            "skipped_because": {
                "suppressed": 30,
                "goal_met": 40,
                "enrolled_now": 2,
                "enrolled_before": 1,
            },
            "failed": 0,
            "failures": [],
        }
        assert seen[0] == (0, 77) and seen[-1] == (77, 77) and len(seen) == 78
        enrollments = services.list_enrollments(app, "nurture")
        assert {e["record_id"] for e in enrollments if e["source"] == "existing"} == expected
        assert len(enrollments) == len(expected) + 3  # nobody twice

        # Again: every matching record is enrolled now or was before.
        again = await services.activate(app, "nurture", enroll_existing=True)
        assert again.existing is not None
        assert (again.existing.matching, again.existing.enrolled) == (150, 0)
        assert sum(again.existing.skipped.values()) == 150
        assert len(services.list_enrollments(app, "nurture")) == len(expected) + 3


async def test_enroll_existing_in_the_definition_and_refused_for_other_triggers(
    app: App, env: WorkflowEnvironment, new_worker: Any, publish: Any
) -> None:
    add(app, "ann", stage="lead")
    add(app, "bob", stage="other")
    await publish(definition(enrollment={"enroll_existing": True}), activate=False)
    await publish(MANUAL, activate=False)
    with pytest.raises(UserError, match="--enroll-existing is for criteria workflows"):
        await services.activate(app, "by-hand", enroll_existing=True)
    with app.sessions() as session:
        assert not WorkflowRepository(session).require("by-hand").active
    async with new_worker():
        result = await services.activate(app, "nurture")
        assert result.existing is not None and result.existing.enrolled == 1
        assert [e["record_id"] for e in services.list_enrollments(app, "nurture")] == ["ann"]


# ---------------------------------------------------------------- review


async def test_review_counts_lists_and_saves_the_matching_records(app: App, publish: Any) -> None:
    await publish(definition(), activate=False)
    for record_id in ("a", "b", "c"):
        add(app, record_id, stage="lead")
    add(app, "d", stage="lead")
    add(app, "e", stage="LEAD", customer=True)
    add(app, "f", stage="other")
    services.change_list(app, "dnc", ["d", "f"], object_type="contact", add=True)

    found = _review.review(app, "nurture", list_records=True, save_list="preview").as_json()
    assert found == {
        "workflow": "nurture",
        "version": 1,
        "trigger": "criteria",
        "active": False,
        "matching": 5,
        "would_enroll": 3,
        "suppressed": 1,
        "goal_met": 1,
        "enrolled_now": 0,
        "enrolled_before": 0,
        "message": "activating enrolls records that come to match from now on; "
        "with --enroll-existing it also enrolls these 3 record(s) now",
        "records": ["a", "b", "c", "d", "e"],
        "saved_list": {"name": "preview", "added": 5},
    }
    assert services.show_list(app, "preview")["members"] == ["a", "b", "c", "d", "e"]
    again = _review.review(app, "nurture", save_list="preview").as_json()
    assert "records" not in again and again["saved_list"] == {"name": "preview", "added": 0}

    await services.activate(app, "nurture")
    assert "the workflow is active" in _review.review(app, "nurture").message

    await publish(MANUAL, activate=False)
    manual = _review.review(app, "by-hand").as_json()
    assert manual["matching"] is None and manual["would_enroll"] is None
    assert manual["message"].startswith("no automatic enrollment")
    with pytest.raises(UserError, match="manual"):
        _review.review(app, "by-hand", list_records=True)
    await publish(SCHEDULED, activate=False)
    scheduled = _review.review(app, "weekly").as_json()
    assert (scheduled["matching"], scheduled["would_enroll"], scheduled["enrolled_before"]) == (
        5,
        5,
        None,
    )
    assert "each scheduled run enrolls the records that match" in scheduled["message"]
    with pytest.raises(UserError, match="no workflow 'nope'"):
        _review.review(app, "nope")
    services.set_record(app, "company", "acme", {"stage": "lead"})
    services.change_list(app, "accounts", ["acme"], object_type="company", add=True)
    with pytest.raises(UserError, match="holds company records"):
        _review.review(app, "nurture", save_list="accounts")


# ---------------------------------------------------------------- why (not)


async def test_why_not_before_and_without_activation(app: App, publish: Any) -> None:
    await publish(definition(), activate=False)
    await publish(MANUAL, activate=False)
    await publish(SCHEDULED, activate=False)
    add(app, "ann", stage="lead")
    add(app, "bob", stage="other", score=3)
    add(app, "cat", stage="lead", customer=True)
    add(app, "dan", stage="lead")
    services.change_list(app, "dnc", ["dan"], object_type="contact", add=True)

    assert why(app, "nurture", "bob") == {
        "state": "criteria_unmet",
        "message": "the enrollment criteria do not match now (the workflow is inactive)",
        "details": ['stage eq "lead": false (value is "other")'],
    }
    assert why(app, "nurture", "ann")["state"] == "inactive"
    assert "--enroll-existing" in why(app, "nurture", "ann")["message"]
    goal = why(app, "nurture", "cat")
    assert goal["state"] == "goal_met"
    assert goal["details"] == ["customer eq true: true (value is true)"]
    suppressed = why(app, "nurture", "dan")
    assert suppressed["state"] == "suppressed" and "member of dnc" in suppressed["message"]
    assert why(app, "by-hand", "ann")["state"] == "manual"
    assert "crmflow enroll by-hand ann" in why(app, "by-hand", "ann")["message"]
    assert why(app, "weekly", "ann")["state"] == "scheduled"
    assert why(app, "weekly", "bob")["state"] == "criteria_unmet"

    found = services.history(app, "nurture", "bob")
    assert found == {
        "workflow": "nurture",
        "record_id": "bob",
        "object_type": "contact",
        "explanation": found["explanation"],
        "enrollments": [],
    }
    with pytest.raises(UserError, match="no contact with id 'zed'"):
        services.history(app, "nurture", "zed")
    with pytest.raises(UserError, match="no workflow 'nope'"):
        services.history(app, "nope", "ann")


async def test_why_not_once_active(app: App, env: WorkflowEnvironment, publish: Any) -> None:
    add(app, "ann", stage="lead")
    add(app, "bob", stage="lead")
    await publish(definition())
    await publish(definition("again", enrollment={"reenroll": {"properties": ["score"]}}))
    assert why(app, "nurture", "ann")["state"] == "matched_before_activation"
    assert why(app, "again", "ann") == {
        "state": "next_change",
        "message": "it matches, but did not come to match since the workflow was activated: "
        "it enrolls on a change of score",
        "details": [],
    }
    # A change no dispatcher has seen yet.
    add(app, "ann", note="hello")
    assert why(app, "nurture", "ann")["state"] == "pending"
    # Dispatched: the record matched before the change, so it did not come to match.
    dispatcher = Dispatcher(app.sessions, env.client, task_queue=app.settings.task_queue)
    await dispatcher.dispatch_pending()
    assert why(app, "nurture", "ann")["state"] == "matched_before_change"
    assert why(app, "nurture", "bob")["state"] == "matched_before_activation"


async def test_why_with_enrollments(
    app: App, env: WorkflowEnvironment, new_worker: Any, publish: Any
) -> None:
    add(app, "ann", stage="lead", slow=True)
    add(app, "bob", stage="lead")
    await publish(definition())
    reenroll = {"properties": ["score"], "events": ["form_submitted"], "lists": ["vip"]}
    await publish(definition("again", enrollment={"reenroll": reenroll}))
    async with new_worker():
        await enroll(app, "nurture", "ann", "bob")
        await enroll(app, "again", "bob")
        assert why(app, "nurture", "ann") == {
            "state": "enrolled",
            "message": "enrolled now: running, on version 1",
            "details": [],
        }
        await wait_for(lambda: status_of(app, "nurture", "bob") == "completed")
        await wait_for(lambda: status_of(app, "again", "bob") == "completed")
        assert why(app, "nurture", "bob") == {
            "state": "enrolled_before",
            "message": "enrolled before (completed) and re-enrollment is off: a record "
            "enrolls at most once",
            "details": [],
        }
        assert why(app, "again", "bob")["message"] == (
            "enrolled before (completed); it enrolls again on a change of score, a new "
            "form_submitted event or joining list vip, while the criteria match"
        )
        await services.deactivate(app, "nurture")
        paused = why(app, "nurture", "ann")
        assert (
            paused["message"] == "enrolled now: paused while the workflow is inactive, on version 1"
        )
        found = services.history(app, "nurture", "bob")
        assert [e["status"] for e in found["enrollments"]] == ["completed"]
        assert found["enrollments"] == services.list_enrollments(app, "nurture", record_id="bob")
        services.delete_record(app, "contact", "bob")
        gone = services.history(app, "nurture", "bob")
        assert gone["explanation"]["state"] == "deleted"
        assert [e["status"] for e in gone["enrollments"]] == ["completed"]


# ---------------------------------------------------------------- the CLI


@pytest.fixture
def cli(make_cli: Callable[..., Cli], store_url: str) -> Cli:
    """The CLI on the test store; Temporal is where nothing listens unless a test says."""
    return make_cli(store_url, "127.0.0.1:1")


def test_cli_review_and_history(cli: Cli, write_definition: Callable[..., Path]) -> None:
    cli("publish", str(write_definition(definition())))
    cli("records", "set", "ann", "stage=lead")
    cli("records", "set", "bob", "stage=other")

    found = cli.json("review", "nurture", "--list", "--save-list", "preview")
    assert (found["matching"], found["would_enroll"], found["records"]) == (1, 1, ["ann"])
    assert cli.json("lists", "show", "preview")["members"] == ["ann"]
    shown = cli("review", "nurture", "--list").stdout
    assert "1 record(s) match the criteria now" in shown and shown.endswith("ann\n")
    cli("review", "nope", code=2)

    history = cli.json("history", "nurture", "--record", "bob")
    assert set(history) == {"workflow", "record_id", "object_type", "explanation", "enrollments"}
    assert history["explanation"]["state"] == "criteria_unmet"
    assert history["enrollments"] == []
    shown = cli("history", "nurture", "--record", "bob").stdout
    assert "never enrolled in nurture" in shown
    assert 'stage eq "lead": false (value is "other")' in shown
    assert (
        "crmflow: no contact with id 'zed'"
        in cli("history", "nurture", "--record", "zed", code=2).stderr
    )
    cli("history", "nope", "--record", "bob", code=2)


def test_cli_activate_enroll_existing_refusals(
    cli: Cli, write_definition: Callable[..., Path]
) -> None:
    cli("publish", str(write_definition(MANUAL)), str(write_definition(definition())))
    refused = cli("activate", "by-hand", "--enroll-existing", code=2)
    assert "--enroll-existing is for criteria workflows" in refused.stderr
    # Temporal is checked before anything changes.
    unreachable = cli("activate", "nurture", "--enroll-existing", code=1)
    assert "cannot reach Temporal" in unreachable.stderr
    assert cli.json("workflows")[1]["active"] is False


async def test_cli_activate_enroll_existing(
    app: App,
    env: WorkflowEnvironment,
    new_worker: Any,
    make_cli: Callable[..., Cli],
    store_url: str,
    write_definition: Callable[..., Path],
) -> None:
    target = env.client.service_client.config.target_host
    cli = make_cli(store_url, target, app.settings.task_queue)
    services.publish_files(app, [write_definition(definition())])
    for record_id in ("ann", "bob"):
        add(app, record_id, stage="lead")
    add(app, "cat", stage="lead", customer=True)
    async with new_worker():
        # The CLI runs its own event loop: in a thread, beside the worker's.
        found = await asyncio.to_thread(cli.json, "activate", "nurture", "--enroll-existing")
        assert found == {
            "key": "nurture",
            "active": True,
            "resumed": 0,
            "existing": {
                "matching": 3,
                "enrolled": 2,
                "skipped": 1,
                "skipped_because": {"goal_met": 1},
                "failed": 0,
                "failures": [],
            },
        }
        for record_id in ("ann", "bob"):
            await wait_for(lambda r=record_id: status_of(app, "nurture", r) == "completed")
        shown = await asyncio.to_thread(cli, "activate", "nurture", "--enroll-existing")
        assert shown.stdout == (
            "nurture is active\n"
            "existing records: 3 matching, 0 enrolled, 3 skipped (1 goal met, 2 enrolled "
            "before), 0 failed\n"
        )
