"""The input rules every entry point shares (`crmflow.definitions._names`): record ids, object
types, workflow keys, list, event and property names, property values and sizes."""

from __future__ import annotations

import json
import math
import unicodedata
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crmflow.definitions import (
    InvalidInput,
    check_event_name,
    check_event_properties,
    check_list_name,
    check_object_type,
    check_properties,
    check_property_name,
    check_record_id,
    check_record_size,
    check_storable,
    check_value,
    check_workflow_key,
    parse_json,
    shown,
)


@pytest.mark.parametrize(
    "record_id",
    ["ann", "a", "0042", "ann@example.com", "urn:crm:contact:7", "Zoë Ñúñez", "x" * 255, "a b"],
)
def test_record_ids_users_choose_are_accepted(record_id: str) -> None:
    assert check_record_id(record_id) == record_id


@pytest.mark.parametrize(
    ("record_id", "message"),
    [
        ("", "record id is empty"),
        ("x" * 256, "256 characters long: at most 255"),
        ("\U0001f600" * 129, "516 bytes in UTF-8: at most 512"),
        (" ann", "starts or ends with white space"),
        ("ann\u00a0", "starts or ends with white space"),
        ("a\x00b", "U+0000, a control character"),
        ("a\nb", "U+000A, a control character"),
        ("a\x85b", "U+0085, a control character"),
        ("a\u2028b", "U+2028, a line separator"),
        ("a\udcffb", "U+DCFF, a lone surrogate"),
        (7, "must be text"),
    ],
)
def test_record_ids_refused(record_id: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match="record id") as refused:
        check_record_id(record_id)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


def test_the_longest_record_id_fits_a_temporal_workflow_id() -> None:
    """KEY:OBJECT_TYPE:ID:N stays under Temporal's 1,000 bytes, and the id under the 2,048
    bytes of a search attribute value once JSON-escaped (measured on the dev server)."""
    longest = check_record_id("\u00e9" * 255)  # 510 bytes, 6 escaped bytes each
    workflow_id = f"{'k' * 64}:{'o' * 64}:{longest}:{2**31}"
    assert len(workflow_id.encode()) < 1000
    assert len(json.dumps(check_record_id("\U0001f600" * 128))) <= 2048


