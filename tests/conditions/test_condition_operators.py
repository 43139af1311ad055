"""Each operator of SPEC §2.1 on chosen values: in Python, then the same cases through SQL.

The table doubles as the reference of the semantics written in `crmflow.conditions`.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta
from typing import Any

import pytest
from condition_helpers import NOW, CondStore, condition, snapshot

from crmflow.conditions import (
    EventSnapshot,
    RecordSnapshot,
    evaluate,
    explain,
)
from crmflow.store import compile_condition

MISSING = object()


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


D30 = timedelta(days=30)
S1 = timedelta(seconds=1)

# (op, operand, stored value or MISSING, expected)
CASES: list[tuple[str, Any, Any, bool]] = [
    # eq: ASCII case-insensitive text; numbers across strings; booleans across "true"/"false"
    ("eq", "lead", "Lead", True),
    ("eq", "lead", "LEAD ", False),
    ("eq", "lead", MISSING, False),
    ("eq", "lead", None, False),
    ("eq", "straße", "STRAßE", True),
    ("eq", "é", "É", False),
    ("eq", 120, "120", True),
    ("eq", 120, "120.0", True),
    ("eq", 120, 120.0, True),
    ("eq", "120", 120, True),
    ("eq", "120", "120.0", False),
    ("eq", "02134", "2134", False),
    ("eq", 12, " 12", False),
    ("eq", 12, "+12", False),
    ("eq", 12, "1.2e1", False),
    ("eq", 1.5, 1.5, True),
    ("eq", True, True, True),
    ("eq", True, "TRUE", True),
    ("eq", "true", True, True),
    ("eq", False, False, True),
    ("eq", False, True, False),
    ("eq", True, 1, False),
    ("eq", 1, True, False),
    ("eq", "x", ["x"], False),
    ("eq", 10**400, 10**400, False),  # beyond ±1e308 numbers are not comparable
    ("neq", "lead", MISSING, True),
    ("neq", "lead", "LEAD", False),
    ("neq", "lead", "customer", True),
    ("neq", 5, ["x"], True),
    # in / not_in: any element, with eq semantics
    ("in", ["a", 2, True], "A", True),
    ("in", ["a", 2, True], "2", True),
    ("in", ["a", 2, True], 2.0, True),
    ("in", ["a", 2, True], "true", True),
    ("in", ["a", 2, True], "b", False),
    ("in", ["a", 2, True], MISSING, False),
    ("not_in", ["a"], MISSING, True),
    ("not_in", ["a"], "A", False),
    ("not_in", ["a"], "b", True),
    # string operators: strings only
    ("contains", "ead", "LEAD", True),
    ("contains", "12", 3120, False),
    ("contains", "x", MISSING, False),
    ("not_contains", "x", MISSING, True),
    ("not_contains", "12", 3120, True),
    ("not_contains", "ead", "lEaD", False),
    ("starts_with", "ann@", "Ann@example.com", True),
    ("starts_with", "ann@", "an", False),
    ("starts_with", "ann@", "x Ann@", False),
    ("ends_with", "@EXAMPLE.com", "ann@example.COM", True),
    ("ends_with", "abc", "bc", False),
    ("ends_with", "1", 11, False),
    # order on numbers, also numeric strings
    ("gt", 99, "120", True),
    ("gt", 99, 99, False),
    ("gt", 99, "abc", False),
    ("gt", 99, True, False),
    ("gt", 99, MISSING, False),
    ("gt", 99, "2026-01-05", False),
    ("gt", -1, "-0.5", True),
    ("gte", 99, 99, True),
    ("gte", 99, "98.999", False),
    ("lt", 100, "99.5", True),
    ("lt", 100, 100, False),
    ("lte", 100, 100.0, True),
    ("lte", 100, "1.", False),
    # order on dates: a date alone is a whole UTC day; no offset means UTC
    ("gt", "2026-01-05", "2026-01-05T23:59:59Z", False),
    ("gt", "2026-01-05", "2026-01-06", True),
    ("gt", "2026-01-05", "2026-01-05T23:00:00-05:00", True),
    ("gt", "2026-01-05", 20260106, False),
    ("gt", "2026-01-05T12:00:00Z", "2026-01-05T12:00:00.999Z", False),
    ("gte", "2026-01-05", "2026-01-05T00:00:00Z", True),
    ("gte", "2026-01-05T12:00:00Z", "2026-01-05T12:00:00.999Z", True),
    ("gte", "2026-01-05T12:00:00.9Z", "2026-01-05T12:00:00", True),
    ("lt", "2026-01-05", "2026-01-04T23:59:59", True),
    ("lt", "2026-01-05", "2026-01-05", False),
    ("lte", "2026-01-05", "2026-01-05T23:59:59.999Z", True),
    ("lte", "2026-01-05T12:00:00+01:00", "2026-01-05T11:00:00Z", True),
    ("lte", "2026-01-05T12:00:00+01:00", "2026-01-05 11:00:01", False),
    # between: inclusive, numbers or dates
    ("between", [1, 10], "10", True),
    ("between", [1, 10], 1, True),
    ("between", [1, 10], 0.5, False),
    ("between", [10, 1], 5, False),
    ("between", ["2026-01-01", "2026-01-31"], "2026-01-31T23:59:59Z", True),
    ("between", ["2026-01-01", "2026-01-31"], "2026-02-01", False),
    ("between", ["2026-01-01T10:00Z", "2026-01-01T11:00Z"], "2026-01-01T11:00:00.5Z", True),
    ("between", ["2026-01-01T10:00Z", "2026-01-01T11:00Z"], "2026-01-01T11:00:01Z", False),
    # known / unknown: any non-null value, even an empty string or a list
    ("known", None, "", True),
    ("known", None, False, True),
    ("known", None, ["x"], True),
    ("known", None, {"a": 1}, True),
    ("known", None, MISSING, False),
    ("known", None, None, False),
    ("unknown", None, MISSING, True),
    ("unknown", None, None, True),
    ("unknown", None, "", False),
    # before / after: ISO dates, or signed durations from now
    ("after", "-30d", iso(NOW - D30 + S1), True),
    ("after", "-30d", iso(NOW - D30), False),
    ("before", "-30d", iso(NOW - D30 - S1), True),
    ("before", "-30d", iso(NOW - D30), False),
    ("before", "+1d", iso(NOW), True),
    ("after", "1h", iso(NOW + timedelta(hours=2)), True),
    ("before", "2026-01-05", "2026-01-04", True),
    ("before", "2026-01-05", "2026-01-04T23:59:59.999999Z", True),
    ("before", "2026-01-05", "2026-01-05T00:30:00+01:00", True),
    ("after", "2000-01-01", "2026-01-05 10:30", True),
    ("after", "2000-01-01", "2026-01-05T10:30+0530", True),
    ("after", "2000-01-01", "9999-12-31T23:59:59-23:59", True),
    ("before", "2000-01-01", "0001-01-01T00:00+23:59", True),
    # not dates: wrong shapes and impossible dates or times
    ("after", "2000-01-01", "not a date", False),
    ("after", "2000-01-01", "2026-02-30", False),
    ("after", "2000-01-01", "2023-02-29", False),
    ("after", "2000-01-01", "2024-02-29", True),
    ("after", "2000-01-01", "2026-04-31T10:00Z", False),
    ("after", "2000-01-01", "2026-13-01", False),
    ("after", "2000-01-01", "2026-00-10", False),
    ("after", "2000-01-01", "2026-01-00", False),
    ("after", "2000-01-01", "2026-01-05T24:00", False),
    ("after", "2000-01-01", "2026-01-05T23:60", False),
    ("after", "2000-01-01", "2026-01-05T23:59:60", False),
    ("after", "2000-01-01", "2026-01-05T10:00+24:00", False),
    ("after", "2000-01-01", "2026-01-05Z", False),
    ("after", "2000-01-01", "2026-01-05T10:30:00.", False),
    ("after", "2000-01-01", "2026-01-05T10:30.5", False),
    ("after", "2000-01-01", "2026-01-05t10:30", False),
    ("after", "2000-01-01", "2026-1-5", False),
    ("after", "2000-01-01", " 2026-01-05", False),
    ("after", "2000-01-01", "2026-01-05T10:30:00+05", False),
    ("before", "2000-01-01", "0000-01-01", False),
    # within_last: in [now - N, now], to the second; more_than_ago: before now - N
    ("within_last", "30d", iso(NOW - D30), True),
    ("within_last", "30d", iso(NOW - D30 - S1), False),
    ("within_last", "30d", iso(NOW), True),
    ("within_last", "30d", iso(NOW + S1), False),
    ("within_last", "30d", "2026-03-01", True),
    ("within_last", "30d", MISSING, False),
    ("within_last", "PT0.5S", iso(NOW), True),
    ("more_than_ago", "30d", iso(NOW - D30 - S1), True),
    ("more_than_ago", "30d", iso(NOW - D30), False),
    ("more_than_ago", "30d", MISSING, False),
    ("more_than_ago", "1w", "2026-02-22", True),
]


def case_condition(op: str, operand: Any) -> Any:
    data: dict[str, Any] = {"property": "p", "op": op}
    if operand is not None:
        data["value"] = operand
    return condition(data)


def case_record(value: Any) -> RecordSnapshot:
    return snapshot("r", {} if value is MISSING else {"p": value})


def case_id(case: tuple[str, Any, Any, bool]) -> str:
    op, operand, value, _ = case
    shown = "missing" if value is MISSING else repr(value)
    return f"{op} {operand!r:.30} on {shown:.30}"


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_operator_in_python(case: tuple[str, Any, Any, bool]) -> None:
    op, operand, value, expected = case
    cond, record = case_condition(op, operand), case_record(value)
    assert evaluate(cond, record, now=NOW) is expected
    assert explain(cond, record, now=NOW).holds is expected


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_operator_in_sql(store: CondStore, case: tuple[str, Any, Any, bool]) -> None:
    op, operand, value, expected = case
    store.load([case_record(value)])
    assert store.matching(case_condition(op, operand)) == ({"r"} if expected else set())


# Trees, lists and events, on a few records.
WORLD = [
    snapshot(
        "ann",
        {"stage": "lead", "score": 80},
        lists=frozenset({"webinar"}),
        events=[
            EventSnapshot(
                name="form_submitted",
                occurred_at=NOW - timedelta(days=2),
                properties={"form": "Demo", "page": "/pricing"},
            ),
            EventSnapshot(
                name="form_submitted",
                occurred_at=NOW - timedelta(days=40),
                properties={"form": "newsletter"},
            ),
            EventSnapshot(name="email_opened", occurred_at=NOW - D30, properties={}),
        ],
    ),
    snapshot(
        "bob",
        {"stage": "customer", "score": "95"},
        lists=frozenset({"webinar", "do-not-contact"}),
        events=[
            EventSnapshot(
                name="form_submitted",
                occurred_at=NOW - timedelta(hours=1),
                properties={"form": "demo", "page": None},
            ),
        ],
    ),
    snapshot(
        "cy",
        {},
        events=[
            EventSnapshot(
                name="form_submitted",
                occurred_at=NOW - timedelta(days=400),
                properties={'ü"k': "Ja", "page": "/"},
            ),
        ],
    ),
]

TREE_CASES: list[tuple[Any, set[str]]] = [
    ({"all": [{"property": "stage", "op": "eq", "value": "lead"}]}, {"ann"}),
    (
        {
            "any": [
                {"property": "stage", "op": "eq", "value": "lead"},
                {"property": "score", "op": "gt", "value": 90},
            ]
        },
        {"ann", "bob"},
    ),
    ({"not": {"property": "stage", "op": "eq", "value": "lead"}}, {"bob", "cy"}),
    ({"not": {"property": "score", "op": "lt", "value": 90}}, {"bob", "cy"}),
    (
        {
            "all": [
                {"property": "score", "op": "known"},
                {"not": {"any": [{"in_list": "do-not-contact"}, {"in_list": "nope"}]}},
            ]
        },
        {"ann"},
    ),
    ({"in_list": "webinar"}, {"ann", "bob"}),
    ({"not_in_list": "webinar"}, {"cy"}),
    ({"in_list": "unknown-list"}, set()),
    ({"event": "form_submitted"}, {"ann", "bob", "cy"}),
    ({"not": {"event": "form_submitted", "within": "30d"}}, {"cy"}),
    ({"not": {"event": "email_opened"}}, {"bob", "cy"}),
    ({"event": "form_submitted", "min_count": 2}, {"ann"}),
    ({"event": "form_submitted", "within": "30d", "min_count": 2}, set()),
    ({"event": "form_submitted", "within": "1d"}, {"bob"}),
    ({"event": "email_opened", "within": "30d"}, {"ann"}),  # occurred exactly now - 30d
    ({"event": "email_opened", "within": "P29DT23H59M59.999999S"}, set()),
    ({"event": "form_submitted", "where": {"form": "DEMO"}}, {"ann", "bob"}),
    ({"event": "form_submitted", "where": {"form": "demo", "page": "/pricing"}}, {"ann"}),
    ({"event": "form_submitted", "where": {"page": None}}, {"ann", "bob"}),  # ann: 2nd event
    ({"event": "form_submitted", "where": {"form": "demo", "page": None}}, {"bob"}),
    ({"event": "Form_Submitted"}, set()),
    ({"event": "form_submitted", "where": {'ü"k': "ja"}}, {"cy"}),
    ({"event": "form_submitted", "where": {'ü"k': None, "page": "/PRICING"}}, {"ann"}),
]


@pytest.mark.parametrize("data, expected", TREE_CASES, ids=[str(c[0]) for c in TREE_CASES])
def test_tree_in_python(data: Any, expected: set[str]) -> None:
    cond = condition(data)
    assert {r.id for r in WORLD if evaluate(cond, r, now=NOW)} == expected
    assert {r.id for r in WORLD if explain(cond, r, now=NOW).holds} == expected


@pytest.mark.parametrize("data, expected", TREE_CASES, ids=[str(c[0]) for c in TREE_CASES])
def test_tree_in_sql(store: CondStore, data: Any, expected: set[str]) -> None:
    store.load(WORLD)
    assert store.matching(condition(data)) == expected


def test_select_matching_filters_the_object_type(store: CondStore) -> None:
    company = RecordSnapshot(object_type="company", id="acme", properties={"stage": "lead"})
    store.load([*WORLD, company])
    assert store.matching(condition({"property": "stage", "op": "known"})) == {"ann", "bob"}


def test_now_must_be_aware() -> None:
    cond = condition({"property": "p", "op": "eq", "value": 1})
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate(cond, case_record(1), now=datetime(2026, 1, 1))


def test_explain_says_why() -> None:
    cond = condition(
        {
            "all": [
                {"property": "stage", "op": "eq", "value": "lead"},
                {"property": "email", "op": "known"},
                {"not": {"in_list": "do-not-contact"}},
                {
                    "event": "form_submitted",
                    "where": {"form": "demo"},
                    "within": "7d",
                    "min_count": 2,
                },
            ]
        }
    )
    explanation = explain(cond, WORLD[1], now=NOW)
    assert not explanation.holds
    assert explanation.render() == "\n".join(
        [
            "all: false",
            '  stage eq "lead": false (value is "customer")',
            "  email known: false (no value)",
            "  not: false",
            "    in list do-not-contact: true",
            '  event form_submitted where {"form": "demo"} within 7d at least 2 times: false'
            " (1 matching event)",
        ]
    )


def test_compile_refuses_other_databases() -> None:
    with pytest.raises(ValueError, match="sqlite and postgresql"):
        compile_condition(condition({"in_list": "x"}), now=NOW, dialect_name="mysql")


def test_evaluation_imports_no_sqlalchemy() -> None:
    # Workflows evaluate conditions inside the Temporal sandbox: no database code may come along.
    code = (
        "import sys, crmflow.conditions as c; "
        "from datetime import datetime, UTC; "
        "from crmflow.definitions._conditions import InListFilter; "
        "c.evaluate(InListFilter(in_list='x'), "
        "c.RecordSnapshot(object_type='contact', id='1'), now=datetime.now(UTC)); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'psycopg')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
