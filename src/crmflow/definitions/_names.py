"""The rules for what users name and store: record ids, object types, workflow keys, list, event
and property names, and property values. One place for every entry point (the CLI today, the
HTTP API next, the store as a last line of defence).

Why these limits: a record id becomes part of a Temporal workflow id (`KEY:OBJECT_TYPE:ID:N`,
which Temporal caps at 1,000 bytes) and of the `CrmflowRecordId` search attribute (2,048 bytes
once JSON-escaped, so up to 3 per UTF-8 byte); every name is a column of the store (object
types 64 characters, ids 255, list and event names 128); a value must mean the same thing to
Python, SQLite's and PostgreSQL's JSON (no NaN or Infinity, integers within signed 64 bits,
text without NUL, which PostgreSQL refuses, and valid Unicode); an event's properties travel in
a Temporal signal (2 MB payload limit).

Each `check_*` function returns the value when it is valid and raises `InvalidInput` otherwise,
with a message that says what is wrong but not where: the caller knows the location (the
argument, the file and line, the request path) and puts it in front.

Pure: no I/O.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Mapping
from typing import Any, NoReturn

from ._types import OBJECT_TYPE_PATTERN, PROPERTY_NAME_PATTERN, WORKFLOW_KEY_PATTERN

OBJECT_TYPE_MAX_LENGTH = 64
WORKFLOW_KEY_MAX_LENGTH = 64
RECORD_ID_MAX_LENGTH = 255
RECORD_ID_MAX_BYTES = 512
"""UTF-8 bytes: keeps the Temporal workflow id under 1,000 bytes and the search attribute under
2,048 escaped bytes whatever the characters."""
NAME_MAX_LENGTH = 128
"""List and event names."""
PROPERTY_NAME_MAX_LENGTH = 128
TEXT_MAX_LENGTH = 65_536
"""Characters of one text value."""
INTEGER_MIN = -(2**63)
INTEGER_MAX = 2**63 - 1
RECORD_PROPERTIES_MAX_BYTES = 1024 * 1024
"""A record's properties, encoded as JSON (UTF-8)."""
EVENT_PROPERTIES_MAX_BYTES = 256 * 1024
"""An event's properties, encoded as JSON: they reach enrollments in a Temporal signal."""

_OBJECT_TYPE = re.compile(OBJECT_TYPE_PATTERN)
_WORKFLOW_KEY = re.compile(WORKFLOW_KEY_PATTERN)
_PROPERTY_NAME = re.compile(PROPERTY_NAME_PATTERN)
# Control characters, lone surrogates, line and paragraph separators: they break terminals,
# logs and one-line messages, and some of them the databases refuse.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_KINDS = {
    "Cc": "a control character",
    "Cs": "a lone surrogate (not valid Unicode)",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}
_SURROGATE = re.compile("[\ud800-\udfff]")


class InvalidInput(ValueError):
    """A name or value that breaks a rule; the message says what is wrong, not where."""


def shown(value: Any, limit: int = 40) -> str:
    """A value as a message quotes it: on one line, with invisible characters escaped, at most
    about `limit` characters long (cut with "…", never inside an escape)."""
    if not isinstance(value, str):
        return _cut(repr(value), limit)
    text = repr(value)
    if len(text) <= limit + 2:
        return text
    kept = ""
    for char in value:
        if len(repr(kept + char)) > limit + 1:
            break
        kept += char
    text = repr(kept)
    return f"{text[:-1]}…{text[-1]}"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _refuse(what: str, value: Any, problem: str) -> NoReturn:
    raise InvalidInput(f"{what} {shown(value)}: {problem}")


def _refused_character(value: str) -> str | None:
    for char in value:
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            return char
    return None


def _check_text_name(
    value: Any, what: str, *, max_length: int, max_bytes: int | None = None
) -> str:
    if not isinstance(value, str):
        _refuse(what, value, "must be text")
    if not value:
        raise InvalidInput(f"{what} is empty")
    if len(value) > max_length:
        _refuse(what, value, f"{len(value):,} characters long: at most {max_length:,}")
    char = _refused_character(value)
    if char is not None:
        _refuse(what, value, f"contains U+{ord(char):04X}, {_KINDS[unicodedata.category(char)]}")
    if value != value.strip():
        _refuse(what, value, "starts or ends with white space")
    if max_bytes is not None and len(value.encode("utf-8")) > max_bytes:
        size = len(value.encode("utf-8"))
        _refuse(what, value, f"{size:,} bytes in UTF-8: at most {max_bytes:,}")
    return value


