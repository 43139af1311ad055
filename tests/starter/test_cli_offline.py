"""The CLI on a SQLite store, without Temporal: definitions, records, lists, events, and how
every kind of mistake is reported (exit code, one located line, never a traceback)."""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from crmflow import services
from crmflow.cli import cli

Write = Callable[[dict[str, Any]], Path]
Cli = Any  # conftest.Cli (conftest modules are not importable by name)


def onboarding(
    key: str = "onboarding", title: str = "Call {{ record.firstname }}"
) -> dict[str, Any]:
    return {
        "key": key,
        "name": "Onboarding",
        "enrollment": {"trigger": "manual"},
        "actions": [
            {
                "id": "qualify",
                "type": "set_property",
                "property": "lifecycle_stage",
                "value": "lead",
            },
            {"id": "wait", "type": "delay", "duration": "2s"},
            {"id": "task", "type": "create_task", "title": title, "due_in": "1d"},
        ],
    }


BROKEN = """\
key: Not A Key
name: Broken
enrollment: {trigger: manual}
actions:
  - {id: qualify, type: set_property, property: stage, value: lead, next: nowhere}
  - {id: wait, type: delay}
"""


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    return path


# ---------------------------------------------------------------- definitions


def test_validate_ok(offline_cli: Cli, write_definition: Write) -> None:
    path = write_definition(onboarding())
    assert offline_cli("validate", str(path)).stdout == f"{path}: ok (onboarding)\n"


def test_validate_prints_every_problem_located(
    offline_cli: Cli, write_definition: Write, broken: Path
) -> None:
    good = write_definition(onboarding())
    result = offline_cli("validate", str(good), str(broken), code=2)
    assert f"{good}: ok" in result.stdout
    problems = result.stderr.splitlines()
    assert len(problems) == 3, result.stderr
    assert problems[0].startswith(f"{broken}:1: key: ")
    assert f"{broken}:5: actions[0].next: unknown action 'nowhere'" in problems
    assert problems[2].startswith(f"{broken}:6: actions[1]")


def test_validate_missing_file_is_bad_input(offline_cli: Cli, tmp_path: Path) -> None:
    result = offline_cli("validate", str(tmp_path / "nope.yaml"), code=2)
    assert "does not exist" in result.stderr


def test_publish_versions_workflows_and_show(offline_cli: Cli, write_definition: Write) -> None:
    first = write_definition(onboarding())
    assert offline_cli("publish", str(first)).stdout == f"onboarding: version 1 ({first})\n"
    second = write_definition(onboarding(title="Ring {{ record.firstname }}"))
    assert offline_cli.json("publish", str(second)) == [
        {"key": "onboarding", "version": 2, "path": str(second)}
    ]

    assert offline_cli.json("workflows") == [
        {
            "key": "onboarding",
            "name": "Onboarding",
            "object_type": "contact",
            "trigger": "manual",
            "version": 2,
            "active": False,
            "enrollments": {},
            "schedule": None,
            "broken": None,
        }
    ]
    shown = offline_cli.json("show", "onboarding")
    assert (shown["version"], shown["versions"], shown["active"]) == (2, [1, 2], False)
    assert shown["source"] == second.read_text()
    assert shown["definition"]["actions"][2]["title"] == "Ring {{ record.firstname }}"
    assert offline_cli.json("show", "onboarding", "--version", "1")["source"] == first.read_text()

    human = offline_cli("show", "onboarding").stdout
    assert "version    2 of 1, 2" in human
    assert "active     no" in human
    assert human.rstrip().endswith(second.read_text().rstrip())
    assert "onboarding" in offline_cli("workflows").stdout

    assert "no workflow 'nope'" in offline_cli("show", "nope", code=2).stderr
    offline_cli("show", "onboarding", "--version", "7", code=2)


def test_publish_invalid_publishes_nothing(
    offline_cli: Cli, write_definition: Write, broken: Path
) -> None:
    good = write_definition(onboarding())
    result = offline_cli("publish", str(good), str(broken), code=2)
    assert f"{broken}:5: actions[0].next: unknown action 'nowhere'" in result.stderr
    assert offline_cli.json("workflows") == []


def test_schema_is_json_schema(offline_cli: Cli) -> None:
    schema = json.loads(offline_cli("schema").stdout)
    assert "json-schema.org" in schema["$schema"]
    assert "actions" in schema["properties"]


