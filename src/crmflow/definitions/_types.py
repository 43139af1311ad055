"""Small annotated types shared by the definition models: names, ids, keys, values, templates.

Each validates with a short human message (no regex dump) and carries its JSON schema.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, PlainValidator, ValidationInfo, WithJsonSchema

from crmflow.limits import MAX_NUMBER
from crmflow.templates import check_template

from ._base import is_new_definition

END = "end"
"""The target that ends the enrollment."""

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Day names in `datetime.weekday()` order: `WEEKDAYS.index(day)` is the weekday number."""

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

ACTION_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
WORKFLOW_KEY_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
OBJECT_TYPE_PATTERN = r"^[a-z][a-z0-9_]*$"
PROPERTY_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
NAME_PATTERN = r"^\S(.*\S)?$"

_ENV_REF = re.compile(r"\$\{env:([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _matching(
    pattern: str, what: str, hint: str, max_length: int | None = None
) -> tuple[AfterValidator, WithJsonSchema]:
    """Validator and JSON schema of a string that must match `pattern`."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        # fullmatch: with match, `$` lets a trailing newline through ("contact\n").
        if not compiled.fullmatch(value):
            raise ValueError(f"invalid {what} {value!r}: {hint}")
        if max_length is not None and len(value) > max_length:
            raise ValueError(f"{what} is longer than {max_length} characters")
        return value

    schema: dict[str, Any] = {"type": "string", "pattern": pattern}
    if max_length is not None:
        schema["maxLength"] = max_length
    return AfterValidator(check), WithJsonSchema(schema)


def _not_end(value: str) -> str:
    if value == END:
        raise ValueError("'end' cannot be an action id: `next: end` ends the enrollment")
    return value


_ID_HINT = "use lower-case letters, digits, '_' and '-'"
ActionId = Annotated[
    str, *_matching(ACTION_ID_PATTERN, "action id", _ID_HINT, 64), AfterValidator(_not_end)
]
ActionRef = Annotated[
    str,
    *_matching(ACTION_ID_PATTERN, "action reference", "use an action id, or 'end' to end it", 64),
]
WorkflowKey = Annotated[
    str,
    *_matching(WORKFLOW_KEY_PATTERN, "workflow key", "use lower-case letters, digits and '-'", 64),
]
ObjectType = Annotated[
    str, *_matching(OBJECT_TYPE_PATTERN, "object type", "use a lower-case name such as 'deal'", 64)
]
PropertyName = Annotated[
    str,
    *_matching(PROPERTY_NAME_PATTERN, "property name", "use letters, digits, '_', '.', '-'", 128),
]


def _no_control(value: str) -> str:
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value):
        raise ValueError(f"invalid name {value!r}: it contains a control character")
    return value


Name = Annotated[
    str,
    *_matching(NAME_PATTERN, "name", "empty, or starts/ends with spaces", 128),
    AfterValidator(_no_control),
]
"""A list, event or handler name: non-empty text without surrounding spaces."""


def _check_text(value: str, *, env: bool = False, new: bool = False) -> str:
    for ref in _ENV_REF.finditer(value):
        if not env:
            raise ValueError("${env:NAME} is only replaced in webhook URLs and headers")
        if not _ENV_NAME.match(ref.group(1)):
            raise ValueError(f"invalid environment variable name {ref.group(1)!r}")
    if "{" in value:
        check_template(value, strict=new)
    return value


def _template(value: str, info: ValidationInfo) -> str:
    return _check_text(value, new=is_new_definition(info))


def _header_template(value: str, info: ValidationInfo) -> str:
    return _check_text(value, env=True, new=is_new_definition(info))


Template = Annotated[str, AfterValidator(_template)]
"""Text that may use `{{ record.<property> }}`, `{{ workflow.key }}`, `{{ workflow.name }}`,
`{{ enrollment.id }}`, a few filters and `{% if %}` (see crmflow.templates); checked with the
renderer's own parser."""

HeaderTemplate = Annotated[str, AfterValidator(_header_template)]
"""A webhook URL or header value: a template that may also use `${env:NAME}`."""


def number_problem(value: int | float) -> str | None:
    """Why a number cannot stand in a definition file, or None: NaN and the infinities have no
    JSON form (a stored definition could not load back), and numbers beyond ±1e308 cannot be
    stored as JSON numbers everywhere (the loader's rule for every new document)."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a finite number"
    if abs(value) <= MAX_NUMBER:
        return None
    if isinstance(value, float):
        return f"{value} is out of range: numbers lie within ±1e308"
    return "an integer beyond 1e308 is out of range: numbers lie within ±1e308"


def _finite(value: int | float) -> int | float:
    # The models refuse what has no JSON form at all; a huge integer built in Python is left
    # to the conditions (which read it as ±infinity) and to the loader's range rule.
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number")
    return value


def _scalar_validator(what: str, check_strings: Callable[[str, Any], str] | None) -> Any:
    def check(value: Any, info: ValidationInfo) -> Any:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int | float):
            return _finite(value)
        if isinstance(value, str):
            return check_strings(value, info) if check_strings else value
        raise ValueError(f"{what} must be a string, number, boolean or null")

    return PlainValidator(check)


_SCALAR_SCHEMA = WithJsonSchema({"type": ["string", "number", "boolean", "null"]})

ScalarValue = Annotated[Any, _scalar_validator("value", None), _SCALAR_SCHEMA]
"""A string, number, boolean or null, as stored in a property."""

PropertyValue = Annotated[Any, _scalar_validator("value", _template), _SCALAR_SCHEMA]
"""A value written to a property: a string (a template), number, boolean or null."""


def _number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return _finite(value)


Number = Annotated[int | float, PlainValidator(_number), WithJsonSchema({"type": "number"})]


def _body(value: Any, info: ValidationInfo) -> Any:
    if value is not None and not isinstance(value, str | dict | list):
        raise ValueError("body must be text (a template) or a JSON object or array")
    new = is_new_definition(info)
    return check_json_value(value, lambda text: _check_text(text, new=new))


def check_json_value(value: Any, check_text: Callable[[str], Any] | None = None) -> Any:
    """Raise ValueError unless `value` is JSON data (objects with string keys, arrays, strings,
    finite numbers within range, booleans, null); `check_text` sees every string. Iterative:
    any depth is checked without recursion."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise ValueError(f"keys of a JSON object must be strings, got {key!r}")
                todo.append(child)
        elif isinstance(item, list):
            todo.extend(item)
        elif isinstance(item, str):
            if check_text is not None:
                check_text(item)
        elif isinstance(item, bool) or item is None:
            pass
        elif isinstance(item, int | float):
            _finite(item)
        else:
            raise ValueError(f"{item!r} is not a JSON value")
    return value


JsonBody = Annotated[
    Any,
    PlainValidator(_body),
    WithJsonSchema({"type": ["string", "object", "array"]}),
]
"""A webhook body: template text, or a JSON object/array whose strings are templates."""
