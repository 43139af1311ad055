from __future__ import annotations

from datetime import datetime, time, timedelta

import pytest
from pydantic import TypeAdapter, ValidationError

from crmflow.definitions import (
    Action,
    AddToListAction,
    BranchAction,
    ClearPropertyAction,
    CopyPropertyAction,
    CreateRecordAction,
    CreateTaskAction,
    CustomAction,
    DelayAction,
    EnrollInWorkflowAction,
    IncrementPropertyAction,
    NotifyAction,
    PropertyFilter,
    RemoveFromListAction,
    SendEmailAction,
    SetPropertyAction,
    SplitAction,
    UnenrollFromWorkflowAction,
    ValueBranchAction,
    WaitForEventAction,
    WebhookAction,
)

ACTION = TypeAdapter(Action)

# (action, expected class, expected summary)
EVERY_ACTION = [
    ({"type": "delay", "duration": "2d"}, DelayAction, "delay 2d"),
    (
        {"type": "wait_for_event", "event": "email_opened", "timeout": "3d", "on_timeout": "end"},
        WaitForEventAction,
        "wait_for_event email_opened (timeout 3d)",
    ),
    (
        {
            "type": "branch",
            "branches": [{"name": "vip", "when": {"in_list": "vip"}, "next": "end"}],
        },
        BranchAction,
        "branch vip | otherwise",
    ),
    (
        {"type": "value_branch", "property": "plan", "cases": {"gold": "end"}},
        ValueBranchAction,
        "value_branch plan (1 case)",
    ),
    (
        {
            "type": "split",
            "paths": [{"percent": 50, "next": "end"}, {"percent": 50, "next": "end"}],
        },
        SplitAction,
        "split 50% / 50%",
    ),
    (
        {"type": "set_property", "property": "lifecycle_stage", "value": "lead"},
        SetPropertyAction,
        'set_property lifecycle_stage = "lead"',
    ),
    (
        {"type": "copy_property", "from": "email", "to": "backup_email"},
        CopyPropertyAction,
        "copy_property email -> backup_email",
    ),
    ({"type": "clear_property", "property": "score"}, ClearPropertyAction, "clear_property score"),
    (
        {"type": "increment_property", "property": "score", "by": -2},
        IncrementPropertyAction,
        "increment_property score -2",
    ),
    ({"type": "add_to_list", "list": "webinar"}, AddToListAction, "add_to_list webinar"),
    (
        {"type": "remove_from_list", "list": "webinar"},
        RemoveFromListAction,
        "remove_from_list webinar",
    ),
    (
        {"type": "send_email", "subject": "Welcome, {{ record.firstname }}", "body": "Hi"},
        SendEmailAction,
        'send_email "Welcome, {{ record.firstname }}"',
    ),
    (
        {"type": "notify", "to": "sales@example.com", "subject": "New lead", "body": "See"},
        NotifyAction,
        'notify sales@example.com "New lead"',
    ),
    (
        {"type": "create_task", "title": "Call", "due_in": "1d", "assignee": "{{ record.owner }}"},
        CreateTaskAction,
        'create_task "Call"',
    ),
    (
        {"type": "create_record", "object_type": "deal", "properties": {"amount": 100}},
        CreateRecordAction,
        "create_record deal",
    ),
    (
        {"type": "webhook", "url": "https://example.com/hook"},
        WebhookAction,
        "webhook POST https://example.com/hook",
    ),
    (
        {"type": "enroll_in_workflow", "workflow": "nurture"},
        EnrollInWorkflowAction,
        "enroll_in_workflow nurture",
    ),
    (
        {"type": "unenroll_from_workflow", "workflows": ["a", "b"]},
        UnenrollFromWorkflowAction,
        "unenroll_from_workflow a, b",
    ),
    (
        {"type": "custom", "handler": "crm.sync", "params": {"x": [1, None]}},
        CustomAction,
        "custom crm.sync",
    ),
]


def action(**fields: object) -> Action:
    return ACTION.validate_python({"id": "a", **fields})


def errors(**fields: object) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        action(**fields)
    return [str(e["msg"]) for e in caught.value.errors()]


