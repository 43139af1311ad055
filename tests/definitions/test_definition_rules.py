"""Every rule of SPEC §2 rejected with the right path and line."""

from __future__ import annotations

import textwrap
from collections.abc import Callable

import pytest

from crmflow.definitions import (
    END,
    ConditionReads,
    Problem,
    WorkflowDefinition,
    condition_reads,
)

Load = Callable[..., WorkflowDefinition]
OneProblem = Callable[..., Problem]
Problems = Callable[..., list[Problem]]

ONE_ACTION = """\
actions:
  - {id: a, type: delay, duration: 1d}
"""


def doc(enrollment: str, rest: str = "") -> str:
    """A definition whose enrollment block starts on line 3."""
    return f"key: k\nname: K\n{enrollment}{ONE_ACTION}{rest}"


# ------------------------------------------------------------------------- top level


@pytest.mark.parametrize(
    ("text", "path", "line", "message"),
    [
        ("key: Bad Key\n", "key", 1, "invalid workflow key 'Bad Key'"),
        (f"key: {'a' * 65}\n", "key", 1, "longer than 64"),
        ("key: -k\n", "key", 1, "invalid workflow key"),
        ("key: k\nobject_type: Contact\n", "object_type", 2, "invalid object type"),
        ("key: k\nname: ''\n", "name", 2, "must not be empty"),
        ("key: k\nsurprise: 1\n", "surprise", 2, "unknown field 'surprise'"),
        ("key: k\ndescripton: x\n", "descripton", 2, "did you mean 'description'?"),
    ],
)
def test_top_level_fields(
    problems: Problems, text: str, path: str, line: int, message: str
) -> None:
    base = "name: N\nenrollment: {trigger: manual}\n" + ONE_ACTION
    text = text + "".join(
        part + "\n" for part in base.splitlines() if part.split(":")[0] not in text
    )
    found = [p for p in problems(text, header=False) if p.path == path]
    assert len(found) == 1, found
    assert found[0].line == line
    assert message in found[0].message


def test_missing_fields(problems: Problems) -> None:
    found = problems("name: N\nactions: []\n", header=False)
    assert [(p.path, p.message) for p in found] == [
        ("key", "required"),
        ("enrollment", "required"),
        ("actions", "must not be empty"),
    ]


def test_defaults(load: Load) -> None:
    definition = load(ONE_ACTION)
    assert definition.object_type == "contact"
    assert definition.settings.timezone == "UTC"
    assert definition.goal is None
    assert definition.settings.pause_dates == []


# ------------------------------------------------------------------------ enrollment


@pytest.mark.parametrize(
    ("enrollment", "path", "message"),
    [
        (
            "enrollment: {trigger: criteria}\n",
            "enrollment.criteria",
            "required for trigger 'criteria'",
        ),
        (
            "enrollment: {trigger: schedule, schedule: {every: day, at: '08:00'}}\n",
            "enrollment.criteria",
            "required for trigger 'schedule'",
        ),
        (
            "enrollment: {trigger: manual, criteria: {in_list: x}}\n",
            "enrollment.criteria",
            "not allowed for trigger 'manual'",
        ),
        (
            "enrollment: {trigger: schedule, criteria: {in_list: x}}\n",
            "enrollment.schedule",
            "required for trigger 'schedule'",
        ),
        (
            "enrollment: {trigger: criteria, criteria: {in_list: x},"
            " schedule: {every: day, at: '08:00'}}\n",
            "enrollment.schedule",
            "only for trigger 'schedule', not 'criteria'",
        ),
        (
            "enrollment: {trigger: manual, enroll_existing: true}\n",
            "enrollment.enroll_existing",
            "only for trigger 'criteria'",
        ),
        (
            "enrollment: {trigger: schedule, criteria: {in_list: x},"
            " schedule: {every: day, at: '08:00'}, reenroll: {lists: [x]}}\n",
            "enrollment.reenroll",
            "every scheduled run enrolls all matching records",
        ),
        (
            "enrollment: {trigger: criteria, criteria: {in_list: x}, reenroll: {}}\n",
            "enrollment.reenroll",
            "at least one of properties, events, lists",
        ),
        ("enrollment: {trigger: sometimes}\n", "enrollment.trigger", "expected 'criteria'"),
    ],
)
def test_enrollment_rules(problem: OneProblem, enrollment: str, path: str, message: str) -> None:
    found = problem(doc(enrollment), header=False)
    assert (found.path, found.line) == (path, 3)
    assert message in found.message


def test_enrollment_block_lines(problem: OneProblem) -> None:
    text = doc("enrollment:\n  trigger: manual\n  criteria:\n    in_list: x\n")
    found = problem(text, header=False)
    assert (found.path, found.line) == ("enrollment.criteria", 5)


def test_enrollment_accepts(load: Load) -> None:
    definition = load(
        doc(
            "enrollment:\n  trigger: criteria\n  criteria: {in_list: x}\n  enroll_existing: true\n"
            "  reenroll: {properties: [stage], events: [form_submitted], lists: [webinar]}\n"
        ),
        header=False,
    )
    assert definition.enrollment.enroll_existing
    assert definition.enrollment.reenroll is not None
    assert definition.enrollment.reenroll.events == ["form_submitted"]


