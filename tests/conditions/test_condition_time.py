"""Time-relative terms: the instants at which time alone changes a condition, checked against
`evaluate` itself on generated records and conditions of every operator.

The generated instants sit on and next to the records' own thresholds (one microsecond and one
second either side), where an off-by-one in the one-second flooring or in an event's aging out
would show.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from condition_helpers import NOW, condition, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_condition_agreement import (
    DURATIONS,
    LEAVES,
    OBJECT_TYPE,
    PROPERTIES,
    SIGNED,
    _valid,
    event_filters,
    events,
    iso_texts,
    leaves,
    moments,
    stored_values,
    trees,
)

from crmflow.conditions import (
    EventSnapshot,
    RecordSnapshot,
    crossed,
    evaluate,
    next_change,
    thresholds,
    time_terms,
)

US = timedelta(microseconds=1)
NEAR = [timedelta(0), US, -US, timedelta(seconds=1), timedelta(seconds=-1), timedelta(days=1)]
SPANS = [
    timedelta(0),
    US,
    timedelta(milliseconds=500),
    timedelta(seconds=1),
    timedelta(seconds=60),
    timedelta(hours=1),
    timedelta(days=1),
    timedelta(days=45),
]
TIME_OPS = {"within_last", "more_than_ago"}


@st.composite
def worlds(draw: st.DrawFn) -> list[RecordSnapshot]:
    """Records whose properties are mostly dates and that did the events conditions name."""

    def value() -> Any:
        return draw(iso_texts() if draw(st.integers(0, 4)) else stored_values)

    return [
        RecordSnapshot(
            object_type=OBJECT_TYPE,
            id=f"r{i}",
            properties={
                name: value()
                for name in draw(st.sets(st.sampled_from(PROPERTIES), min_size=1, max_size=3))
            },
            events=draw(st.lists(events(), max_size=5)),
        )
        for i in range(draw(st.integers(1, 8)))
    ]


single_terms = st.one_of(
    st.fixed_dictionaries(
        {
            "property": st.sampled_from(PROPERTIES),
            "op": st.sampled_from(sorted(TIME_OPS)),
            "value": st.sampled_from(DURATIONS),
        }
    ),
    st.fixed_dictionaries(
        {
            "property": st.sampled_from(PROPERTIES),
            "op": st.sampled_from(["before", "after"]),
            "value": st.sampled_from(SIGNED),
        }
    ),
    event_filters().filter(lambda data: "within" in data and _valid(data)),
)
"""One time-relative leaf."""


def _all_thresholds(cond: Any, world: list[RecordSnapshot]) -> list[datetime]:
    return sorted({t for record in world for t in thresholds(cond, record)})


def instants(data: st.DataObject, marks: list[datetime]) -> datetime:
    """An instant on or next to one of `marks`, or anywhere around NOW."""
    if marks and data.draw(st.booleans()):
        return data.draw(st.sampled_from(marks)) + data.draw(st.sampled_from(NEAR))
    return data.draw(moments())


def windows(data: st.DataObject, marks: list[datetime]) -> tuple[datetime, datetime]:
    """(t0, t1): mostly a window that starts or ends on or next to one of `marks` (t1 may
    even come before t0); otherwise one of SPANS long, anywhere."""
    if marks and data.draw(st.integers(0, 3)):
        mark = data.draw(st.sampled_from(marks))
        return mark - data.draw(st.sampled_from(SPANS)), mark + data.draw(st.sampled_from(NEAR))
    t0 = instants(data, marks)
    return t0, t0 + data.draw(st.sampled_from(SPANS))


def _before(moment: datetime) -> datetime | None:
    try:
        return moment - US
    except OverflowError:
        return None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world=worlds(), tree=st.one_of(trees, trees, single_terms), data=st.data())
def test_the_value_only_changes_at_a_threshold(
    world: list[RecordSnapshot], tree: dict[str, Any], data: st.DataObject
) -> None:
    # Between two consecutive instants `thresholds` gives, the condition's value is constant:
    # so no change is ever missed, and `crossed` holds whenever the values at t0 and t1 differ.
    cond = condition(tree)
    t0, t1 = sorted(windows(data, _all_thresholds(cond, world)))
    for record in world:
        inside = thresholds(cond, record, after=t0, until=t1)
        assert inside == [t for t in thresholds(cond, record) if t0 < t <= t1]
        assert crossed(cond, record, t0, t1) == bool(inside)
        if evaluate(cond, record, now=t0) != evaluate(cond, record, now=t1):
            assert crossed(cond, record, t0, t1), (tree, record, t0, t1)
        # The value on each stretch [start, next threshold) is the value at its start.
        starts = [t0, *inside]
        ends = [*inside, t1 + US]
        for start, end in zip(starts, ends, strict=True):
            held = evaluate(cond, record, now=start)
            probe = start + (end - start) * data.draw(st.sampled_from([0.25, 0.5, 0.999]))
            for moment in (end - US, probe):
                if start <= moment < end:
                    assert evaluate(cond, record, now=moment) == held, (tree, record, moment)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world=worlds(), leaf=single_terms, negate=st.booleans())
def test_every_threshold_of_a_single_term_is_a_change(
    world: list[RecordSnapshot], leaf: dict[str, Any], negate: bool
) -> None:
    # For one term (or its negation) no instant is a false alarm.
    cond = condition({"not": leaf} if negate else leaf)
    for record in world:
        for moment in thresholds(cond, record):
            just_before = _before(moment)
            if just_before is not None:
                assert evaluate(cond, record, now=just_before) != evaluate(
                    cond, record, now=moment
                ), (leaf, record, moment)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world=worlds(), tree=st.one_of(trees, single_terms), data=st.data())
def test_next_change_is_the_first_instant_the_value_differs(
    world: list[RecordSnapshot], tree: dict[str, Any], data: st.DataObject
) -> None:
    cond = condition(tree)
    after = instants(data, _all_thresholds(cond, world))
    for record in world:
        held = evaluate(cond, record, now=after)
        found = next_change(cond, record, after)
        later = thresholds(cond, record, after=after)
        if found is None:
            # Time alone never changes it: the value at every later threshold, and at the
            # end of time, is the value now.
            assert all(evaluate(cond, record, now=t) == held for t in later)
            end = datetime.max.replace(tzinfo=UTC)
            assert evaluate(cond, record, now=end) == held
            continue
        assert found > after
        assert evaluate(cond, record, now=found) != held
        assert evaluate(cond, record, now=max(found - US, after)) == held
        assert all(evaluate(cond, record, now=t) == held for t in later if t < found)


@settings(max_examples=200, deadline=None)
@given(leaf=leaves)
def test_only_time_relative_leaves_have_terms(leaf: dict[str, Any]) -> None:
    relative = (
        leaf.get("op") in TIME_OPS
        or (leaf.get("op") in ("before", "after") and leaf.get("value") in SIGNED)
        or ("event" in leaf and "within" in leaf)
    )
    assert bool(time_terms(condition(leaf))) == relative, leaf


def test_the_operator_matrix_classifies_every_operator() -> None:
    # Every operator the conditions know, with every kind of operand: only durations are
    # relative to now.
    for leaf in LEAVES:
        cond = condition({"property": "p", **leaf})
        relative = leaf["op"] in TIME_OPS or (
            leaf["op"] in ("before", "after") and leaf["value"] in SIGNED
        )
        assert bool(time_terms(cond)) == relative, leaf


# ----------------------------------------------------------------- the rules, one by one

LAST = "2026-01-01T10:00:00Z"
AT_LAST = datetime(2026, 1, 1, 10, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize(
    ("leaf", "value", "expected"),
    [
        # More than 30 days ago: one second after exactly 30 days (seconds are whole).
        ({"op": "more_than_ago", "value": "30d"}, LAST, ["2026-01-31T10:00:01Z"]),
        # In the last 30 days: from the value on (a future date is not in the last 30 days)
        # to one second after 30 days.
        (
            {"op": "within_last", "value": "30d"},
            LAST,
            ["2026-01-01T10:00:00Z", "2026-01-31T10:00:01Z"],
        ),
        # Before 30 days from now (value < now + 30d): from 30 days before the value on.
        ({"op": "before", "value": "30d"}, LAST, ["2025-12-02T10:00:01Z"]),
        # After 30 days ago (value > now - 30d): until 30 days after the value.
        ({"op": "after", "value": "-30d"}, LAST, ["2026-01-31T10:00:00Z"]),
        # A fraction of a second in the value is dropped; a fraction in the duration is kept.
        (
            {"op": "more_than_ago", "value": "PT0.5S"},
            "2026-01-01T10:00:00.9Z",
            ["2026-01-01T10:00:01.5Z"],
        ),
        # A date alone is its midnight UTC; an offset is counted.
        ({"op": "more_than_ago", "value": "1d"}, "2026-01-01", ["2026-01-02T00:00:01Z"]),
        (
            {"op": "more_than_ago", "value": "1d"},
            "2026-01-01T01:00+02:00",
            ["2026-01-01T23:00:01Z"],
        ),
        # Not a date: time never changes it.
        ({"op": "more_than_ago", "value": "1d"}, "2026-02-30", []),
        ({"op": "more_than_ago", "value": "1d"}, 20260101, []),
        # Not relative to now.
        ({"op": "before", "value": "2026-01-05"}, LAST, []),
        ({"op": "gt", "value": "2026-01-05"}, LAST, []),
    ],
)  # fmt: skip
def test_property_thresholds(leaf: dict[str, Any], value: Any, expected: list[str]) -> None:
    cond = condition({"property": "last", **leaf})
    record = snapshot("r", {"last": value})
    found = thresholds(cond, record)
    assert found == [at(text) for text in expected]
    for moment in found:
        assert evaluate(cond, record, now=moment - US) != evaluate(cond, record, now=moment)


def test_thresholds_through_dst_are_utc_instants() -> None:
    # 2026-03-29 is the spring-forward day in Europe/Paris: the value's own offset says which
    # instant it is, and 30 days are 30 × 24 hours of UTC from it, whatever clocks did meanwhile.
    cond = condition({"property": "renewal", "op": "before", "value": "30d"})
    before_dst = snapshot("r", {"renewal": "2026-04-20T09:00:00+02:00"})
    assert thresholds(cond, before_dst) == [at("2026-03-21T07:00:01Z")]
    cond = condition({"property": "seen", "op": "more_than_ago", "value": "1d"})
    on_dst = snapshot("r", {"seen": "2026-03-29T01:30:00+01:00"})
    assert thresholds(cond, on_dst) == [at("2026-03-30T00:30:01Z")]


def _events(*moments: str, name: str = "opened", **props: Any) -> list[EventSnapshot]:
    return [EventSnapshot(name=name, occurred_at=at(m), properties=props) for m in moments]


def test_an_event_term_changes_when_its_min_count_th_latest_occurrence_ages_out() -> None:
    record = snapshot(
        "r",
        events=[
            *_events("2026-01-01T10:00:00Z", "2026-01-05T10:00:00Z", "2026-01-09T10:00:00Z"),
            *_events("2026-01-20T10:00:00Z", form="other"),
            *_events("2026-01-25T10:00:00Z", name="clicked"),
        ],
    )
    once = condition({"event": "opened", "within": "30d"})
    # The latest one ages out one microsecond after 30 days (`within` counts occurred_at >=
    # now - 30d, exactly): the latest counts here, so the 2026-01-20 one decides.
    assert thresholds(once, record) == [at("2026-02-19T10:00:00.000001Z")]
    twice = condition({"event": "opened", "within": "30d", "min_count": 2})
    assert thresholds(twice, record) == [at("2026-02-08T10:00:00.000001Z")]
    where = condition({"event": "opened", "where": {"form": "other"}, "within": "30d"})
    assert thresholds(where, record) == [at("2026-02-19T10:00:00.000001Z")]
    has_not = condition({"not": {"event": "opened", "where": {"form": None}, "within": "1d"}})
    assert thresholds(has_not, record) == [at("2026-01-10T10:00:00.000001Z")]
    assert next_change(has_not, record, at("2026-01-09T12:00:00Z")) == at(
        "2026-01-10T10:00:00.000001Z"
    )
    assert not evaluate(has_not, record, now=at("2026-01-10T10:00:00Z"))
    assert evaluate(has_not, record, now=at("2026-01-10T10:00:00.000001Z"))
    # Without `within`, an event filter does not depend on time.
    assert thresholds(condition({"event": "opened"}), record) == []
    assert time_terms(condition({"event": "opened", "min_count": 3})) == []


def test_a_re_engagement_window_turns_true_once() -> None:
    cond = condition(
        {
            "all": [
                {"property": "last_activity", "op": "more_than_ago", "value": "30d"},
                {"property": "lifecycle_stage", "op": "eq", "value": "customer"},
            ]
        }
    )
    record = snapshot("ann", {"last_activity": LAST, "lifecycle_stage": "customer"})
    turn = at("2026-01-31T10:00:01Z")
    assert next_change(cond, record, turn - timedelta(minutes=1)) == turn
    assert next_change(cond, record, turn) is None
    assert crossed(cond, record, turn - timedelta(seconds=60), turn)
    assert not crossed(cond, record, turn, turn + timedelta(seconds=60))
    assert not crossed(cond, record, turn - timedelta(seconds=61), turn - US)
    # A term changing under a branch that does not hold is still reported by `crossed` (the
    # sweep judges the record); next_change knows the value does not change.
    lead = snapshot("bob", {"last_activity": LAST, "lifecycle_stage": "lead"})
    assert crossed(cond, lead, turn - timedelta(seconds=60), turn)
    assert next_change(cond, lead, turn - timedelta(seconds=60)) is None


def test_a_short_truth_inside_a_window_is_a_crossing() -> None:
    # True only during [value, value + 1 s + 1 s): both instants lie in a 60 s window, and the
    # values at its ends are equal.
    cond = condition({"property": "ping", "op": "within_last", "value": "1s"})
    record = snapshot("r", {"ping": LAST})
    t0, t1 = AT_LAST - timedelta(seconds=30), AT_LAST + timedelta(seconds=30)
    assert evaluate(cond, record, now=t0) == evaluate(cond, record, now=t1) is False
    assert thresholds(cond, record, after=t0, until=t1) == [AT_LAST, AT_LAST + timedelta(seconds=2)]
    assert crossed(cond, record, t0, t1)


def test_terms_are_deduplicated_and_name_what_they_read() -> None:
    cond = condition(
        {
            "any": [
                {"property": "a", "op": "within_last", "value": "30d"},
                {"not": {"property": "a", "op": "within_last", "value": "P30D"}},
                {"property": "a", "op": "before", "value": "-30d"},
                {"event": "e", "within": "7d"},
                {"event": "e", "within": "7d", "min_count": 2},
                {"in_list": "vip"},
            ]
        }
    )
    terms = time_terms(cond)
    assert [(t.kind, t.name, t.min_count) for t in terms] == [
        ("property", "a", 1),
        ("property", "a", 1),
        ("event", "e", 1),
        ("event", "e", 2),
    ]


def test_durations_beyond_the_calendar_never_cross() -> None:
    for data in (
        {"property": "a", "op": "more_than_ago", "value": "1000000w"},
        {"event": "e", "within": "1000000w"},
    ):
        cond = condition(data)
        record = snapshot("r", {"a": LAST}, events=_events(LAST, name="e"))
        assert thresholds(cond, record) == []
        assert next_change(cond, record, NOW) is None