# ---------------------------------------------------------------- records


def test_records_set_show_delete(offline_cli: Cli) -> None:
    view = offline_cli.json(
        "records",
        "set",
        "ann",
        "firstname=Ann",
        "note=a=b",
        "seats:=120",
        "vip:=true",
        "score:=1.5",
        "zip=01234",
    )
    expected_properties = {
        "firstname": "Ann",
        "note": "a=b",
        "seats": 120,
        "vip": True,
        "score": 1.5,
        "zip": "01234",
    }
    assert view == {
        "object_type": "contact",
        "id": "ann",
        "properties": expected_properties,
        "lists": [],
        "associations": [],
    }
    assert offline_cli.json("records", "show", "ann") == view

    updated = offline_cli.json("records", "set", "ann", "seats:=121", "score:=null")
    # The store's rule: null clears a property (a cleared value is an unknown one).
    del expected_properties["score"]
    assert updated["properties"] == {**expected_properties, "seats": 121}
    human = offline_cli("records", "show", "ann").stdout
    assert "seats" in human and "121" in human

    company = offline_cli.json("records", "set", "acme", "name=Acme", "--object", "company")
    assert company["object_type"] == "company"
    offline_cli("records", "show", "acme", code=2)  # not a contact
    offline_cli("records", "show", "acme", "--object", "company")

    assert offline_cli("records", "delete", "ann").stdout == "deleted contact ann\n"
    assert "no contact with id 'ann'" in offline_cli("records", "show", "ann", code=2).stderr
    offline_cli("records", "delete", "ann", code=2)


@pytest.mark.parametrize("assignment", ["seats:=12x", "tags:=[1, 2]", "=value", "novalue", ":=1"])
def test_records_set_bad_assignment_is_bad_input(offline_cli: Cli, assignment: str) -> None:
    result = offline_cli("records", "set", "ann", assignment, code=2)
    assert result.stderr.startswith(f"crmflow: {assignment}:")
    assert len(result.stderr.splitlines()) == 1
    offline_cli("records", "show", "ann", code=2)