# -------------------------------------------------------------------------- settings

CRITERIA = "enrollment: {trigger: criteria, criteria: {in_list: x}}\n"
SCHEDULE = (
    "enrollment: {trigger: schedule, criteria: {in_list: x}, schedule: {every: day, at: '08:00'}}\n"
)


@pytest.mark.parametrize(
    ("enrollment", "settings", "path", "message"),
    [
        (CRITERIA, "timezone: Europe/Pariss", "settings.timezone", "did you mean 'Europe/Paris'?"),
        (CRITERIA, "timezone: Mars/Base", "settings.timezone", "unknown time zone 'Mars/Base'"),
        (CRITERIA, "timezone: ''", "settings.timezone", "unknown time zone"),
        (
            CRITERIA,
            "timezone_property: 'my zone'",
            "settings.timezone_property",
            "invalid property",
        ),
        (
            SCHEDULE,
            "execution_window: {days: [mon], from: '09:00', to: '17:00'}",
            "settings.execution_window",
            "scheduled runs already start at the time you chose",
        ),
        (
            CRITERIA,
            "execution_window: {days: [], from: '09:00', to: '17:00'}",
            "settings.execution_window.days",
            "must not be empty",
        ),
        (
            CRITERIA,
            "execution_window: {days: [mon], from: '17:00', to: '09:00'}",
            "settings.execution_window.to",
            "must be after from (17:00)",
        ),
        (
            CRITERIA,
            "execution_window: {days: [mon], from: '09:00', to: '09:00'}",
            "settings.execution_window.to",
            "must be after from",
        ),
        (
            CRITERIA,
            "execution_window: {days: [mon, mon], from: '09:00', to: '10:00'}",
            "settings.execution_window.days",
            "listed twice",
        ),
        (
            CRITERIA,
            "execution_window: {days: [mon], to: '10:00'}",
            "settings.execution_window.from",
            "required",
        ),
        (CRITERIA, "pause_dates: [2026-13-01]", "settings.pause_dates[0]", "valid date"),
        (
            "enrollment: {trigger: manual}\n",
            "unenroll_when_criteria_unmet: true",
            "settings.unenroll_when_criteria_unmet",
            "only for trigger 'criteria', not 'manual'",
        ),
        (CRITERIA, "unenroll_from: [other, k]", "settings.unenroll_from[1]", "cannot unenroll"),
        (CRITERIA, "unenroll_from: [Other]", "settings.unenroll_from[0]", "invalid workflow key"),
        (
            CRITERIA,
            "unenroll_when: {property: x, op: nope}",
            "settings.unenroll_when.op",
            "Input should be 'eq'",
        ),
    ],
)
def test_settings_rules(
    problem: OneProblem, enrollment: str, settings: str, path: str, message: str
) -> None:
    found = problem(doc(enrollment, f"settings:\n  {settings}\n"), header=False)
    assert found.path == path
    assert found.line == 7
    assert message in found.message


def test_settings_accepts(load: Load) -> None:
    definition = load(
        doc(
            CRITERIA,
            "settings:\n  timezone: Europe/Paris\n  timezone_property: tz\n"
            "  execution_window: {days: [mon, fri], from: '09:00', to: '17:30'}\n"
            "  pause_dates: [2026-12-25]\n  suppression_lists: [do-not-contact]\n"
            "  unenroll_when: {not: {in_list: customers}}\n  unenroll_when_criteria_unmet: true\n"
            "  unenroll_from: [other-flow]\n",
        ),
        header=False,
    )
    settings = definition.settings
    assert settings.execution_window is not None
    assert settings.execution_window.weekdays() == [0, 4]
    assert str(settings.pause_dates[0]) == "2026-12-25"
    assert settings.unenroll_from == ["other-flow"]


# ----------------------------------------------------------------------------- graph


