"""`describe_condition`: a condition in words, one line, every operator, clipped on request."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from crmflow.conditions import describe_condition
from crmflow.definitions import Condition, PropertyOp

_CONDITION: TypeAdapter[Any] = TypeAdapter(Condition)

CASES: list[tuple[dict[str, Any], str]] = [
    ({"property": "lifecycle_stage", "op": "eq", "value": "lead"}, 'lifecycle_stage = "lead"'),
    ({"property": "seats", "op": "neq", "value": 10}, "seats != 10"),
    ({"property": "vip", "op": "eq", "value": True}, "vip = true"),
    ({"property": "plan", "op": "in", "value": ["gold", 3]}, 'plan in ("gold", 3)'),
    ({"property": "plan", "op": "not_in", "value": ["won", "lost"]}, 'plan not in ("won", "lost")'),
    ({"property": "name", "op": "contains", "value": "acme"}, 'name contains "acme"'),
    ({"property": "name", "op": "not_contains", "value": "x"}, 'name does not contain "x"'),
    ({"property": "email", "op": "starts_with", "value": "ann"}, 'email starts with "ann"'),
    ({"property": "email", "op": "ends_with", "value": "@a.io"}, 'email ends with "@a.io"'),
    ({"property": "seats", "op": "gt", "value": 10}, "seats > 10"),
    ({"property": "seats", "op": "gte", "value": 1.5}, "seats >= 1.5"),
    ({"property": "seats", "op": "lt", "value": "2026-01-05"}, "seats < 2026-01-05"),
    ({"property": "seats", "op": "lte", "value": -3}, "seats <= -3"),
    ({"property": "seats", "op": "between", "value": [10, 100]}, "seats between 10 and 100"),
    (
        {"property": "signed", "op": "between", "value": ["2026-01-01", "2026-02-01T10:00Z"]},
        "signed between 2026-01-01 and 2026-02-01T10:00Z",
    ),
    ({"property": "email", "op": "known"}, "email is known"),
    ({"property": "email", "op": "unknown"}, "email is unknown"),
    ({"property": "renewal", "op": "before", "value": "2027-01-01"}, "renewal before 2027-01-01"),
    ({"property": "signup", "op": "after", "value": "-30d"}, "signup after 30d ago"),
    ({"property": "renewal", "op": "before", "value": "+P1DT12H"}, "renewal before 1d12h from now"),
    ({"property": "renewal", "op": "after", "value": "0s"}, "renewal after now"),
    ({"property": "last_seen", "op": "within_last", "value": "1w"}, "last_seen in the last 7d"),
    ({"property": "seen", "op": "more_than_ago", "value": "90d"}, "seen more than 90d ago"),
    ({"in_list": "webinar"}, "in list webinar"),
    ({"not_in_list": "do not contact"}, 'not in list "do not contact"'),
    ({"event": "form_submitted", "within": "30d"}, "has done form_submitted in the last 30d"),
    (
        {"event": "page viewed", "where": {"page": "/pricing", "utm source": None}, "min_count": 3},
        'has done "page viewed" (page = "/pricing", "utm source" is unknown) at least 3 times',
    ),
    ({"not": {"event": "email_opened"}}, "has not done email_opened"),
    ({"not": {"in_list": "vip"}}, "not in list vip"),
    ({"not": {"property": "stage", "op": "eq", "value": "won"}}, 'not (stage = "won")'),
    (
        {
            "all": [
                {"property": "lifecycle_stage", "op": "eq", "value": "lead"},
                {"property": "seats", "op": "gt", "value": 10},
            ]
        },
        'lifecycle_stage = "lead" and seats > 10',
    ),
    (
        {
            "any": [
                {"all": [{"in_list": "a"}, {"in_list": "b"}]},
                {"all": [{"in_list": "c"}]},
                {"not": {"any": [{"in_list": "d"}, {"in_list": "e"}]}},
            ]
        },
        "(in list a and in list b) or in list c or not (in list d or in list e)",
    ),
]


@pytest.mark.parametrize(("data", "expected"), CASES, ids=[text for _, text in CASES])
def test_describes_condition(data: dict[str, Any], expected: str) -> None:
    assert describe_condition(_CONDITION.validate_python(data)) == expected


def test_cases_cover_every_operator() -> None:
    used = {data["op"] for data, _ in CASES if "property" in data}
    assert used == {op.value for op in PropertyOp}


def test_text_values_stay_on_one_line() -> None:
    condition = _CONDITION.validate_python(
        {"property": "note", "op": "eq", "value": "two\nlines\u2028and\x85more  spaces"}
    )
    text = describe_condition(condition)
    assert text.splitlines() == [text]
    assert text == 'note = "two\\nlines and more spaces"'


def test_clips_to_limit_with_ellipsis() -> None:
    condition = _CONDITION.validate_python(
        {"all": [{"property": f"p{i}", "op": "known"} for i in range(20)]}
    )
    full = describe_condition(condition)
    clipped = describe_condition(condition, limit=30)
    assert len(full) > 30
    assert len(clipped) <= 30
    assert clipped.endswith("…")
    assert full.startswith(clipped[:-1])
    assert describe_condition(condition, limit=len(full)) == full