def test_records_import_csv_and_jsonl(offline_cli: Cli, tmp_path: Path) -> None:
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("id,firstname,email,seats\nann,Ann,ann@example.com,12\nbob,Bob,,\n")
    result = offline_cli("records", "import", str(contacts))
    assert result.stdout == "imported 2 contact record(s): 2 created, 0 updated\n"
    assert "importing contacts.csv" in result.stderr  # the progress bar
    assert offline_cli.json("records", "show", "bob")["properties"] == {"firstname": "Bob"}

    deals = tmp_path / "deals.jsonl"
    deals.write_text('{"id": "d1", "amount": 1200, "won": false}\n\n{"id": 2, "amount": null}\n')
    assert offline_cli.json("records", "import", str(deals), "--object", "deal") == {
        "object_type": "deal",
        "created": 2,
        "updated": 0,
    }
    d1 = offline_cli.json("records", "show", "d1", "--object", "deal")
    assert d1["properties"] == {"amount": 1200, "won": False}
    offline_cli("records", "show", "2", "--object", "deal")

    contacts.write_text("id,firstname\nann,Anne\ncarl,Carl\n")
    assert "1 created, 1 updated" in offline_cli("records", "import", str(contacts)).stdout
    assert offline_cli.json("records", "show", "ann")["properties"]["firstname"] == "Anne"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"id": "x1"}\n{"id": "x2", oops}\n', "bad.jsonl:2: invalid JSON"),
        ("bad.jsonl", '{"id": "x1"}\n[1]\n', "bad.jsonl:2: each line must be a JSON object"),
        ("bad.csv", "id,name\nx1,X\n,missing\n", "bad.csv:3: missing 'id'"),
        ("bad.txt", "id\nx1\n", "unknown format"),
        ("bad.csv", b"id,name\nx1,\xff\xfe\n", "not UTF-8"),
    ],
)
def test_records_import_bad_file_imports_nothing(
    offline_cli: Cli, tmp_path: Path, name: str, content: str | bytes, message: str
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    result = offline_cli("records", "import", str(path), code=2)
    assert message in result.stderr
    assert result.stderr.splitlines()[-1].startswith("crmflow: ")
    offline_cli("records", "show", "x1", code=2)


def test_records_import_missing_file(offline_cli: Cli, tmp_path: Path) -> None:
    offline_cli("records", "import", str(tmp_path / "nope.csv"), code=2)


# ---------------------------------------------------------------- lists and events


def test_lists_add_remove_show(offline_cli: Cli) -> None:
    for record_id in ("ann", "bob"):
        offline_cli("records", "set", record_id, f"firstname={record_id}")
    assert offline_cli("lists", "add", "webinar", "ann", "bob").stdout.startswith(
        "webinar: 2 added"
    )
    assert "1 already there" in offline_cli("lists", "add", "webinar", "ann").stdout
    shown = offline_cli.json("lists", "show", "webinar")
    assert shown == {"name": "webinar", "object_type": "contact", "members": ["ann", "bob"]}
    assert offline_cli.json("records", "show", "ann")["lists"] == ["webinar"]

    assert offline_cli("lists", "remove", "webinar", "ann").stdout.startswith("webinar: 1 removed")
    assert offline_cli.json("lists", "show", "webinar")["members"] == ["bob"]
    assert "bob" in offline_cli("lists", "show", "webinar").stdout

    assert (
        "no contact with id 'zed'" in offline_cli("lists", "add", "webinar", "zed", code=2).stderr
    )
    offline_cli("lists", "show", "nope", code=2)
    offline_cli("records", "set", "acme", "name=Acme", "--object", "company")
    result = offline_cli("lists", "add", "webinar", "acme", "--object", "company", code=2)
    assert "holds contact records" in result.stderr


def test_events_track(offline_cli: Cli) -> None:
    offline_cli("records", "set", "ann", "firstname=Ann")
    event = offline_cli.json(
        "events", "track", "ann", "form_submitted", "page=/pricing", "score:=3"
    )
    assert event["name"] == "form_submitted"
    assert event["properties"] == {"page": "/pricing", "score": 3}
    assert (
        "contact ann: email_opened at"
        in offline_cli("events", "track", "ann", "email_opened").stdout
    )
    offline_cli("events", "track", "zed", "form_submitted", code=2)
    offline_cli("events", "track", "ann", "form_submitted", "x:=nope", code=2)


# ---------------------------------------------------------------- enrollment without Temporal


def test_enroll_unknown_or_inactive_workflow(offline_cli: Cli, write_definition: Write) -> None:
    offline_cli("records", "set", "ann", "firstname=Ann")
    assert "no workflow 'nope'" in offline_cli("enroll", "nope", "ann", code=2).stderr
    offline_cli("publish", str(write_definition(onboarding())))
    result = offline_cli("enroll", "onboarding", "ann", code=1)
    assert "workflow 'onboarding' is not active" in result.stderr
    assert offline_cli.json("enrollments", "onboarding") == []
    assert "never enrolled" in offline_cli("history", "onboarding", "--record", "ann").stdout
    offline_cli("enrollments", "nope", code=2)


def test_unreachable_temporal_is_one_line(offline_cli: Cli, write_definition: Write) -> None:
    offline_cli("publish", str(write_definition(onboarding())))
    result = offline_cli("unenroll", "onboarding", "ann", code=1)
    assert result.stderr == (
        f"crmflow: cannot reach Temporal at {offline_cli.temporal}: is `crmflow up` running?\n"
    )


def test_reports_and_empty_listings(offline_cli: Cli) -> None:
    assert offline_cli.json("outbox") == []
    assert offline_cli.json("tasks") == []
    assert "empty" in offline_cli("outbox").stdout
    assert "no tasks" in offline_cli("tasks").stdout
    assert "no workflows" in offline_cli("workflows").stdout


# ---------------------------------------------------------------- options and errors


def test_usage_errors_exit_2(offline_cli: Cli) -> None:
    offline_cli("nonsense", code=2)
    offline_cli("records", "set", "ann", code=2)
    offline_cli("enrollments", "k", "--status", "sleeping", code=2)
    offline_cli("history", "k", code=2)  # --record is required
    offline_cli("show", "k", "--version", "0", code=2)


@pytest.mark.parametrize(
    "url", ["nosuchdb://x", "sqlite:////proc/crmflow/not/here.db", "sqlite:///{tmp}/dir.db"]
)
def test_unusable_database_is_one_line(tmp_path: Path, url: str) -> None:
    (tmp_path / "dir.db").mkdir()
    result = CliRunner().invoke(cli, ["--db", url.format(tmp=tmp_path), "workflows"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("crmflow: cannot open the database ")
    assert len(result.stderr.splitlines()) == 1


def test_database_from_environment(tmp_path: Path, write_definition: Write) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    path = write_definition(onboarding())
    result = CliRunner().invoke(cli, ["publish", str(path)], env={"CRMFLOW_DB": url})
    assert result.exit_code == 0, result.output
    listed = CliRunner().invoke(cli, ["--db", url, "workflows", "--json"])
    assert json.loads(listed.stdout)[0]["key"] == "onboarding"


def test_unexpected_error_is_one_line_unless_debugging(
    offline_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(app: Any) -> Any:
        raise ValueError("boom\nsecond line")

    monkeypatch.setattr(services, "list_workflows", broken)
    args = ["--db", offline_cli.db_url, "workflows"]
    result = CliRunner().invoke(cli, args, env={"CRMFLOW_DEBUG": None})
    assert result.exit_code == 1
    assert result.stderr == (
        "crmflow: unexpected error: ValueError: boom (CRMFLOW_DEBUG=1 shows the traceback)\n"
    )
    debug = CliRunner().invoke(cli, args, env={"CRMFLOW_DEBUG": "1"})
    assert isinstance(debug.exception, ValueError)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        (
            {"CRMFLOW_SMTP_HOST": "mail.example.com", "CRMFLOW_SMTP_PORT": "abc"},
            "CRMFLOW_SMTP_PORT",
        ),
        ({"CRMFLOW_WEBHOOK_RATE": "fast"}, "CRMFLOW_WEBHOOK_RATE"),
        ({"CRMFLOW_ACTIONS": "nonsense"}, "CRMFLOW_ACTIONS"),
        ({"CRMFLOW_WEBHOOK_ENV": "PARTNER_TOKEN,CRMFLOW_DB"}, "CRMFLOW_WEBHOOK_ENV"),
        (
            {"CRMFLOW_SMTP_HOST": "mail.example.com", "CRMFLOW_SMTP_FROM": "a@x.com\nBcc: b@y"},
            "CRMFLOW_SMTP_FROM",
        ),
    ],
)
@pytest.mark.parametrize("command", ["worker", "up"])
def test_bad_outward_settings_stop_the_worker_with_one_line(
    tmp_path: Path, env: dict[str, str], variable: str, command: str
) -> None:
    db = f"sqlite:///{tmp_path / 'crmflow.db'}"
    result = CliRunner().invoke(
        cli,
        ["--db", db, "--temporal", "127.0.0.1:1", command],
        env={**env, "CRMFLOW_DEBUG": None},
    )
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith(f"crmflow: {variable}")
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- limits, and older stores


def _strict(text: str) -> Any:
    def refuse(token: str) -> Any:
        raise ValueError(f"{token} is not strict JSON")

    return json.loads(text, parse_constant=refuse)


def test_records_show_json_is_strict_json_whatever_an_older_version_stored(
    offline_cli: Cli,
) -> None:
    """Versions before the input rules stored NaN, Infinity and lone surrogates on SQLite: the
    JSON output stays strict (null, U+FFFD), the human output still shows the NaN."""
    offline_cli("records", "set", "ann", "ok:=1")
    engine = create_engine(offline_cli.db_url)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE records SET properties = :p"),
            {"p": '{"ok": 1, "score": NaN, "big": -Infinity, "name": "Zo\\ud800"}'},
        )
    engine.dispose()
    shown = _strict(offline_cli("records", "show", "ann", "--json").stdout)
    assert shown["properties"] == {"ok": 1, "score": None, "big": None, "name": "Zo\ufffd"}
    human = offline_cli("records", "show", "ann").stdout
    assert "NaN" in human and "Zo\ufffd" in human
    # Such a value is repaired like any other: set or clear it.
    offline_cli("records", "set", "ann", "score:=null", "big:=2", "name=Zoe")
    assert _strict(offline_cli("records", "show", "ann", "--json").stdout)["properties"] == {
        "ok": 1,
        "big": 2,
        "name": "Zoe",
    }


def test_import_reads_what_spreadsheets_write_and_keeps_ids_as_text(
    offline_cli: Cli, tmp_path: Path
) -> None:
    """A UTF-8 BOM (Excel), CRLF line ends, a quoted cell over two lines, ids with leading
    zeros; in JSONL an integer id is its decimal text."""
    contacts = tmp_path / "contacts.csv"
    contacts.write_bytes(
        codecs.BOM_UTF8 + b'id,name,notes\r\n007,Bond,"two\r\nlines"\r\n0042,"Doe, J",\r\n'
    )
    assert "2 created" in offline_cli("records", "import", str(contacts)).stdout
    bond = offline_cli.json("records", "show", "007")
    assert bond["properties"] == {"name": "Bond", "notes": "two\r\nlines"}
    assert offline_cli.json("records", "show", "0042")["properties"] == {"name": "Doe, J"}

    deals = tmp_path / "deals.jsonl"
    deals.write_text('{"id": 12, "amount": 9223372036854775807}\n{"id": "12.0"}\n')
    offline_cli("records", "import", str(deals), "--object", "deal")
    shown = offline_cli.json("records", "show", "12", "--object", "deal")
    assert shown["properties"] == {"amount": 2**63 - 1}
    offline_cli("records", "show", "12.0", "--object", "deal")

    flags = tmp_path / "flags.jsonl"
    flags.write_text('{"id": "ok"}\n{"id": true}\n')
    result = offline_cli("records", "import", str(flags), code=2)
    assert result.stderr == (
        f"crmflow: {flags}:2: 'id' must be a string (or an integer), not a boolean (true)\n"
    )
    offline_cli("records", "show", "True", code=2)
    offline_cli("records", "show", "ok", code=2)


def test_a_refused_import_is_one_line_without_a_progress_bar(
    offline_cli: Cli, tmp_path: Path
) -> None:
    people = tmp_path / "people.csv"
    people.write_text("id,First Name\nann,Ann\n")
    result = offline_cli("records", "import", str(people), code=2)
    assert result.stderr == (
        f"crmflow: {people}:1: column 2: property name 'First Name': use letters, digits, '_', "
        "'.' and '-', starting with a letter or '_', at most 128 characters\n"
    )


def test_ids_names_and_values_at_the_limits_are_accepted(offline_cli: Cli) -> None:
    """The limits are ones a real user never meets: right at them, everything works."""
    longest = "\u00e9" * 255  # 255 characters, 510 bytes
    offline_cli("records", "set", longest, f"note={'x' * 65_536}", "n:=-9223372036854775808")
    offline_cli("records", "set", "ann@example.com", "line=two\nlines", "f:=1e308")
    offline_cli("lists", "add", "l" * 128, longest)
    offline_cli("events", "track", longest, "e" * 128, f"p={'x' * 60_000}")
    assert offline_cli.json("records", "show", longest)["lists"] == ["l" * 128]
    offline_cli("records", "set", "z" * 255, "x=1", "--object", "o" * 64)


def test_usage_errors_are_one_line_too(offline_cli: Cli) -> None:
    for args, message in [
        (("records", "set", "ann"), "crmflow: Missing argument 'PROP=VALUE|PROP:=JSON...'."),
        (("records", "show", "a\nb"), "crmflow: Invalid value for 'ID': record id 'a\\nb': "),
        (("show", "k", "--version", "0"), "crmflow: Invalid value for '--version': "),
        (("nonsense",), "crmflow: No such command 'nonsense'."),
    ]:
        result = offline_cli(*args, code=2)
        [line] = result.stderr.splitlines()
        assert line.startswith(message), line
        assert line.endswith("--help`)"), line
    # A group without its command still prints its help.
    assert "Commands:" in offline_cli("records", code=2).output


@pytest.mark.parametrize(
    "address", ["x y:7233", "localhost", "localhost:99999", "[::1:7233", "localhost\n:7233"]
)
def test_a_garbage_temporal_address_is_bad_input(
    offline_cli: Cli, write_definition: Write, address: str
) -> None:
    offline_cli("publish", str(write_definition(onboarding())))
    result = CliRunner().invoke(
        cli, ["--db", offline_cli.db_url, "--temporal", address, "unenroll", "onboarding", "ann"]
    )
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("crmflow: --temporal (or CRMFLOW_TEMPORAL) ")
    assert line.endswith("expected HOST:PORT, e.g. localhost:7233")