@pytest.mark.parametrize(
    ("actions", "path", "line", "message"),
    [
        (
            """\
            actions:
              - {id: a, type: delay, duration: 1d, next: send-follow-up}
            """,
            "actions[0].next",
            6,
            "unknown action 'send-follow-up'",
        ),
        (
            """\
            actions:
              - id: a
                type: branch
                branches:
                  - {name: one, when: {in_list: x}, next: end}
                  - {name: two, when: {in_list: y}, next: nowhere}
            """,
            "actions[0].branches[1].next",
            10,
            "unknown action 'nowhere'",
        ),
        (
            """\
            actions:
              - id: a
                type: branch
                branches: [{name: one, when: {in_list: x}, next: end}]
                otherwise: nowhere
            """,
            "actions[0].otherwise",
            9,
            "unknown action 'nowhere'",
        ),
        (
            """\
            actions:
              - id: a
                type: value_branch
                property: plan
                cases:
                  gold: end
                  silver: nowhere
            """,
            "actions[0].cases.silver",
            11,
            "unknown action 'nowhere'",
        ),
        (
            """\
            actions:
              - id: a
                type: split
                paths:
                  - {percent: 50, next: end}
                  - {percent: 50, next: nowhere}
            """,
            "actions[0].paths[1].next",
            10,
            "unknown action 'nowhere'",
        ),
        (
            """\
            actions:
              - {id: a, type: wait_for_event, event: e, timeout: 1d, on_timeout: nowhere}
            """,
            "actions[0].on_timeout",
            6,
            "unknown action 'nowhere'",
        ),
        (
            """\
            actions:
              - {id: a, type: delay, duration: 1d}
              - {id: a, type: delay, duration: 1d}
            """,
            "actions[1].id",
            7,
            "duplicate action id 'a' (also actions[0])",
        ),
        (
            """\
            actions:
              - {id: a, type: delay, duration: 1d}
              - {id: b, type: delay, duration: 1d, next: a}
            """,
            "actions[1].next",
            7,
            "cycle: a -> b -> a",
        ),
        (
            """\
            actions:
              - {id: a, type: delay, duration: 1d, next: c}
              - {id: b, type: delay, duration: 1d}
              - {id: c, type: delay, duration: 1d, next: b}
            """,
            "actions[1]",
            7,
            "cycle: c -> b -> c ('b' has no next and continues with the following one)",
        ),
        (
            """\
            actions:
              - {id: a, type: delay, duration: 1d, next: end}
              - {id: x, type: delay, duration: 1d}
            """,
            "actions[1]",
            7,
            "action 'x' is not reachable from the first action",
        ),
        (
            """\
            actions:
              - id: a
                type: split
                paths: [{percent: 100, next: c}]
              - {id: b, type: delay, duration: 1d}
              - {id: c, type: delay, duration: 1d}
            """,
            "actions[1]",
            9,
            "action 'b' is not reachable from the first action",
        ),
    ],
)
def test_graph_rules(problem: OneProblem, actions: str, path: str, line: int, message: str) -> None:
    found = problem(textwrap.dedent(actions))
    assert (found.path, found.line, found.message) == (path, line, message)


def test_self_loop_and_several_graph_problems(problems: Problems) -> None:
    found = problems(
        """\
        actions:
          - {id: a, type: delay, duration: 1d, next: a}
          - {id: b, type: delay, duration: 1d, next: zzz}
        """
    )
    assert [str(p) for p in found] == [
        "test.yaml:6: actions[0].next: cycle: a -> a",
        "test.yaml:7: actions[1].next: unknown action 'zzz'",
        "test.yaml:7: actions[1]: action 'b' is not reachable from the first action",
    ]


def test_a_valid_graph(load: Load) -> None:
    definition = load(
        """\
        actions:
          - id: start
            type: branch
            branches: [{name: vip, when: {in_list: vip}, next: vip-mail}]
          - {id: normal-mail, type: send_email, subject: Hi, body: b, next: end}
          - {id: vip-mail, type: send_email, subject: Hello, body: b}
          - {id: wait, type: wait_for_event, event: e, timeout: 1d, on_timeout: end}
          - {id: last, type: clear_property, property: p}
        """
    )
    assert [a.id for a in definition.actions] == [
        "start",
        "normal-mail",
        "vip-mail",
        "wait",
        "last",
    ]
    assert set(definition.action_map()) == {"start", "normal-mail", "vip-mail", "wait", "last"}
    assert definition.next_of("start") == "normal-mail"  # no match: otherwise = fall-through
    assert definition.next_of("normal-mail") == END
    assert definition.next_of("vip-mail") == "wait"
    assert definition.next_of("last") == END
    with pytest.raises(KeyError):
        definition.next_of("nope")


def test_reads(load: Load) -> None:
    text = (
        "key: k\nname: K\nenrollment:\n  trigger: criteria\n"
        "  criteria: {any: [{property: stage, op: eq, value: lead}, {in_list: webinar}]}\n"
        "  reenroll: {properties: [stage], events: [form_submitted], lists: [vip]}\n"
        "actions:\n"
        "  - id: b\n    type: branch\n"
        "    branches: [{name: hot, when: {property: score, op: gt, value: 5}, next: end}]\n"
        "  - {id: w, type: wait_for_event, event: email_clicked}\n"
        "goal:\n  criteria: {all: [{event: demo_booked}, {not: {in_list: churned}}]}\n"
        "settings:\n  unenroll_when: {property: unsubscribed, op: known}\n"
    )
    reads = load(text, header=False).reads()
    assert reads == ConditionReads(
        properties=frozenset({"stage", "score", "unsubscribed"}),
        lists=frozenset({"webinar", "vip", "churned"}),
        events=frozenset({"form_submitted", "demo_booked", "email_clicked"}),
    )


def test_condition_reads_of_one_condition(load: Load) -> None:
    definition = load(
        doc(
            "enrollment:\n  trigger: criteria\n  criteria:\n    not:\n      any:\n"
            "        - {not_in_list: a}\n        - {event: e, where: {k: v}, within: 3d}\n"
        ),
        header=False,
    )
    assert definition.enrollment.criteria is not None
    assert condition_reads(definition.enrollment.criteria) == ConditionReads(
        lists=frozenset({"a"}), events=frozenset({"e"})
    )