@pytest.mark.parametrize(("fields", "cls", "summary"), EVERY_ACTION, ids=lambda v: str(v)[:20])
def test_every_action_type_parses(fields: dict, cls: type, summary: str) -> None:
    parsed = action(**fields)
    assert type(parsed) is cls
    assert parsed.type == fields["type"]
    assert parsed.summary() == summary
    dumped = parsed.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert list(dumped)[:2] == ["id", "type"]
    assert ACTION.validate_python(dumped) == parsed


def test_every_action_type_is_covered() -> None:
    assert {f["type"] for f, _, _ in EVERY_ACTION} == {
        cls.model_fields["type"].default for cls in ACTION_CLASSES
    }


ACTION_CLASSES = [cls for _, cls, _ in EVERY_ACTION]


def test_actions_built_in_python_need_no_type() -> None:
    delay = DelayAction(id="wait", duration=timedelta(days=1))
    assert delay.type == "delay"
    assert delay.summary() == "delay 1d"


def test_summary_is_clipped() -> None:
    long = action(type="send_email", subject="x" * 300, body="b")
    assert len(long.summary()) == 100
    assert long.summary().endswith("…")


# ------------------------------------------------------------------------------ delay


@pytest.mark.parametrize(
    ("fields", "kind", "summary"),
    [
        ({"duration": "1d12h"}, "duration", "delay 1d12h"),
        (
            {"until_date": "2026-12-01T09:00:00+01:00"},
            "until_date",
            "delay until 2026-12-01T09:00:00+01:00",
        ),
        ({"until_property": "renewal_date"}, "until_property", "delay until renewal_date"),
        (
            {"until_property": "renewal_date", "offset": "-7d", "at": "09:00"},
            "until_property",
            "delay until renewal_date -7d at 09:00",
        ),
        (
            {"until_property": "renewal_date", "offset": "+1d"},
            "until_property",
            "delay until renewal_date +1d",
        ),
        ({"until_weekday": ["mon", "thu"], "at": "09:00"}, "until_weekday", None),
        ({"until_time": {"at": "09:00"}}, "until_time", "delay until 09:00"),
        ({"until_time": "09:00"}, "until_time", "delay until 09:00"),
    ],
)
def test_delay_forms(fields: dict, kind: str, summary: str | None) -> None:
    delay = action(type="delay", **fields)
    assert isinstance(delay, DelayAction)
    assert delay.kind == kind
    if summary:
        assert delay.summary() == summary


def test_delay_until_time_both_spellings_are_equal() -> None:
    long = action(type="delay", until_time={"at": "09:30"})
    short = action(type="delay", until_time="09:30")
    assert long == short
    assert isinstance(long, DelayAction)
    assert long.until_time == time(9, 30)
    assert long.model_dump(mode="json", exclude_none=True)["until_time"] == "09:30"


def test_delay_values() -> None:
    delay = action(type="delay", until_weekday=["thu", "mon"], at="09:00")
    assert isinstance(delay, DelayAction)
    assert delay.weekdays() == [0, 3]
    assert delay.at == time(9)
    dated = action(type="delay", until_date="2026-12-01")
    assert isinstance(dated, DelayAction)
    assert dated.until_date == datetime(2026, 12, 1)
    offset = action(type="delay", until_property="d", offset="-1d")
    assert isinstance(offset, DelayAction)
    assert offset.offset == timedelta(days=-1)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "a delay needs exactly one of duration, until_date, until_property"),
        ({"duration": "1d", "until_time": "09:00"}, "(duration, until_time)"),
        ({"duration": "0s"}, "duration must be positive"),
        ({"duration": "-1d"}, "cannot be signed"),
        ({"duration": "1d", "offset": "1d"}, "offset is only used with until_property"),
        ({"duration": "1d", "at": "09:00"}, "at is only used with until_property or until_weekday"),
        ({"until_time": "09:00", "at": "09:00"}, 'write until_time: "HH:MM"'),
        ({"until_weekday": ["mon"]}, 'until_weekday needs at: "HH:MM"'),
        ({"until_weekday": [], "at": "09:00"}, "at least 1 item"),
        ({"until_weekday": ["mon", "mon"], "at": "09:00"}, "a day is listed twice"),
        ({"until_weekday": ["monday"], "at": "09:00"}, "Input should be"),
        ({"until_time": "9am"}, "invalid time of day"),
        ({"until_time": {"hour": 9}}, 'until_time takes {at: "HH:MM"} or "HH:MM"'),
    ],
)
def test_delay_rejects(fields: dict, message: str) -> None:
    assert any(message in m for m in errors(type="delay", **fields)), errors(type="delay", **fields)


