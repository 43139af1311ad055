"""The condition engine: one condition, evaluated on a record in Python or compiled to SQL.

`evaluate(condition, snapshot, now=...)` and `explain(...)` are pure Python (no SQLAlchemy is
imported for them: safe in the Temporal workflow sandbox). `crmflow.store`'s
`compile_condition(...)` and `select_matching(...)` build SQLAlchemy clauses over the store for
SQLite and PostgreSQL from the same plans (`crmflow.conditions.plans`). Both sides give the
same answer for every record; the test suite checks it with
generated records and conditions on both databases. `describe_condition(...)` writes a condition
in words, for pictures and listings.

Semantics (SPEC §2.1 leaves these open; this is the contract)
--------------------------------------------------------------
Values. A property is *missing* when absent or null. Stored values are JSON: strings, numbers,
booleans; a list or an object only satisfies `known`. Comparisons of a missing property are
false; `neq`, `not_in`, `not_contains` and `unknown` are the exact negations of `eq`, `in`,
`contains` and `known`, so they are true for a missing property.

Text. Every string comparison is case-insensitive for the ASCII letters A-Z only (other letters
compare exactly, so that SQLite, PostgreSQL and Python agree). No trimming. `contains`,
`starts_with`, `ends_with` apply to string values only: a number or a boolean never contains text.

Numbers. Compared as IEEE doubles. A *numeric string* is `-?[0-9]+(\\.[0-9]+)?` and at most 100
characters (no exponent, no `+`, no spaces, ASCII digits). JSON numbers beyond ±1e308 are not
numbers for comparison (an operand beyond it acts as ±infinity). `gt`/`gte`/`lt`/`lte`/`between`
with number operands accept JSON numbers and numeric strings ("120" gt 99 holds).

`eq` / `in` (each `in` element is an `eq`):
- string operand: equals a string value ignoring ASCII case; equals a JSON number when the
  operand is a numeric string of the same value ("120" eq 120.0); "true"/"false" (any case)
  equals the JSON boolean. Two strings always compare as text: "02134" does not equal "2134".
- number operand: equals a JSON number or a numeric string of the same value (120 eq "120.0").
- boolean operand: equals the same JSON boolean, or the string "true"/"false" in any case.

Dates. A *date value* is a string `YYYY-MM-DD`, optionally followed by `T` or a space and
`HH:MM`, `HH:MM:SS` or `HH:MM:SS.fraction`, and then optionally `Z`, `+HH:MM`, `+HHMM` (or `-`).
It must be a real calendar date (year 0001-9999) and time (hours ≤ 23, no leap second; offset
hours ≤ 23, minutes ≤ 59). Upper-case `T` and `Z` only; no surrounding spaces. Without an
offset it is UTC. Comparisons are at one-second resolution: fractions of a second are
dropped, in stored values and operands alike; `now` is floored to the second. A date-only
*operand* stands for its whole UTC day: `after 2026-01-05` means from 2026-01-06T00:00:00Z on,
`before` before 2026-01-05T00:00:00Z, `lte` through 2026-01-05T23:59:59Z, and `between`
[D1, D2] covers both whole days. A date-only *stored value* is its midnight UTC. Anything that
is not a date value (numbers included) fails every date comparison.
- `gt`/`gte`/`lt`/`lte`/`between` with date operands compare dates; `after`/`before` are `gt`/
  `lt`, and also take a signed duration: `after: -30d` means after now minus 30 days.
- `within_last N`: now − N ≤ value ≤ now (future dates are not in the last N).
- `more_than_ago N`: value < now − N.

Trees: `all`, `any`, `not` are plain boolean logic over leaves that are always true or false.
Lists: membership by exact list name. Events: exact event name; `where` keys compare with `eq`
semantics, and a `where` value of null asks for the event property to be missing; `within W`
counts events with occurred_at ≥ now − W (exact to the microsecond; later events count too);
`min_count` (default 1) is the number of such events needed.

Time. `within_last`, `more_than_ago`, `before`/`after` with a duration and event filters with
`within` are *time terms*: their truth changes as time passes, with no change to the record, at
instants computed from the record's data (`_time`: `time_terms`, `thresholds`, `crossed`,
`next_change`). Every other leaf depends on the record alone.

The same conditions compiled to SQL (`compile_condition`, `select_matching`) live in the store
(`crmflow.store`), which owns every SQL statement.
"""

from __future__ import annotations

from ._describe import describe_condition
from ._evaluate import ConditionExplanation, evaluate, explain
from ._snapshot import EventSnapshot, RecordSnapshot
from ._time import (
    MAX_US,
    MIN_US,
    SECOND_US,
    TimeTerm,
    crossed,
    from_micros,
    next_change,
    thresholds,
    time_terms,
    to_micros,
)

__all__ = [
    "to_micros",
    "MAX_US",
    "MIN_US",
    "SECOND_US",
    "from_micros",
    "ConditionExplanation",
    "EventSnapshot",
    "RecordSnapshot",
    "TimeTerm",
    "crossed",
    "describe_condition",
    "evaluate",
    "explain",
    "next_change",
    "thresholds",
    "time_terms",
]