def check_record_id(value: Any) -> str:
    """1-255 characters, at most 512 bytes in UTF-8, no control character, no white space at
    either end."""
    return _check_text_name(
        value, "record id", max_length=RECORD_ID_MAX_LENGTH, max_bytes=RECORD_ID_MAX_BYTES
    )


def check_list_name(value: Any) -> str:
    """1-128 characters, no control character, no white space at either end."""
    return _check_text_name(value, "list name", max_length=NAME_MAX_LENGTH)


def check_event_name(value: Any) -> str:
    """1-128 characters, no control character, no white space at either end."""
    return _check_text_name(value, "event name", max_length=NAME_MAX_LENGTH)


def check_event_id(value: Any) -> str:
    """A client's event id (HTTP API): as a record id (1-255 characters, at most 512 bytes in
    UTF-8, no control character, no white space at either end)."""
    return _check_text_name(
        value, "event id", max_length=RECORD_ID_MAX_LENGTH, max_bytes=RECORD_ID_MAX_BYTES
    )


def _check_pattern(
    value: Any, what: str, pattern: re.Pattern[str], hint: str, max_length: int
) -> str:
    if not isinstance(value, str):
        _refuse(what, value, "must be text")
    if not value:
        raise InvalidInput(f"{what} is empty")
    # fullmatch: `$` would also match before a final newline ("contact\n").
    if not pattern.fullmatch(value) or len(value) > max_length:
        _refuse(what, value, f"{hint}, at most {max_length} characters")
    return value


def check_object_type(value: Any) -> str:
    """A lower-case name: `[a-z][a-z0-9_]*`, at most 64 characters (`contact`, `deal`)."""
    return _check_pattern(
        value,
        "object type",
        _OBJECT_TYPE,
        "use a lower-case name such as 'deal' (a-z, then a-z, 0-9 or '_')",
        OBJECT_TYPE_MAX_LENGTH,
    )


def check_workflow_key(value: Any) -> str:
    """As in a definition: `[a-z0-9][a-z0-9-]*`, at most 64 characters."""
    return _check_pattern(
        value,
        "workflow key",
        _WORKFLOW_KEY,
        "use lower-case letters, digits and '-'",
        WORKFLOW_KEY_MAX_LENGTH,
    )


def check_property_name(value: Any) -> str:
    """As in a definition: `[A-Za-z_][A-Za-z0-9_.-]*`, at most 128 characters."""
    return _check_pattern(
        value,
        "property name",
        _PROPERTY_NAME,
        "use letters, digits, '_', '.' and '-', starting with a letter or '_'",
        PROPERTY_NAME_MAX_LENGTH,
    )


# ---------------------------------------------------------------- values