# ------------------------------------------------------------------------ targets


def test_targets_exclude_end_and_fall_through() -> None:
    assert action(type="delay", duration="1d").targets() == []
    assert action(type="delay", duration="1d", next="end").targets() == []
    assert action(type="delay", duration="1d", next="b").targets() == ["b"]
    branch = action(
        type="branch",
        branches=[
            {"name": "one", "when": {"in_list": "x"}, "next": "b"},
            {"name": "two", "when": {"in_list": "y"}, "next": "end"},
        ],
        otherwise="c",
    )
    assert branch.targets() == ["b", "c"]
    assert not branch.falls_through()
    value_branch = action(
        type="value_branch", property="plan", cases={"gold": "g", "silver": "end"}
    )
    assert value_branch.targets() == ["g"]
    assert value_branch.falls_through()
    split = action(type="split", paths=[{"percent": 30, "next": "x"}, {"percent": 70, "next": "y"}])
    assert split.targets() == ["x", "y"]
    assert not split.falls_through()
    wait = action(type="wait_for_event", event="e", timeout="1d", on_timeout="late", next="ok")
    assert wait.targets() == ["ok", "late"]


def test_branch_conditions_are_conditions() -> None:
    branch = action(
        type="branch",
        branches=[
            {"name": "hot", "when": {"property": "score", "op": "gte", "value": 50}, "next": "b"}
        ],
    )
    assert isinstance(branch, BranchAction)
    assert isinstance(branch.branches[0].when, PropertyFilter)


def test_value_branch_keys_become_text() -> None:
    branch = action(type="value_branch", property="seats", cases={10: "a", False: "b", "x": "c"})
    assert isinstance(branch, ValueBranchAction)
    assert branch.cases == {"10": "a", "false": "b", "x": "c"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"type": "branch", "branches": []}, "at least 1 item"),
        (
            {
                "type": "branch",
                "branches": [
                    {"name": f"b{i}", "when": {"in_list": "x"}, "next": "end"} for i in range(21)
                ],
            },
            "at most 20 items",
        ),
        (
            {
                "type": "branch",
                "branches": [{"name": "x", "when": {"in_list": "x"}, "next": "end"}] * 2,
            },
            "two branches are named 'x'",
        ),
        (
            {
                "type": "branch",
                "branches": [{"name": "x", "when": {"in_list": "x"}, "next": "end"}],
                "otherwise": "end",
                "next": "b",
            },
            "never uses 'next'",
        ),
        (
            {
                "type": "value_branch",
                "property": "p",
                "cases": {str(i): "end" for i in range(251)},
            },
            "at most 250 items",
        ),
        ({"type": "value_branch", "property": "p", "cases": {}}, "at least 1 item"),
        ({"type": "value_branch", "property": "p", "cases": {None: "x"}}, "use 'otherwise'"),
        (
            {
                "type": "split",
                "paths": [{"percent": 50, "next": "x"}, {"percent": 40, "next": "y"}],
            },
            "percents must sum to 100, not 90",
        ),
        (
            {
                "type": "split",
                "paths": [{"percent": 0, "next": "x"}, {"percent": 100, "next": "y"}],
            },
            "greater than or equal to 1",
        ),
        (
            {"type": "split", "paths": [{"percent": 100, "next": "x"}], "next": "y"},
            "a split never uses 'next'",
        ),
        ({"type": "wait_for_event", "event": "e", "on_timeout": "x"}, "on_timeout needs a timeout"),
        ({"type": "delay", "duration": "1d", "next": "Bad Id"}, "invalid action reference"),
    ],
)
def test_branching_rules(fields: dict, message: str) -> None:
    found = errors(**fields)
    assert any(message in m for m in found), found


# ------------------------------------------------------------------ other actions


def test_ids() -> None:
    assert action(type="delay", duration="1d").id == "a"
    assert any(
        "'end' cannot be an action id" in m
        for m in errors(id="end", type="clear_property", property="p")
    )
    assert any(
        "invalid action id" in m for m in errors(id="Send", type="clear_property", property="p")
    )


