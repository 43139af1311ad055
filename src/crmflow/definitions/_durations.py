"""Durations, signed durations and times of day, as written in definitions (SPEC §2.2).

Pure functions: safe to import inside the workflow sandbox.
"""

from __future__ import annotations

import re
from datetime import time, timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_COMPACT = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_ISO = re.compile(
    r"^P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$", re.IGNORECASE
)
_TIME_OF_DAY = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")

DURATION_PATTERN = r"^[+-]?(\d+[wdhms])+$|^[+-]?P(\d+W)?(\d+D)?(T(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$"


def parse_duration(text: str, *, signed: bool = False) -> timedelta:
    """Parse `30s`, `15m`, `2h`, `3d`, `1w`, `1d12h` or ISO-8601 `P1DT12H`.

    With `signed`, a leading `+` or `-` is allowed (`-30d`). Raises ValueError.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a duration such as '2d' or 'P1DT12H', got {text!r}")
    raw = text.strip()
    sign = 1
    if raw[:1] in ("+", "-"):
        if not signed:
            raise ValueError(f"a duration cannot be signed here: {text!r}")
        sign = -1 if raw[0] == "-" else 1
        raw = raw[1:]
    try:
        if raw and (m := _COMPACT.match(raw)) and any(m.groups()):
            w, d, h, mi, s = (int(g or 0) for g in m.groups())
            return sign * timedelta(weeks=w, days=d, hours=h, minutes=mi, seconds=s)
        if raw and (m := _ISO.match(raw)) and any(m.groups()):
            w, d, h, mi = (int(g or 0) for g in m.groups()[:4])
            seconds = float(m.group(5) or 0)
            return sign * timedelta(weeks=w, days=d, hours=h, minutes=mi, seconds=seconds)
    except OverflowError:
        raise ValueError(f"duration {text!r} is too long") from None
    raise ValueError(
        f"invalid duration {text!r}: use e.g. '30s', '15m', '2h', '3d', '1w', '1d12h' or 'P1DT12H'"
    )


def format_duration(value: timedelta) -> str:
    """Canonical text of a duration (`1d12h`, `-30d`, `0s`); parses back to the same value.

    Sub-second durations, which the compact form cannot express, are written in ISO-8601
    (`PT0.5S`) so a stored definition round-trips exactly.
    """
    sign = "-" if value < timedelta(0) else ""
    value = abs(value)
    total, micros = value.days * 86400 + value.seconds, value.microseconds
    if micros:
        d, rest = divmod(total, 86400)
        h, rest = divmod(rest, 3600)
        m, s = divmod(rest, 60)
        return f"{sign}P{d}DT{h}H{m}M{s}.{micros:06d}S"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
    return sign + ("".join(parts) or "0s")


def parse_time_of_day(text: Any) -> time:
    if isinstance(text, time):
        return text
    if not isinstance(text, str) or not (m := _TIME_OF_DAY.match(text.strip())):
        raise ValueError(f'invalid time of day {text!r}: use 24-hour "HH:MM", e.g. "09:00"')
    return time(int(m.group(1)), int(m.group(2)))


def _duration(value: Any) -> timedelta:
    return value if isinstance(value, timedelta) else parse_duration(value)


def _positive_duration(value: Any) -> timedelta:
    result = _duration(value)
    if result <= timedelta(0):
        raise ValueError(f"duration must be positive, got {value!r}")
    return result


def _signed_duration(value: Any) -> timedelta:
    return value if isinstance(value, timedelta) else parse_duration(value, signed=True)


_DURATION_SCHEMA = {
    "type": "string",
    "pattern": DURATION_PATTERN,
    "examples": ["2d", "1d12h", "P1DT12H"],
}

Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(_DURATION_SCHEMA),
]
PositiveDuration = Annotated[
    timedelta,
    BeforeValidator(_positive_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(_DURATION_SCHEMA),
]
SignedDuration = Annotated[
    timedelta,
    BeforeValidator(_signed_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(_DURATION_SCHEMA),
]
TimeOfDay = Annotated[
    time,
    BeforeValidator(parse_time_of_day),
    PlainSerializer(lambda t: t.strftime("%H:%M"), return_type=str),
    WithJsonSchema(
        {"type": "string", "pattern": r"^([01]\d|2[0-3]):[0-5]\d$", "examples": ["09:00"]}
    ),
]