@pytest.mark.parametrize(
    ("check", "good", "bad"),
    [
        (
            check_object_type,
            ["contact", "deal", "support_ticket", "a" * 64],
            ["Contact", "1a", "a-b", "a b", "", "a" * 65, "contact\n", "_x", "déal"],
        ),
        (
            check_workflow_key,
            ["onboarding", "lead-nurture-2", "k" * 64],
            ["Onboarding", "a_b", "", "k" * 65, "key\n", "-x"],
        ),
        (
            check_property_name,
            ["email", "lifecycle_stage", "hs.score", "utm-source", "_x", "Score2"],
            ["First Name", "1st", ".x", "-x", "", "p" * 129, "a$b", "\ufeffid", "é"],
        ),
        (
            check_list_name,
            ["webinar", "Do not contact", "VIP 2027 (EU)", "l" * 128],
            ["", " x", "x ", "a\nb", "a\tb", "l" * 129],
        ),
        (
            check_event_name,
            ["form_submitted", "Email opened", "e" * 128],
            ["", "e" * 129, "a\x00b", "opened\n"],
        ),
    ],
)
def test_name_rules(check: Any, good: list[str], bad: list[str]) -> None:
    for value in good:
        assert check(value) == value
    for value in bad:
        with pytest.raises(InvalidInput):
            check(value)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -(2**63),
        2**63 - 1,
        1.5,
        -0.0,
        1e308,
        "",
        "x" * 65_536,
        "line\nbreak\ttab",
        "Zoë 😀",
    ],
)
def test_values_accepted(value: Any) -> None:
    assert check_value(value) == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (math.nan, "no NaN or Infinity"),
        (math.inf, "no NaN or Infinity"),
        (2**63, "out of range (signed 64-bit"),
        (-(2**63) - 1, "out of range (signed 64-bit"),
        ("x" * 65_537, "65,537 characters long: at most 65,536"),
        ("a\x00b", "NUL"),
        ("\ud800", "lone surrogate U+D800"),
        ([1], "not a list or object"),
        ({"a": 1}, "not a list or object"),
    ],
)
def test_values_refused(value: Any, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_value(value)
    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("NaN", "NaN is not a number JSON allows"),
        ("-Infinity", "-Infinity is not a number JSON allows"),
        ("1e999", "the number 1e999 is out of range"),
        ("-2.5e400", "out of range"),
        ("9223372036854775808", "the integer 9223372036854775808 is out of range"),
        ("1" * 5000, "is out of range"),  # int() refuses over 4,300 digits: decided before
        ('"\\udfff"', "lone surrogate"),
        ('"a\\u0000"', "NUL"),
    ],
)
def test_strict_json_leaves_markers_that_values_refuse(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_value(parse_json(text))
    assert message in str(refused.value)
    assert len(str(refused.value)) < 200


def test_strict_json_keeps_what_json_means() -> None:
    assert parse_json('{"id": "007", "n": 2, "f": 2.5, "b": true, "z": null}') == {
        "id": "007",
        "n": 2,
        "f": 2.5,
        "b": True,
        "z": None,
    }
    assert parse_json("-9223372036854775808") == -(2**63)
    assert parse_json("1e-999") == 0.0  # underflow is a number, overflow is not
    with pytest.raises(InvalidInput, match="key 'x' appears twice"):
        parse_json('{"x": 1, "x": 2}')
    with pytest.raises(json.JSONDecodeError):
        parse_json("{'x': 1}")


def test_properties_name_the_property() -> None:
    assert check_properties({"seats": 12}) == {"seats": 12}
    with pytest.raises(InvalidInput, match=r"property 'score': nan is not a number"):
        check_properties({"score": math.nan})
    with pytest.raises(InvalidInput, match="property name 'First Name'"):
        check_properties({"First Name": "Ann"})


def test_sizes() -> None:
    check_record_size({f"p{n}": "x" * 60_000 for n in range(17)})  # 1,020,000 bytes and keys
    with pytest.raises(InvalidInput, match="at most 1,048,576"):
        check_record_size({f"p{n}": "x" * 60_000 for n in range(18)})
    check_event_properties({f"p{n}": "x" * 60_000 for n in range(4)})
    with pytest.raises(InvalidInput, match="at most 262,144"):
        check_event_properties({f"p{n}": "x" * 60_000 for n in range(5)})
    with pytest.raises(InvalidInput, match="at most 262,144"):
        check_event_properties({"p": "\U0001f600" * 65_536})  # counted in UTF-8 bytes


def test_storable_is_what_any_writer_must_respect() -> None:
    check_storable({"First Name": "x" * 100_000, "n": 2**70, "list": [1, {"a": "b"}]})
    for values in (
        {"x": math.nan},
        {"x": [1, math.inf]},
        {"x": {"y": "a\x00b"}},
        {"a\x00": 1},
        {"x": "\udc80"},
    ):
        with pytest.raises(InvalidInput):
            check_storable(values)


@given(st.text(max_size=200))
def test_shown_is_one_short_line(value: str) -> None:
    text = shown(value)
    assert "\n" not in text and "\r" not in text and len(text) <= 43
    text.encode("utf-8")  # printable on any UTF-8 terminal: lone surrogates are escaped


@given(st.text())
def test_record_id_rule_is_total(value: str) -> None:
    """Any text is either a valid id (fitting every column and Temporal) or refused with one
    line; nothing else can happen."""
    try:
        check_record_id(value)
    except InvalidInput as exc:
        assert "\n" not in str(exc)
    else:
        assert 1 <= len(value) <= 255 and len(value.encode()) <= 512
        assert value == value.strip()
        assert not {unicodedata.category(c) for c in value} & {"Cc", "Cs", "Zl", "Zp"}
