"""`crmflow graph` and `crmflow stats` through the real click commands: offline on a file, bad
input (exit 2, one located line, nothing written), and end to end on enrollments a real worker
ran on the Temporal dev server."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
Cli = Any  # conftest.Cli
Write = Callable[[dict[str, Any]], Path]


def test_graph_of_a_file_works_offline(offline_cli: Cli, tmp_path: Path) -> None:
    mermaid = offline_cli("graph", str(EXAMPLES / "onboarding.yaml")).stdout
    assert mermaid.startswith("flowchart TD")
    assert "qualify" in mermaid and "follow-up" in mermaid
    dot = offline_cli("graph", str(EXAMPLES / "onboarding.yaml"), "--format", "dot").stdout
    assert dot.startswith("digraph")
    out = tmp_path / "g.svg"
    offline_cli("graph", str(EXAMPLES / "onboarding.yaml"), "--format", "svg", "-o", str(out))
    root = ElementTree.parse(out).getroot()
    assert root.tag.endswith("svg")
    assert {g.get("data-action") for g in root.iter("{http://www.w3.org/2000/svg}g")} >= {
        "qualify",
        "welcome",
    }
    # An ordinary file, readable as the umask allows (not the temporary file's 0600).
    assert out.stat().st_mode & 0o044


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["graph", "Bad Key"], "'Bad Key': neither a definition file nor a workflow key"),
        (["graph", "missing.yaml"], "missing.yaml: cannot read"),
        (["graph", "nope"], "no workflow 'nope'"),
        (["graph", "onboarding.yaml", "--counts"], "--counts needs a published workflow"),
        (["graph", "onboarding.yaml", "--version", "2"], "--version applies to a published"),
        (["graph", "onboarding.yaml", "--format", "png"], "'png' is not one of"),
        (["graph", "onboarding.yaml", "-o", "/no/such/dir/g.svg"], "no directory /no/such/dir"),
        (["stats", "nope"], "no workflow 'nope'"),
        (["stats", "Nope!"], "workflow key"),
        (["stats", "onboarding", "--since", "3x"], "--since: invalid duration '3x'"),
        (["stats", "onboarding", "--since", "99999w"], "at most 100 years back"),
    ],
)
def test_bad_input_is_one_located_line(
    offline_cli: Cli, args: list[str], message: str, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "onboarding.yaml").write_text((EXAMPLES / "onboarding.yaml").read_text())
    offline_cli("publish", "onboarding.yaml")
    result = offline_cli(*args, code=2)
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert message in line, line
    assert not list(tmp_path.glob(".g.svg.*"))


def test_stats_of_a_workflow_without_enrollments(offline_cli: Cli) -> None:
    offline_cli("publish", str(EXAMPLES / "onboarding.yaml"))
    assert offline_cli.json("stats", "onboarding") == {
        "workflow": "onboarding",
        "since": None,
        "versions": [],
    }
    assert "no enrollments" in offline_cli("stats", "onboarding").stdout


def waiting_workflow(key: str) -> dict[str, Any]:
    return {
        "key": key,
        "name": "Welcome then wait",
        "enrollment": {"trigger": "manual"},
        "actions": [
            {"id": "welcome", "type": "send_email", "subject": "Hi", "body": "Hello"},
            {"id": "wait", "type": "delay", "duration": "1h"},
            {"id": "task", "type": "create_task", "title": "Call"},
        ],
    }


def test_counts_and_stats_of_enrollments_that_ran(e2e_cli: Cli, write_definition: Write) -> None:
    """Two enrollments run by the worker: ann's welcome is sent, bob's fails (no address) and
    the enrollment goes on; both wait at the 1-hour delay."""
    cli = e2e_cli
    key = f"waits-{uuid.uuid4().hex[:6]}"
    cli("publish", str(write_definition(waiting_workflow(key))))
    cli("activate", key)
    cli("records", "set", "ann", "email=ann@example.com")
    cli("records", "set", "bob", "firstname=Bob")
    cli("enroll", key, "ann", "bob")
    for record_id in ("ann", "bob"):
        cli.wait_for_step(key, record_id, "wait")
    try:
        dot = cli("graph", key, "--counts", "--format", "dot").stdout
        assert "2 reached · 0 waiting · 1 failed" in dot  # welcome
        assert "2 reached · 2 waiting · 0 failed" in dot  # wait
        assert "0 reached · 0 waiting · 0 failed" in dot  # task
        found = cli.json("stats", key)
        [v1] = found["versions"]
        assert v1["statuses"] == {"running": 2}
        actions = {a["action_id"]: a for a in v1["actions"]}
        assert [a["action_id"] for a in v1["actions"]] == ["welcome", "wait", "task"]
        assert actions["welcome"] == {
            "action_id": "welcome",
            "type": "send_email",
            "reached": 2,
            "completed": 1,
            "failed": 1,
            "waiting": 0,
        }
        assert actions["wait"]["waiting"] == 2 and "time_waited" not in actions["wait"]
        assert v1["failures"] == [
            {"action_id": "welcome", "cause": "the record has no email address", "count": 1}
        ]
        assert v1["goal"]["defined"] is False and v1["goal"]["conversion_rate"] == 0.0
        text = cli("stats", key).stdout
        assert f"{key} version 1: 2 enrollments (2 running)" in text
        assert "1 × welcome: the record has no email address" in text
        recent = json.loads(cli("stats", key, "--json", "--since", "1h").stdout)
        assert recent["since"] is not None and recent["versions"] == found["versions"]
    finally:
        cli("unenroll", key, "ann", "bob")
