"""Loading YAML/JSON: every problem collected, located by path and line, in plain words."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from crmflow.definitions import (
    DefinitionError,
    Problem,
    PropertyFilter,
    WorkflowDefinition,
    load_definition_file,
    load_definition_text,
)

FIXTURES = Path(__file__).parent / "fixtures"

Load = Callable[..., WorkflowDefinition]
Problems = Callable[..., list[Problem]]


def json_problems(text: str, name: str = "flow.json") -> list[Problem]:
    with pytest.raises(DefinitionError) as caught:
        load_definition_text(text, source_name=name)
    return caught.value.problems


# ------------------------------------------------------------------------- fixtures


@pytest.mark.parametrize("name", ["welcome-series", "sales-follow-up", "weekly-digest"])
def test_example_fixtures_load(name: str) -> None:
    definition = load_definition_file(FIXTURES / f"{name}.yaml")
    assert definition.key == name


def test_welcome_series_shape() -> None:
    welcome = load_definition_file(FIXTURES / "welcome-series.yaml")
    assert welcome.enrollment.trigger == "criteria"
    assert [a.type for a in welcome.actions] == [
        "send_email",
        "delay",
        "branch",
        "send_email",
        "create_task",
    ]
    assert welcome.goal is not None
    assert welcome.settings.timezone == "Europe/Paris"


def test_sales_follow_up_shape() -> None:
    sales = load_definition_file(FIXTURES / "sales-follow-up.yaml")
    assert sales.enrollment.trigger == "manual"
    assert {a.type for a in sales.actions} >= {
        "set_property",
        "add_to_list",
        "delay",
        "notify",
        "increment_property",
    }


def test_weekly_digest_shape() -> None:
    digest = load_definition_file(FIXTURES / "weekly-digest.yaml")
    schedule = digest.enrollment.schedule
    assert schedule is not None and schedule.every == "week"
    assert schedule.model_dump(mode="json") == {"every": "week", "at": "08:00", "days": ["fri"]}


# -------------------------------------------------------------------- all problems


def test_three_mistakes_give_three_problems(problems: Problems) -> None:
    found = problems(
        """\
        actions:
          - {id: welcome, type: send_email, subject: Hi, body: b}
          - {id: wait, type: delay, duration: 2 days}
          - {id: follow-up, type: send_email, subject: Hi, body: b, next: send-follow-up}
        settings:
          timezone: Europe/Pariss
        """
    )
    assert [str(p) for p in found] == [
        "test.yaml:7: actions[1].duration: invalid duration '2 days': use e.g. '30s', '15m',"
        " '2h', '3d', '1w', '1d12h' or 'P1DT12H'",
        "test.yaml:8: actions[2].next: unknown action 'send-follow-up'",
        "test.yaml:10: settings.timezone: unknown time zone 'Europe/Pariss': use an IANA name;"
        " did you mean 'Europe/Paris'?",
    ]


TYPES = [
    "delay",
    "wait_for_event",
    "branch",
    "value_branch",
    "split",
    "set_property",
    "copy_property",
    "clear_property",
    "increment_property",
    "add_to_list",
    "remove_from_list",
    "send_email",
    "notify",
    "create_task",
    "create_record",
    "webhook",
    "enroll_in_workflow",
    "unenroll_from_workflow",
    "custom",
]


def test_unknown_type_suggests_a_close_one(problems: Problems) -> None:
    (found,) = problems("actions:\n  - {id: a, type: send_mail, subject: s, body: b}\n")
    assert (found.path, found.line) == ("actions[0].type", 6)
    assert found.message == "unknown type 'send_mail'; did you mean 'send_email'?"


def test_graph_checks_run_beside_field_errors(problems: Problems) -> None:
    found = problems(
        """\
        actions:
          - {id: a, type: sleep, duration: 1d}
          - {id: b, type: delay, duration: 1d, next: a}
          - {id: c, type: delay, duration: 1d, next: nowhere}
          - {id: d, type: set_property, property: x, value: [1]}
        """
    )
    assert [(p.path, p.line, p.message) for p in found] == [
        ("actions[0].type", 6, "unknown type 'sleep'; expected one of: " + ", ".join(TYPES)),
        ("actions[2].next", 8, "unknown action 'nowhere'"),
        ("actions[3].value", 9, "value must be a string, number, boolean or null"),
    ]


def test_rules_across_parts_run_beside_field_errors(problems: Problems) -> None:
    found = problems(
        """\
        key: k
        name: K
        enrollment: {trigger: manual}
        actions:
          - {id: a, type: delay, duration: soon}
        settings:
          unenroll_when_criteria_unmet: true
          unenroll_from: [k]
        """,
        header=False,
    )
    assert [(p.path, p.line) for p in found] == [
        ("actions[0].duration", 5),
        ("settings.unenroll_when_criteria_unmet", 7),
        ("settings.unenroll_from[0]", 8),
    ]


def test_messages_are_plain(problems: Problems) -> None:
    found = problems(
        """\
        actions:
          - {id: A, type: delay, duration: x, extra: 1}
          - {id: b, type: branch, branches: [{name: n, when: {property: p, op: gt, value: no}}]}
          - {id: c, type: increment_property, property: p, by: "1"}
          - {id: d, type: webhook, url: "https://x", headers: [1]}
          - {id: e, type: split, paths: [{percent: 1.5, next: end}]}
          - just-a-string
          - {type: custom}
          - {id: f}
        goal: 3
        """
    )
    assert len(found) >= 10
    for problem in found:
        assert problem.line is not None
        for junk in ("Value error", "pydantic.dev", "input_type", "input_value", "[type="):
            assert junk not in problem.message, problem


def test_condition_paths_have_no_tags(problems: Problems) -> None:
    found = problems(
        """\
        key: k
        name: K
        enrollment:
          trigger: criteria
          criteria:
            all:
              - {property: x, op: eq, value: 1}
              - any:
                  - {in_list: ""}
                  - not: {event: e, within: forever}
              - {nothing: here}
        actions:
          - {id: a, type: delay, duration: 1d}
        """,
        header=False,
    )
    assert [(p.path, p.line) for p in found] == [
        ("enrollment.criteria.all[1].any[0].in_list", 9),
        ("enrollment.criteria.all[1].any[1].not.within", 10),
        ("enrollment.criteria.all[2]", 11),
    ]
    assert found[2].message.startswith("a condition needs one of: all, any, not")


def test_branch_condition_paths(problems: Problems) -> None:
    found = problems(
        """\
        actions:
          - id: a
            type: branch
            branches:
              - name: n
                when:
                  not:
                    property: x
                    op: between
                    value: [1]
                next: end
        """
    )
    assert [(p.path, p.line) for p in found] == [("actions[0].branches[0].when.not", 11)]
    assert "two numbers or two ISO-8601 dates" in found[0].message


def test_missing_type_and_non_mapping_action(problems: Problems) -> None:
    found = problems(
        """\
        actions:
          - {id: a, duration: 1d}
          - 42
        """
    )
    assert [(p.path, p.line, p.message) for p in found] == [
        ("actions[0].type", 6, "required"),
        ("actions[1]", 7, "expected a mapping, got 42"),
    ]


# ------------------------------------------------------------------------ YAML input


def test_duplicate_keys_are_located(problems: Problems) -> None:
    found = problems(
        """\
        actions:
          - id: a
            type: delay
            duration: 1d
            duration: 2d
        settings:
          timezone: UTC
        settings: {}
        """
    )
    assert [str(p) for p in found] == [
        "test.yaml:9: actions[0].duration: duplicate key (first on line 8)",
        "test.yaml:12: settings: duplicate key (first on line 10)",
    ]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("key: k\nname: [a\nb: 1\n", 3, "(while parsing a flow sequence started on line 2)"),
        ("key: k\n  name: x\n", 2, "mapping values are not allowed here"),
        ("key: 'k\n", 2, "YAML syntax error"),
        ("key: k\n---\nkey: j\n", 2, "YAML syntax error"),
        ("key: *nothing\n", 1, "YAML syntax error"),
    ],
)
def test_yaml_syntax_errors(problems: Problems, text: str, line: int, message: str) -> None:
    (found,) = problems(text, header=False)
    assert found.path == ""
    assert found.line == line
    assert message in found.message
    assert str(found).startswith(f"test.yaml:{line}: YAML syntax error: ")


@pytest.mark.parametrize(
    ("text", "got"),
    [("", "an empty document"), ("- a\n", "a list"), ("hello\n", "a string"), ("3\n", "a number")],
)
def test_top_level_must_be_a_mapping(problems: Problems, text: str, got: str) -> None:
    (found,) = problems(text, header=False)
    assert found.line == 1
    assert found.message == f"expected a mapping (key, name, enrollment, actions, ...), got {got}"


def test_yaml_scalars_stay_as_written(load: Load) -> None:
    definition = load(
        """\
        actions:
          - id: a
            type: branch
            branches:
              - {name: old, when: {property: signed_up, op: before, value: 2026-01-01}, next: end}
              - {name: yes, when: {property: on, op: eq, value: no}, next: end}
          - {id: b, type: delay, until_date: 2026-12-01T09:00:00+01:00}
          - {id: c, type: set_property, property: note, value: 2026-05-05}
        settings:
          pause_dates: [2026-12-25]
        """
    )
    branch = definition.actions[0]
    assert branch.type == "branch"
    first, second = branch.branches
    assert isinstance(first.when, PropertyFilter) and first.when.value == "2026-01-01"
    assert second.name == "yes"
    assert isinstance(second.when, PropertyFilter)
    assert (second.when.property, second.when.value) == ("on", "no")
    delay = definition.actions[1]
    assert delay.type == "delay" and delay.until_date is not None
    assert delay.until_date.utcoffset() is not None and delay.until_date.hour == 9
    assert definition.actions[2].value == "2026-05-05"  # type: ignore[union-attr]


def test_block_scalars_and_numbers_are_plain(load: Load) -> None:
    definition = load(
        """\
        actions:
          - id: a
            type: custom
            handler: sync
            params:
              text: |
                two
                lines
              ratio: 0.5
              count: 0x10
              flag: true
        """
    )
    params = definition.actions[0].params  # type: ignore[union-attr]
    assert params == {"text": "two\nlines\n", "ratio": 0.5, "count": 16, "flag": True}
    assert [type(v) for v in params.values()] == [str, float, int, bool]


# ------------------------------------------------------------------------ JSON input


def test_json_input() -> None:
    data = {
        "key": "json-flow",
        "name": "JSON flow",
        "enrollment": {"trigger": "criteria", "criteria": {"not": {"in_list": "x"}}},
        "actions": [{"id": "a", "type": "delay", "until_time": {"at": "09:00"}}],
    }
    definition = load_definition_text(json.dumps(data), source_name="flow.json")
    assert definition.key == "json-flow"
    assert load_definition_text(json.dumps(data), source_name="noext", fmt="json") == definition
    assert load_definition_text(json.dumps(data), source_name="<stdin>") == definition


def test_json_problems_have_lines() -> None:
    data = {
        "key": "k",
        "name": "K",
        "enrollment": {"trigger": "manual"},
        "actions": [{"id": "a", "type": "delay", "duration": "1d", "next": "zzz"}],
    }
    (found,) = json_problems(json.dumps(data, indent=2))
    assert str(found) == "flow.json:12: actions[0].next: unknown action 'zzz'"


def test_json_syntax_error() -> None:
    (found,) = json_problems('{\n  "key": "k",\n  "name": \n}\n')
    assert found.line == 4
    assert found.message.startswith("JSON syntax error: Expecting value")


def test_json_duplicate_key() -> None:
    (found,) = json_problems('{\n  "key": "k",\n  "key": "j"\n}\n')
    assert str(found) == "flow.json:3: key: duplicate key (first on line 2)"


def test_json_top_level_must_be_an_object() -> None:
    (found,) = json_problems("[1, 2]")
    assert found.message.endswith("got a list")


# ------------------------------------------------------------------ files and errors


def test_load_definition_file_formats(tmp_path: Path) -> None:
    source = (FIXTURES / "weekly-digest.yaml").read_text()
    expected = load_definition_text(source)
    (tmp_path / "digest.yml").write_text(source)
    assert load_definition_file(tmp_path / "digest.yml") == expected
    as_json = expected.model_dump(mode="json", by_alias=True, exclude_none=True)
    (tmp_path / "digest.json").write_text(json.dumps(as_json, indent=2))
    assert load_definition_file(str(tmp_path / "digest.json")) == expected


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError) as caught:
        load_definition_file(tmp_path / "missing.yaml")
    (found,) = caught.value.problems
    assert found.line is None
    assert str(found) == f"{tmp_path / 'missing.yaml'}: cannot read: No such file or directory"


def test_problem_and_error_text() -> None:
    problem = Problem("welcome.yaml", "actions[2].next", 12, "unknown action 'x'")
    assert str(problem) == "welcome.yaml:12: actions[2].next: unknown action 'x'"
    assert str(Problem("f.yaml", "", None, "bad")) == "f.yaml: bad"
    error = DefinitionError([problem, Problem("f.yaml", "key", 1, "required")])
    assert (
        str(error)
        == "welcome.yaml:12: actions[2].next: unknown action 'x'\nf.yaml:1: key: required"
    )
    assert isinstance(error, ValueError)


def test_odd_keys_are_quoted_in_paths(problems: Problems) -> None:
    (found,) = problems(
        """\
        actions:
          - id: a
            type: value_branch
            property: plan
            cases: {"gold plan": nowhere}
        """
    )
    assert found.path == 'actions[0].cases["gold plan"]'
    assert found.line == 9


def test_definitions_import_no_sqlalchemy_or_temporalio() -> None:
    code = textwrap.dedent(
        """\
        import sys
        import crmflow.definitions
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("sqlalchemy", "temporalio"))
        assert not bad, bad
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)