class Unrepresentable:
    """What strict JSON parsing leaves where a number stood that no store can keep (`NaN`,
    `Infinity`, `1e999`, an integer beyond 64 bits): `check_value` refuses it, and the caller
    can say which property held it."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem

    def __repr__(self) -> str:
        return f"Unrepresentable({self.problem!r})"


def _integer(text: str) -> int | Unrepresentable:
    digits = text.lstrip("-")
    # Decided on the digits first: int() of thousands of digits is slow, and Python refuses
    # more than 4,300 of them with a ValueError.
    if len(digits) > 19 or not INTEGER_MIN <= int(text) <= INTEGER_MAX:
        return Unrepresentable(
            f"the integer {_cut(text, 24)} is out of range "
            f"(signed 64-bit: {INTEGER_MIN} to {INTEGER_MAX})"
        )
    return int(text)


def _float(text: str) -> float | Unrepresentable:
    number = float(text)
    if not math.isfinite(number):
        return Unrepresentable(f"the number {_cut(text, 24)} is out of range (a 64-bit float)")
    return number


def _constant(text: str) -> Unrepresentable:
    return Unrepresentable(f"{text} is not a number JSON allows (no NaN or Infinity)")


def _strict_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise InvalidInput(f"key {shown(key)} appears twice")
        found[key] = value
    return found


def parse_json(text: str) -> Any:
    """Parse JSON strictly: a duplicate key raises `InvalidInput`; NaN, Infinity and numbers
    beyond a 64-bit float or a signed 64-bit integer become `Unrepresentable` markers for
    `check_value` to refuse. Invalid JSON raises `json.JSONDecodeError`."""
    return json.loads(
        text,
        parse_int=_integer,
        parse_float=_float,
        parse_constant=_constant,
        object_pairs_hook=_strict_object,
    )


def check_value(value: Any) -> Any:
    """A property value: null, a boolean, an integer within signed 64 bits, a finite float, or
    text of at most 65,536 characters without NUL and with valid Unicode."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, Unrepresentable):
        raise InvalidInput(value.problem)
    if isinstance(value, int):
        if not INTEGER_MIN <= value <= INTEGER_MAX:
            raise InvalidInput(
                f"the integer is out of range (signed 64-bit: {INTEGER_MIN} to {INTEGER_MAX})"
            )
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{value} is not a number JSON allows (no NaN or Infinity)")
        return value
    if isinstance(value, str):
        if len(value) > TEXT_MAX_LENGTH:
            raise InvalidInput(
                f"the text is {len(value):,} characters long: at most {TEXT_MAX_LENGTH:,}"
            )
        if "\x00" in value:
            raise InvalidInput("the text contains a NUL character (U+0000)")
        surrogate = _SURROGATE.search(value)
        if surrogate:
            raise InvalidInput(
                f"the text is not valid Unicode (a lone surrogate U+{ord(surrogate[0]):04X})"
            )
        return value
    if isinstance(value, dict | list | tuple):
        raise InvalidInput(
            "a property holds a string, number, boolean or null, not a list or object"
        )
    raise InvalidInput(f"a property holds a string, number, boolean or null, not {shown(value)}")


def _check_storable(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"{where}: {value} is not a number JSON allows (no NaN or Infinity)")
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidInput(f"{where}: the text contains a NUL character (U+0000)")
        if _SURROGATE.search(value):
            raise InvalidInput(f"{where}: the text is not valid Unicode (a lone surrogate)")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"{where}: the key {shown(key)} is not text")
            _check_storable(key, f"{where}: key {shown(key)}")
            _check_storable(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_storable(item, f"{where}[{index}]")


def check_storable(values: Mapping[str, Any]) -> None:
    """What every store can keep, whoever writes it (a workflow action, a custom handler, an
    import): names and text without NUL (PostgreSQL refuses it) and with valid Unicode, no NaN
    or Infinity (SQLite's JSON functions then fail on every record of the object type), at any
    depth. The stricter rules above are for what users send; this is the store's last line of
    defence."""
    for name, value in values.items():
        if not isinstance(name, str):
            raise InvalidInput(f"the property name {shown(name)} is not text")
        _check_storable(name, f"property name {shown(name)}")
        _check_storable(value, f"property {shown(name)}")


def check_properties(values: Mapping[str, Any]) -> dict[str, Any]:
    """Every name and value of a property map; a problem names the property."""
    for name, value in values.items():
        check_property_name(name)
        try:
            check_value(value)
        except InvalidInput as exc:
            raise InvalidInput(f"property {shown(name)}: {exc}") from None
    return dict(values)


def encoded_size(values: Mapping[str, Any]) -> int:
    """Bytes of `values` as compact JSON in UTF-8: what the limits below measure."""
    text = json.dumps(values, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8", errors="surrogatepass"))


def check_record_size(values: Mapping[str, Any]) -> None:
    """A record's properties (after a change): at most 1 MiB as JSON."""
    size = encoded_size(values)
    if size > RECORD_PROPERTIES_MAX_BYTES:
        raise InvalidInput(
            f"the record's properties would take {size:,} bytes as JSON: "
            f"at most {RECORD_PROPERTIES_MAX_BYTES:,}"
        )


def check_event_properties(values: Mapping[str, Any]) -> dict[str, Any]:
    """An event's properties: each as `check_properties`, and at most 256 KiB as JSON."""
    check_properties(values)
    size = encoded_size(values)
    if size > EVENT_PROPERTIES_MAX_BYTES:
        raise InvalidInput(
            f"the event's properties take {size:,} bytes as JSON: "
            f"at most {EVENT_PROPERTIES_MAX_BYTES:,}"
        )
    return dict(values)
