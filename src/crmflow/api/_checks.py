"""The value rules of `crmflow.definitions` (the CLI's), applied to a request and located in it:
every problem of a body is collected with its path (`["body", "records", 3, "id"]`) and
answered at once as one 422, before anything is written."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from crmflow.definitions import (
    InvalidInput,
    check_event_properties,
    check_property_name,
    check_value,
)

from ._problems import INVALID_REQUEST, ApiProblem, Loc, summary

# Of all the problems of one request, how many are listed (a batch of 1,000 bad items would
# otherwise answer with a body larger than the request).
MAX_LISTED = 100


class Problems:
    """The problems found in one request, each at its place."""

    def __init__(self) -> None:
        self.items: list[tuple[Loc, str]] = []
        self.count = 0

    def add(self, loc: Loc, message: str) -> None:
        self.count += 1
        if len(self.items) < MAX_LISTED:
            self.items.append((list(loc), message))

    def check(self, loc: Loc, check: Callable[[Any], Any], value: Any) -> bool:
        try:
            check(value)
        except InvalidInput as exc:
            self.add(loc, str(exc))
            return False
        return True

    def properties(self, loc: Loc, values: Mapping[str, Any]) -> None:
        """Each property name and value, at `loc + [name]`."""
        for name, value in values.items():
            if self.check([*loc, name], check_property_name, name):
                self.check([*loc, name], check_value, value)

    def event_properties(self, loc: Loc, values: Mapping[str, Any]) -> None:
        before = self.count
        self.properties(loc, values)
        if self.count == before:
            self.check(loc, check_event_properties, values)

    def raise_any(self) -> None:
        if not self.count:
            return
        more = self.count - len(self.items)
        detail = summary(self.items)
        if more:
            detail += f" ({more} more problems not listed)"
        raise ApiProblem(INVALID_REQUEST, detail, errors=self.items)


def path_checks(*checks: tuple[str, Callable[[Any], Any], Any]) -> None:
    """Path parameters: each (name, rule, value); every problem at `["path", name]`."""
    problems = Problems()
    for name, check, value in checks:
        problems.check(["path", name], check, value)
    problems.raise_any()


def located(loc: Sequence[str | int], message: str) -> ApiProblem:
    return ApiProblem(INVALID_REQUEST, f"{_shown(loc)}: {message}", errors=[(list(loc), message)])


def _shown(loc: Sequence[str | int]) -> str:
    return summary([(loc, "")]).rstrip(": ")


def as_utc(value: datetime) -> datetime:
    """An instant without an offset is UTC (as everywhere in crmflow)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