@pytest.mark.parametrize("value", ["lead", "Hi {{ record.firstname }}", 3, 2.5, True, None])
def test_set_property_values(value: object) -> None:
    set_property = action(type="set_property", property="p", value=value)
    assert isinstance(set_property, SetPropertyAction)
    assert set_property.value == value


@pytest.mark.parametrize("value", [[1], {"a": 1}])
def test_set_property_rejects_structures(value: object) -> None:
    assert errors(type="set_property", property="p", value=value) == [
        "Value error, value must be a string, number, boolean or null"
    ]


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "set_property", "property": "p", "value": float("inf")},
        {"type": "increment_property", "property": "p", "by": float("nan")},
        {"type": "webhook", "url": "https://x", "body": {"a": [float("-inf")]}},
    ],
)
def test_numbers_must_be_finite(fields: dict) -> None:
    assert any("is not a finite number" in m for m in errors(**fields))


def test_increment_by() -> None:
    increment = action(type="increment_property", property="score")
    assert isinstance(increment, IncrementPropertyAction)
    assert increment.by == 1
    assert any(
        "expected a number" in m for m in errors(type="increment_property", property="p", by=True)
    )
    assert any(
        "expected a number" in m for m in errors(type="increment_property", property="p", by="3")
    )


def test_webhook_defaults_and_body() -> None:
    hook = action(
        type="webhook",
        url="https://example.com/{{ record.id_number }}",
        headers={"Authorization": "Bearer ${env:CRM_TOKEN}"},
        body={"email": "{{ record.email }}", "tags": ["a", 1, None]},
    )
    assert isinstance(hook, WebhookAction)
    assert hook.method == "POST"
    assert hook.timeout == timedelta(seconds=10)
    assert hook.body == {"email": "{{ record.email }}", "tags": ["a", 1, None]}
    text = action(type="webhook", url="http://x", method="PUT", body="{{ record.email }}")
    assert isinstance(text, WebhookAction)
    assert text.body == "{{ record.email }}"
    # A URL may hold secrets too: resolved in the worker, kept as a placeholder here.
    for url in ("https://x/${env:CRMFLOW_SECRET_A}?k=${env:B}", "${env:CRMFLOW_SECRET_URL}"):
        with_env = action(type="webhook", url=url)
        assert isinstance(with_env, WebhookAction)
        assert with_env.url == url


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"url": "ftp://x"}, "is not an http:// or https:// URL"),
        ({"url": "https://x", "method": "FETCH"}, "Input should be 'GET'"),
        ({"url": "https://x", "body": 3}, "body must be text"),
        (
            {"url": "https://x", "body": {"k": "${env:SECRET}"}},
            "only replaced in webhook URLs and headers",
        ),
        ({"url": "https://x?t=${env:bad-name}"}, "invalid environment variable name"),
        (
            {"url": "https://x", "headers": {"A": "${env:not valid}"}},
            "invalid environment variable",
        ),
        ({"url": "https://x", "timeout": "0s"}, "duration must be positive"),
    ],
)
def test_webhook_rejects(fields: dict, message: str) -> None:
    found = errors(type="webhook", **fields)
    assert any(message in m for m in found), found


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"type": "send_email", "subject": "{{ contact.name }}", "body": "b"},
            "template reads contact",
        ),
        ({"type": "send_email", "subject": "{{ record.x ", "body": "b"}, "template syntax error"),
        (
            {"type": "send_email", "subject": "s", "body": "b", "to": "nobody"},
            "not an email address",
        ),
        ({"type": "notify", "to": "sales", "subject": "s", "body": "b"}, "not an email address"),
        ({"type": "create_task", "title": ""}, "at least 1 character"),
        ({"type": "create_record", "object_type": "Deal"}, "invalid object type"),
        ({"type": "enroll_in_workflow", "workflow": "Not_A_Key"}, "invalid workflow key"),
        ({"type": "unenroll_from_workflow", "workflows": []}, "at least 1 item"),
        ({"type": "add_to_list", "list": ""}, "invalid name"),
        ({"type": "copy_property", "from": "a b", "to": "c"}, "invalid property name"),
    ],
)
def test_other_action_rules(fields: dict, message: str) -> None:
    found = errors(**fields)
    assert any(message in m for m in found), found


def test_templated_recipient_is_allowed() -> None:
    notify = action(type="notify", to="{{ record.owner_email }}", subject="s", body="b")
    assert isinstance(notify, NotifyAction)
