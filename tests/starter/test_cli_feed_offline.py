"""`crmflow changes` and workflows whose stored version no longer loads, through the CLI on a
SQLite store without Temporal."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, update

from crmflow.services import App, Settings
from crmflow.store import (
    ChangeRepository,
    LeaseRepository,
    Workflow,
    WorkflowVersion,
    database_now,
)

Write = Callable[[dict[str, Any]], Path]
Cli = Any  # conftest.Cli


def store(cli: Cli) -> App:
    return App(Settings(db_url=cli.db_url))


def park(cli: Cli, change_id: int, error: str) -> None:
    """What the dispatcher does to a change whose last attempt failed."""
    app = store(cli)
    with app.sessions.begin() as session:
        fence = LeaseRepository(session).acquire("dispatcher", "test", timedelta(seconds=15))
        assert fence is not None
        ChangeRepository(session).record_failure(
            change_id, error, now=database_now(session), fence=fence, delays=()
        )
    app.close()


def test_changes_lists_pending_and_parked_changes_and_retry_puts_them_back(offline_cli: Cli):
    assert offline_cli("changes").stdout.startswith("0 pending, 0 parked")
    offline_cli("records", "set", "ann", "firstname=Ann")
    offline_cli("records", "set", "ann", "lifecycle_stage=lead")
    offline_cli("records", "set", "bob", "firstname=Bob")
    offline_cli("lists", "add", "webinar", "bob")
    offline_cli("events", "track", "bob", "form_submitted")
    feed = offline_cli.json("changes")
    assert [(c["record_id"], c["kind"], c["changed"]) for c in feed] == [
        ("ann", "created", {"properties": ["firstname"]}),
        ("ann", "updated", {"properties": ["lifecycle_stage"]}),
        ("bob", "created", {"properties": ["firstname"]}),
        ("bob", "listed", {"list": "webinar"}),
        ("bob", "event", {"event": "form_submitted"}),
    ]
    first = feed[0]
    assert set(first) == {
        "id",
        "object_type",
        "record_id",
        "kind",
        "changed",
        "occurred_at",
        "status",
        "attempts",
        "error",
        "next_attempt_at",
        "parked_at",
        "waiting_behind",
    }
    assert (first["status"], first["attempts"], first["error"]) == ("pending", 0, None)
    assert datetime.fromisoformat(first["occurred_at"]).tzinfo is not None

    park(cli=offline_cli, change_id=first["id"], error="RPCError: Blob data size exceeds limit.")
    [parked] = offline_cli.json("changes", "--failed")
    assert (parked["id"], parked["status"], parked["attempts"]) == (first["id"], "parked", 1)
    assert parked["error"] == "RPCError: Blob data size exceeds limit."
    behind = offline_cli.json("changes")[1]
    assert (behind["status"], behind["waiting_behind"]) == ("pending", first["id"])
    human = offline_cli("changes").stdout
    assert human.startswith("4 pending, 1 parked")
    assert (
        "Blob data size exceeds limit." in human and f"waits behind change {first['id']}" in human
    )
    assert len(offline_cli.json("changes", "--limit", "2")) == 2

    # Only parked changes can be retried; a wrong id is named, and nothing changes.
    for wrong in ("99999", str(feed[2]["id"])):
        result = offline_cli("changes", "retry", str(first["id"]), wrong, code=2)
        assert f"change {wrong}" in result.stderr
    assert "not a valid integer" in offline_cli("changes", "retry", "abc", code=2).output
    offline_cli("changes", "retry", code=2)
    offline_cli("changes", "retry", "--all", str(first["id"]), code=2)
    assert len(offline_cli.json("changes", "--failed")) == 1
    result = offline_cli("changes", "retry", str(first["id"]))
    assert result.stdout == f"1 change(s) back in the feed: {first['id']}\n"
    assert offline_cli.json("changes", "--failed") == []
    back = offline_cli.json("changes")[0]
    assert (back["status"], back["attempts"]) == ("pending", 0)
    park(cli=offline_cli, change_id=first["id"], error="again")
    assert offline_cli("changes", "retry", "--all").stdout.startswith("1 change(s) back")


def onboarding() -> dict[str, Any]:
    return {
        "key": "onboarding",
        "name": "Onboarding",
        "enrollment": {"trigger": "manual"},
        "actions": [{"id": "qualify", "type": "set_property", "property": "x", "value": "y"}],
    }


def store_broken_version(cli: Cli) -> None:
    """Version 2, written straight into the table: a definition that no longer validates."""
    app = store(cli)
    with app.sessions.begin() as session:
        first = session.get(WorkflowVersion, ("onboarding", 1))
        assert first is not None
        definition = {**first.definition, "actions": [{"id": "go", "type": "teleport"}]}
        session.execute(
            insert(WorkflowVersion).values(
                key="onboarding",
                version=2,
                name=first.name,
                object_type=first.object_type,
                trigger=first.trigger,
                definition=definition,
                source=first.source,
                source_name=first.source_name,
                published_at=datetime.now(UTC),
            )
        )
        session.execute(
            update(Workflow).where(Workflow.key == "onboarding").values(latest_version=2)
        )
    app.close()


def test_a_broken_stored_version_is_shown_and_refused_by_what_needs_it(
    offline_cli: Cli, write_definition: Write
):
    offline_cli("publish", str(write_definition(onboarding())))
    offline_cli("activate", "onboarding")
    offline_cli("records", "set", "ann", "firstname=Ann")
    store_broken_version(offline_cli)

    [listed] = offline_cli.json("workflows")
    assert listed["version"] == 2 and listed["broken"].startswith("actions.0")
    assert "onboarding version 2 is broken: actions.0" in offline_cli("workflows").stdout
    shown = offline_cli.json("show", "onboarding")
    assert shown["version"] == 2 and shown["broken"] == listed["broken"]
    assert shown["definition"]["actions"] == [{"id": "go", "type": "teleport"}]
    assert "BROKEN" in offline_cli("show", "onboarding").stdout
    assert offline_cli.json("show", "onboarding", "--version", "1")["broken"] is None

    refusal = "workflow 'onboarding' version 2 is broken: its stored definition no longer loads"
    for command in (
        ["activate", "onboarding"],
        ["enroll", "onboarding", "ann"],
        ["review", "onboarding"],
        ["history", "onboarding", "--record", "ann"],
        ["schedule", "onboarding", "--next", "2"],
    ):
        result = offline_cli(*command, code=2)
        assert result.stderr.startswith(f"crmflow: {refusal} (actions.0"), (command, result.stderr)
        assert len(result.stderr.splitlines()) == 1
    # What does not need the definition still works: the workflow can be stopped and looked at.
    assert offline_cli.json("enrollments", "onboarding") == []
    assert "inactive" in offline_cli("deactivate", "onboarding").stdout
    assert json.loads(offline_cli("workflows", "--json").stdout)[0]["active"] is False
