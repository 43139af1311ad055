"""Trigger evaluation: the cost of deciding what one record change calls for, with 200 active
criteria workflows and 10,000 record changes.

    .venv/bin/python bench/trigger_evaluation.py [--workflows 200] [--changes 10000]
        [--records 10000] [--seed 7] [--db URL]

(a) The decision path without I/O: `TriggerIndex.enter/leave` + `decide(...)` on an in-memory
    `RecordSnapshot` of the record after the change (the record's enrollments kept in memory).
(b) The same changes through the real `Dispatcher.dispatch()` on a store pre-filled with the
    records, their lists, events and earlier enrollments (a temporary SQLite file by default):
    every store read it does, and the enrollment rows `EnrollmentStarter.start` writes, but no
    Temporal call (the client is a stand-in whose `start_workflow` and signals do nothing; the
    end of an enrollment that a signal asks for is written to the store outside the clock, as
    the workflow would). Each change is written (off the clock) and then dispatched by one
    `dispatch_pending()`, as a running dispatcher meets changes that trickle in, so it reads
    the record as it was right after the change, like (a).

Both run the same generated workload: workflows whose criteria are one selective test (a stage,
a list, an event, a score) narrowed by 1-3 conditions: property filters of every operator on a
pool of 50 properties (popular ones more often), `any`/`not`, list and event filters; some with
goals, `unenroll_when`, suppression lists, re-enrollment. Changes update 1-3 properties, join a
list, track an event or create a record. Prints microseconds per change (mean, median, p95, by
kind of change), where (b) spends them, and the comparison with the target (<= 1 ms). The
bench's own data is frozen out of the garbage collector's way before each clocked loop.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, update

from crmflow import services
from crmflow.activities.models import GoalMetSignal, UnenrollSignal
from crmflow.conditions import EventSnapshot, RecordSnapshot
from crmflow.definitions import ACTIVE_STATUSES, WorkflowDefinition
from crmflow.enrolling import EnrollmentStarter
from crmflow.enrolling import _starting as starting_module
from crmflow.rules import (
    CREATED,
    DELETED,
    EVENT,
    LISTED,
    UPDATED,
    ActiveEnrollment,
    Change,
    Enroll,
    Trigger,
    decide,
)
from crmflow.services import App, Settings
from crmflow.store import (
    ChangeRepository,
    Enrollment,
    EnrollmentRepository,
    Event,
    EventRepository,
    ListMembership,
    ListRepository,
    Record,
    RecordList,
    RecordRepository,
    WorkflowRepository,
    changed_properties,
    ensure_postgres_database,
    merge_properties,
    temporal_workflow_id,
)
from crmflow.triggers import Dispatcher, TriggerIndex
from crmflow.triggers import _dispatcher as dispatcher_module

OBJECT_TYPE = "contact"
TARGET_US = 1000.0

# ------------------------------------------------------------------------- the data model

CHOICES: dict[str, list[str]] = {
    "lifecycle_stage": ["subscriber", "lead", "mql", "sql", "opportunity", "customer"],
    "lead_status": ["new", "open", "in_progress", "connected", "unqualified", "bad_timing"],
    "country": ["US", "GB", "FR", "DE", "ES", "IT", "NL", "CA", "BR", "IN", "JP", "AU"],
    "industry": ["software", "retail", "finance", "health", "education", "manufacturing"],
    "lead_source": ["organic", "paid_search", "social", "referral", "email", "event"],
    "plan": ["free", "starter", "pro", "enterprise"],
    "persona": ["marketer", "developer", "executive", "sales", "ops"],
    "language": ["en", "fr", "de", "es", "pt", "ja"],
    "owner": ["alice", "bob", "carol", "dave", "erin", "frank"],
    "region": ["amer", "emea", "apac"],
    "rating": ["hot", "warm", "cold"],
    "company_size": ["1-10", "11-50", "51-200", "201-1000", "1000+"],
    "buying_role": ["champion", "decision_maker", "influencer", "end_user", "blocker"],
    "segment": ["smb", "mid_market", "enterprise", "strategic"],
    "utm_source": ["google", "linkedin", "facebook", "newsletter", "partner", "twitter"],
    "utm_campaign": ["spring_promo", "webinar_q2", "black_friday", "launch", "retarget"],
    "state": ["CA", "NY", "TX", "WA", "MA", "IL", "FL", "CO"],
    "city": ["Paris", "London", "Berlin", "New York", "Austin", "Tokyo", "Sydney", "Madrid"],
}
PATTERNS: dict[str, tuple[list[str], list[str]]] = {  # values, operands for text operators
    "email": (
        [f"{n}@{d}" for n in ("ann", "bob", "chen", "dia") for d in ("gmail.com", "acme.io")],
        ["@gmail.com", "acme", "ann"],
    ),
    "job_title": (
        ["VP Marketing", "Head of Sales", "Software Engineer", "CTO", "Marketing Manager"],
        ["Marketing", "VP", "Head", "Engineer"],
    ),
    "company": (["Acme Corp", "Globex", "Initech", "Umbrella Inc", "Hooli"], ["Inc", "Acme"]),
    "website": (["https://acme.io", "https://globex.com", "http://initech.net"], [".com", "https"]),
    "firstname": (["Ann", "Bob", "Chen", "Dia", "Eve", "Abel"], ["A", "e"]),
    "lastname": (["Martin", "Smith", "Garcia", "Muller", "Sato"], ["S", "in"]),
    "phone": (["+33 6 12 34 56 78", "+1 415 555 0100", "+44 20 7946 0000"], ["+33", "+1"]),
}
NUMBERS: dict[str, tuple[int, int]] = {
    "score": (0, 100),
    "employees": (1, 5000),
    "annual_revenue": (0, 50_000_000),
    "num_visits": (0, 200),
    "emails_opened": (0, 80),
    "deals_won": (0, 10),
    "nps": (0, 10),
    "seats": (1, 500),
    "mrr": (0, 20_000),
    "days_since_signup": (0, 900),
}
DATES = [
    "created_date",
    "last_contacted",
    "last_activity",
    "signup_date",
    "renewal_date",
    "trial_end",
    "last_purchase",
    "first_seen",
]
BOOLEANS = [
    "vip",
    "newsletter",
    "do_not_contact",
    "is_customer",
    "has_open_deal",
    "gdpr_consent",
    "email_bounced",
]
# Popularity order: the first properties are read by many workflows and change often.
PROPERTIES = list(
    dict.fromkeys(
        [
            "lifecycle_stage",
            "score",
            "lead_status",
            "country",
            "is_customer",
            "last_activity",
            "plan",
            "has_open_deal",
            "industry",
            "email",
            "lead_source",
            "employees",
            "vip",
            "last_contacted",
            "persona",
            "job_title",
            *CHOICES,
            *PATTERNS,
            *NUMBERS,
            *DATES,
            *BOOLEANS,
        ]
    )
)
assert len(PROPERTIES) == 50, len(PROPERTIES)
WEIGHTS = [1 / (rank + 1) ** 0.8 for rank in range(len(PROPERTIES))]

LISTS = [
    "newsletter",
    "webinar-2024",
    "customers",
    "partners",
    "vip-accounts",
    "churn-risk",
    "unsubscribed",
    "competitors",
    "bounced",
    "event-paris",
    "event-berlin",
    "beta-testers",
    "trial-users",
    "enterprise-targets",
    "abm-tier1",
    "abm-tier2",
    "do-not-email",
    "press",
    "investors",
    "students",
]
SUPPRESSION = ["unsubscribed", "competitors", "bounced", "do-not-email", "customers"]
EVENTS: dict[str, tuple[str, list[str]] | None] = {  # name -> (property, values) or None
    "form_submitted": ("form", ["contact", "newsletter", "pricing", "demo"]),
    "page_viewed": ("page", ["/pricing", "/docs", "/blog", "/careers"]),
    "email_opened": None,
    "email_clicked": ("campaign", ["spring_promo", "webinar_q2", "launch"]),
    "webinar_attended": None,
    "demo_requested": None,
    "trial_started": None,
    "purchase_made": ("plan", ["starter", "pro", "enterprise"]),
    "meeting_booked": None,
    "support_ticket": ("severity", ["low", "high"]),
    "app_login": None,
    "download": ("asset", ["ebook", "whitepaper", "case-study"]),
    "chat_started": None,
    "unsubscribe_clicked": None,
    "review_left": None,
}
EVENT_NAMES = list(EVENTS)
EVENT_WEIGHTS = [1 / (rank + 1) ** 0.6 for rank in range(len(EVENT_NAMES))]


def property_value(rng: random.Random, name: str, today: date) -> Any:
    if name in CHOICES:
        return rng.choice(CHOICES[name])
    if name in PATTERNS:
        return rng.choice(PATTERNS[name][0])
    if name in NUMBERS:
        return rng.randint(*NUMBERS[name])
    if name in DATES:
        return (today + timedelta(days=rng.randint(-400, 200))).isoformat()
    return rng.random() < 0.5


def property_filter(rng: random.Random, name: str, today: date) -> dict[str, Any]:
    def leaf(op: str, value: Any = None) -> dict[str, Any]:
        found = {"property": name, "op": op}
        return found if value is None else {**found, "value": value}

    if rng.random() < 0.06:
        return leaf(rng.choice(["known", "unknown"]))
    if name in CHOICES:
        values = CHOICES[name]
        op = rng.choice(["eq", "eq", "eq", "neq", "in", "in", "not_in"])
        if op in ("in", "not_in"):
            return leaf(op, rng.sample(values, rng.randint(2, 3)))
        return leaf(op, rng.choice(values))
    if name in PATTERNS:
        op = rng.choice(["contains", "not_contains", "starts_with", "ends_with", "eq"])
        pool = PATTERNS[name][0] if op == "eq" else PATTERNS[name][1]
        return leaf(op, rng.choice(pool))
    if name in NUMBERS:
        low, high = NUMBERS[name]
        op = rng.choice(["gt", "gte", "lt", "lte", "between", "eq"])
        if op == "between":
            a, b = sorted(rng.randint(low, high) for _ in range(2))
            return leaf(op, [a, b])
        return leaf(op, rng.randint(low, high))
    if name in DATES:
        op = rng.choice(["before", "after", "within_last", "more_than_ago", "between", "gt"])
        if op in ("within_last", "more_than_ago"):
            return leaf(op, f"{rng.choice([7, 14, 30, 90, 180])}d")
        if op == "between":
            a, b = sorted(today + timedelta(days=rng.randint(-300, 100)) for _ in range(2))
            return leaf(op, [a.isoformat(), b.isoformat()])
        if op in ("before", "after") and rng.random() < 0.5:
            return leaf(op, f"{rng.choice(['-', '+'])}{rng.choice([7, 30, 90])}d")
        return leaf(op, (today + timedelta(days=rng.randint(-300, 100))).isoformat())
    return leaf("eq", rng.random() < 0.6)


def event_filter(rng: random.Random) -> dict[str, Any]:
    name = rng.choices(EVENT_NAMES, EVENT_WEIGHTS)[0]
    found: dict[str, Any] = {"event": name}
    if (spec := EVENTS[name]) is not None and rng.random() < 0.5:
        found["where"] = {spec[0]: rng.choice(spec[1])}
    if rng.random() < 0.5:
        found["within"] = f"{rng.choice([7, 30, 90])}d"
    if rng.random() < 0.2:
        found["min_count"] = rng.randint(2, 3)
    return found


def leaf_condition(rng: random.Random, today: date) -> dict[str, Any]:
    draw = rng.random()
    if draw < 0.75:
        return property_filter(rng, rng.choices(PROPERTIES, WEIGHTS)[0], today)
    if draw < 0.87:
        kind = "in_list" if rng.random() < 0.6 else "not_in_list"
        return {kind: rng.choice(LISTS)}
    return event_filter(rng)


def children(rng: random.Random, today: date, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for _ in range(count):
        draw = rng.random()
        if draw < 0.15:
            found.append({"any": [leaf_condition(rng, today) for _ in range(rng.randint(2, 3))]})
        elif draw < 0.25:
            found.append({"not": leaf_condition(rng, today)})
        else:
            found.append(leaf_condition(rng, today))
    return found


def condition(rng: random.Random, today: date, leaves: tuple[int, int]) -> dict[str, Any]:
    found = children(rng, today, rng.randint(*leaves))
    return found[0] if len(found) == 1 else {"all": found}


CHOICE_NAMES = [p for p in PROPERTIES if p in CHOICES]
CHOICE_WEIGHTS = [WEIGHTS[PROPERTIES.index(p)] for p in CHOICE_NAMES]


def criteria(rng: random.Random, today: date) -> dict[str, Any]:
    """What a marketer writes: one selective positive test (a stage, a list, an event, a high
    score), narrowed by 1-3 more conditions of any kind."""
    draw = rng.random()
    if draw < 0.6:
        name = rng.choices(CHOICE_NAMES, CHOICE_WEIGHTS)[0]
        if rng.random() < 0.7:
            anchor = {"property": name, "op": "eq", "value": rng.choice(CHOICES[name])}
        else:
            anchor = {"property": name, "op": "in", "value": rng.sample(CHOICES[name], 2)}
    elif draw < 0.75:
        anchor = {"in_list": rng.choice(LISTS)}
    elif draw < 0.9:
        anchor = event_filter(rng)
    else:
        anchor = {"property": "score", "op": "gte", "value": rng.randint(60, 90)}
    return {"all": [anchor, *children(rng, today, rng.randint(1, 3))]}


def workflow_definition(rng: random.Random, index: int, today: date) -> dict[str, Any]:
    key = f"wf-{index:03d}"
    enrollment: dict[str, Any] = {"trigger": "criteria", "criteria": criteria(rng, today)}
    if rng.random() < 0.25:
        draw = rng.random()
        if draw < 0.5:
            reenroll = {"properties": rng.sample(PROPERTIES[:15], rng.randint(1, 2))}
        elif draw < 0.8:
            reenroll = {"events": [rng.choices(EVENT_NAMES, EVENT_WEIGHTS)[0]]}
        else:
            reenroll = {"lists": [rng.choice(LISTS)]}
        enrollment["reenroll"] = reenroll
    definition: dict[str, Any] = {
        "key": key,
        "name": f"Workflow {index}",
        "object_type": OBJECT_TYPE,
        "enrollment": enrollment,
        "actions": [
            {"id": "tag", "type": "set_property", "property": "last_workflow", "value": key},
            {"id": "wait", "type": "delay", "duration": "3d"},
            {"id": "follow-up", "type": "create_task", "title": "Follow up {{ record.email }}"},
        ],
    }
    if rng.random() < 0.3:
        definition["goal"] = {"criteria": condition(rng, today, (1, 2))}
    settings: dict[str, Any] = {}
    if rng.random() < 0.2:
        settings["unenroll_when"] = condition(rng, today, (1, 2))
    if rng.random() < 0.15:
        settings["unenroll_when_criteria_unmet"] = True
    if rng.random() < 0.25:
        settings["suppression_lists"] = rng.sample(SUPPRESSION, rng.randint(1, 2))
    if settings:
        definition["settings"] = settings
    return definition


@dataclass
class RecordState:
    properties: dict[str, Any]
    lists: set[str] = field(default_factory=set)
    events: list[EventSnapshot] = field(default_factory=list)

    def snapshot(self, record_id: str) -> RecordSnapshot:
        return RecordSnapshot(
            object_type=OBJECT_TYPE,
            id=record_id,
            properties=dict(self.properties),
            lists=frozenset(self.lists),
            events=list(self.events),
        )


def random_properties(rng: random.Random, today: date, share: float) -> dict[str, Any]:
    return {name: property_value(rng, name, today) for name in PROPERTIES if rng.random() < share}


def random_event(rng: random.Random, at: datetime) -> EventSnapshot:
    name = rng.choices(EVENT_NAMES, EVENT_WEIGHTS)[0]
    spec = EVENTS[name]
    properties = {} if spec is None else {spec[0]: rng.choice(spec[1])}
    return EventSnapshot(name=name, occurred_at=at, properties=properties)


# ------------------------------------------------------------------------- the workload


@dataclass(frozen=True)
class Op:
    """One change to apply: to the in-memory records and, through the repositories, the store."""

    kind: str
    record_id: str
    values: dict[str, Any] = field(default_factory=dict)
    list_name: str | None = None
    event: EventSnapshot | None = None


@dataclass
class Workload:
    today: date
    now: datetime
    definitions: list[dict[str, Any]]
    records: dict[str, RecordState]
    enrollments: list[tuple[str, str, str]]  # (workflow key, record id, status)
    ops: list[Op]


def make_workload(workflows: int, changes: int, records: int, seed: int) -> Workload:
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    today = now.date()
    definitions = [workflow_definition(rng, i, today) for i in range(workflows)]
    initial: dict[str, RecordState] = {}
    for i in range(records):
        state = RecordState(random_properties(rng, today, rng.uniform(0.3, 0.7)))
        state.lists = set(rng.sample(LISTS, rng.choice([0, 0, 1, 1, 2, 3])))
        times = sorted(now - timedelta(minutes=rng.randint(60, 180 * 1440)) for _ in range(6))
        state.events = [random_event(rng, at) for at in times[: rng.randint(0, 6)]]
        initial[f"c{i:06d}"] = state
    keys, ids = [d["key"] for d in definitions], list(initial)
    pairs = {(rng.choice(keys), rng.choice(ids)) for _ in range(records * 2)}
    enrollments = [
        (key, record_id, "running" if rng.random() < 0.3 else "completed")
        for key, record_id in sorted(pairs)
    ]
    # The ops are generated against a copy of the records, so each one is a real change.
    records_now = {
        rid: RecordState(dict(s.properties), set(s.lists), list(s.events))
        for rid, s in initial.items()
    }
    ops: list[Op] = []
    start = now - timedelta(seconds=changes // 1000 + 1)
    while len(ops) < changes:
        at = start + timedelta(milliseconds=len(ops))
        draw = rng.random()
        record_id = rng.choice(ids)
        state = records_now[record_id]
        if draw < 0.08:
            record_id = f"n{len(ops):06d}"
            values = random_properties(rng, today, rng.uniform(0.1, 0.4))
            records_now[record_id] = RecordState(values)
            ids.append(record_id)
            ops.append(Op(CREATED, record_id, values=values))
        elif draw < 0.73:
            names = dict.fromkeys(rng.choices(PROPERTIES, WEIGHTS, k=rng.randint(1, 3)))
            values = {
                n: None if rng.random() < 0.05 else property_value(rng, n, today) for n in names
            }
            after = merge_properties(state.properties, values)
            if not changed_properties(state.properties, after):
                continue  # the store records no change for it either
            state.properties = after
            ops.append(Op(UPDATED, record_id, values=values))
        elif draw < 0.85:
            free = [n for n in LISTS if n not in state.lists]
            name = rng.choice(free)
            state.lists.add(name)
            ops.append(Op(LISTED, record_id, list_name=name))
        else:
            event = random_event(rng, at)
            state.events.append(event)
            ops.append(Op(EVENT, record_id, event=event))
    return Workload(today, now, definitions, initial, enrollments, ops)


def change_of(op: Op, change_id: int, state: RecordState | None) -> tuple[Change, RecordState]:
    """Apply the op to the in-memory record; returns the feed entry it makes and the record."""
    if op.kind == CREATED:
        state = RecordState(merge_properties({}, op.values))
        before = changed_properties({}, state.properties)
        return Change(change_id, OBJECT_TYPE, op.record_id, CREATED, tuple(before), before), state
    assert state is not None
    if op.kind == UPDATED:
        after = merge_properties(state.properties, op.values)
        before = changed_properties(state.properties, after)
        state.properties = after
        return Change(change_id, OBJECT_TYPE, op.record_id, UPDATED, tuple(before), before), state
    if op.kind == LISTED:
        assert op.list_name is not None
        state.lists.add(op.list_name)
        return Change(change_id, OBJECT_TYPE, op.record_id, LISTED, list_name=op.list_name), state
    assert op.event is not None
    state.events.append(op.event)
    return (
        Change(change_id, OBJECT_TYPE, op.record_id, EVENT, event_name=op.event.name),
        state,
    )


# ------------------------------------------------------------------------- measurements


@dataclass
class Stats:
    micros: list[float] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    concerned: int = 0
    enter: int = 0
    leave: int = 0
    decisions: Counter[str] = field(default_factory=Counter)

    def add(self, kind: str, seconds: float) -> None:
        self.kinds.append(kind)
        self.micros.append(seconds * 1e6)


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return (
        f"mean {statistics.fmean(ordered):7.1f}  median {statistics.median(ordered):7.1f}  "
        f"p95 {p95:7.1f}  max {ordered[-1]:8.1f}"
    )


def decision_name(decision: Any) -> str:
    return "enroll" if isinstance(decision, Enroll) else decision.status


def run_in_memory(workload: Workload, triggers: list[Trigger]) -> Stats:
    """(a): index lookups and decide() only; the record's enrollments are kept in memory."""
    index = TriggerIndex(triggers)
    records = {
        rid: RecordState(dict(s.properties), set(s.lists), list(s.events))
        for rid, s in workload.records.items()
    }
    active: dict[str, dict[str, ActiveEnrollment]] = defaultdict(dict)
    ever: dict[str, set[str]] = defaultdict(set)
    versions = {t.key: t.version for t in triggers}
    for n, (key, record_id, status) in enumerate(workload.enrollments):
        ever[record_id].add(key)
        if status in ACTIVE_STATUSES:
            wid = temporal_workflow_id(key, OBJECT_TYPE, record_id, 1)
            active[record_id][key] = ActiveEnrollment(n, key, versions[key], wid)
    stats = Stats()
    clock = time.perf_counter
    for n, op in enumerate(workload.ops, 1):
        change, state = change_of(op, n, records.get(op.record_id))
        records[op.record_id] = state
        snapshot = state.snapshot(op.record_id)
        mine = active[op.record_id]
        was = ever[op.record_id]
        began = clock()
        enter = index.enter(change)
        leave_ids = index.leave(change)
        candidates = len(enter)
        decisions: list[Any] = []
        if enter or leave_ids or change.kind == DELETED:
            leave = [
                (trigger, e)
                for e in mine.values()
                if (change.kind == DELETED or (e.key, e.version) in leave_ids)
                and (trigger := index.trigger(e.key, e.version)) is not None
            ]
            enter = [t for t in enter if t.key not in mine]
            ever_enrolled = frozenset(t.key for t in enter if t.key in was)
            decisions = decide(
                change,
                snapshot,
                enter=enter,
                leave=leave,
                ever_enrolled=ever_enrolled,
                now=workload.now,
            )
        stats.add(change.kind, clock() - began)
        if candidates or leave_ids:
            stats.concerned += 1
            stats.enter += candidates
            stats.leave += len(leave_ids)
        for decision in decisions:  # what the workflows would then do, off the clock
            stats.decisions[decision_name(decision)] += 1
            if isinstance(decision, Enroll):
                wid = f"{decision.key}:{op.record_id}:{n}"
                mine[decision.key] = ActiveEnrollment(-n, decision.key, versions[decision.key], wid)
                was.add(decision.key)
            else:
                mine.pop(decision.enrollment.key, None)
    return stats


class _Handle:
    def __init__(self, client: StandInClient, workflow_id: str) -> None:
        self.client, self.workflow_id = client, workflow_id

    async def signal(self, _signal: Any, arg: Any = None) -> None:
        if isinstance(arg, GoalMetSignal):
            self.client.ended.append((self.workflow_id, "goal_met", arg.detail))
        elif isinstance(arg, UnenrollSignal):
            self.client.ended.append((self.workflow_id, "unenrolled", arg.reason))


class StandInClient:
    """What the dispatcher needs of a Temporal client, doing nothing; remembers the
    unenrollments asked for, so the bench can write them as the workflows would."""

    def __init__(self) -> None:
        self.started = 0
        self.ended: list[tuple[str, str, str]] = []

    async def start_workflow(self, *args: Any, **kwargs: Any) -> None:
        self.started += 1

    def get_workflow_handle(self, workflow_id: str) -> _Handle:
        return _Handle(self, workflow_id)


def fill_store(app: App, workload: Workload, tmp: Path) -> None:
    """Records, lists, events, workflows (published and activated through the services) and
    earlier enrollments: the store as the changes find it."""
    now = workload.now
    with app.sessions.begin() as session:
        session.execute(
            insert(RecordList),
            [{"name": n, "object_type": OBJECT_TYPE, "created_at": now} for n in LISTS],
        )
        rows = list(workload.records.items())
        for start in range(0, len(rows), 2000):
            chunk = rows[start : start + 2000]
            session.execute(
                insert(Record),
                [
                    {
                        "object_type": OBJECT_TYPE,
                        "id": rid,
                        "properties": s.properties,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for rid, s in chunk
                ],
            )
            members = [
                {"list_name": n, "object_type": OBJECT_TYPE, "record_id": rid, "added_at": now}
                for rid, s in chunk
                for n in s.lists
            ]
            events = [
                {
                    "object_type": OBJECT_TYPE,
                    "record_id": rid,
                    "name": e.name,
                    "occurred_at": e.occurred_at,
                    "properties": e.properties,
                }
                for rid, s in chunk
                for e in s.events
            ]
            if members:
                session.execute(insert(ListMembership), members)
            if events:
                session.execute(insert(Event), events)
    paths = []
    for definition in workload.definitions:
        path = tmp / f"{definition['key']}.json"
        path.write_text(json.dumps(definition), encoding="utf-8")
        paths.append(path)
    services.publish_files(app, paths)

    async def activate_all() -> None:
        for definition in workload.definitions:
            await services.activate(app, definition["key"])

    asyncio.run(activate_all())
    with app.sessions.begin() as session:
        session.execute(
            insert(Enrollment),
            [
                {
                    "workflow_key": key,
                    "version": 1,
                    "object_type": OBJECT_TYPE,
                    "record_id": rid,
                    "seq": 1,
                    "status": status,
                    "source": "criteria",
                    "enrolled_at": now - timedelta(days=30),
                    "ended_at": None if status in ACTIVE_STATUSES else now - timedelta(days=1),
                    "temporal_workflow_id": temporal_workflow_id(key, OBJECT_TYPE, rid, 1),
                }
                for key, rid, status in workload.enrollments
            ],
        )


def write_change(app: App, op: Op, now: datetime) -> None:
    """One change in its own transaction, through the repositories the CLI commands use (they
    append the change feed entry)."""
    with app.sessions.begin() as session:
        if op.kind in (CREATED, UPDATED):
            RecordRepository(session).upsert(OBJECT_TYPE, op.record_id, op.values, now=now)
        elif op.kind == LISTED:
            assert op.list_name is not None
            ListRepository(session).add(op.list_name, OBJECT_TYPE, op.record_id, now=now)
        else:
            assert op.event is not None
            e = op.event
            EventRepository(session).add(
                OBJECT_TYPE, op.record_id, e.name, e.properties, occurred_at=e.occurred_at
            )


# What the dispatcher calls, timed one by one in (b); nested calls are indented. A name the
# current code does not have is skipped.
TIMED_CALLS: list[tuple[Any, str, str]] = [
    (Dispatcher, "refresh_index", "Dispatcher.refresh_index (each dispatch_pending)"),
    (WorkflowRepository, "generation", "  WorkflowRepository.generation"),
    (ChangeRepository, "pending", "ChangeRepository.pending (each dispatch_pending)"),
    (EnrollmentRepository, "of_record", "EnrollmentRepository.of_record"),
    (dispatcher_module, "load_snapshot", "load_snapshot"),
    (dispatcher_module, "decide", "decide (no I/O)"),
    (EnrollmentStarter, "start", "EnrollmentStarter.start (no Temporal)"),
    (EnrollmentRepository, "by_trigger", "  EnrollmentRepository.by_trigger"),
    (starting_module, "load_snapshot", "  load_snapshot"),
    (EnrollmentRepository, "create", "  EnrollmentRepository.create"),
    (Dispatcher, "_mark", "Dispatcher._mark (a write transaction)"),
]
# The top-level calls made inside Dispatcher.dispatch: the rest of its time is its own.
IN_DISPATCH = ("of_record", "load_snapshot", "decide", "start")


@contextmanager
def timing_calls(spent: dict[str, list[float]]) -> Iterator[None]:
    """Wrap TIMED_CALLS (in this process only) to add up their time in `spent`."""
    clock = time.perf_counter
    originals = []

    def wrap(name: str, label: str, call: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(call):

            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                began = clock()
                try:
                    return await call(*args, **kwargs)
                finally:
                    spent[label].append(clock() - began)

            return timed_async

        def timed(*args: Any, **kwargs: Any) -> Any:
            if name == "_mark" and not args[-1]:
                return call(*args, **kwargs)  # nothing to mark: no transaction, not counted
            began = clock()
            try:
                return call(*args, **kwargs)
            finally:
                spent[label].append(clock() - began)

        return timed

    for owner, name, label in TIMED_CALLS:
        original = getattr(owner, name, None)
        if original is None:
            continue
        originals.append((owner, name, original))
        setattr(owner, name, wrap(name, label, original))
    try:
        yield
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


@dataclass
class StoreRun:
    stats: Stats
    loop_seconds: float
    calls: dict[str, list[float]]
    started: int


async def run_on_store(app: App, workload: Workload) -> StoreRun:
    """(b): the real dispatcher over the change feed, with a stand-in Temporal client. Each
    change is written (off the clock), then dispatched, as a running dispatcher sees changes
    come in one at a time: it then reads the record as it was right after the change, as (a)."""
    client = StandInClient()
    dispatcher = Dispatcher(app.sessions, client, task_queue="bench")  # type: ignore[arg-type]
    stats = Stats()
    calls: dict[str, list[float]] = defaultdict(list)
    clock = time.perf_counter
    real_dispatch = dispatcher.dispatch
    off_clock = 0.0

    async def dispatch(change: Change) -> bool:
        nonlocal off_clock
        index = dispatcher._index
        assert index is not None
        began = clock()
        concerned = await real_dispatch(change)
        stats.add(change.kind, clock() - began)
        if concerned:
            enter, leave = index.enter(change), index.leave(change)
            if enter or leave:
                stats.concerned += 1
                stats.enter += len(enter)
                stats.leave += len(leave)
        # The enrollments the signals end, written as the workflows would (off the clock).
        ended, client.ended = client.ended, []
        if ended:
            writing = clock()
            with app.sessions.begin() as session:
                for workflow_id, status, reason in ended:
                    stats.decisions[status] += 1
                    session.execute(
                        update(Enrollment)
                        .where(
                            Enrollment.temporal_workflow_id == workflow_id,
                            Enrollment.status.in_(ACTIVE_STATUSES),
                        )
                        .values(status=status, reason=reason, ended_at=datetime.now(UTC))
                    )
            off_clock += clock() - writing
        return concerned

    dispatcher.dispatch = dispatch  # type: ignore[method-assign]
    loop_seconds = 0.0
    with timing_calls(calls):
        for op in workload.ops:
            write_change(app, op, workload.now)
            began = clock()
            await dispatcher.dispatch_pending()
            loop_seconds += clock() - began
    loop_seconds -= off_clock
    stats.decisions["enroll"] = client.started
    with app.sessions() as session:
        if left := ChangeRepository(session).count_pending():
            print(f"  warning: {left} changes left undispatched")
    return StoreRun(stats, loop_seconds, calls, started=client.started)


def print_stats(title: str, stats: Stats) -> None:
    print(f"{title}: microseconds per change")
    print(f"  all {len(stats.micros):6d} changes  {summary(stats.micros)}")
    by_kind: dict[str, list[float]] = defaultdict(list)
    for kind, micros in zip(stats.kinds, stats.micros, strict=True):
        by_kind[kind].append(micros)
    for kind in (UPDATED, LISTED, EVENT, CREATED):
        if by_kind[kind]:
            print(f"  {kind:8s} {len(by_kind[kind]):5d}   {summary(by_kind[kind])}")


def verdict(label: str, stats: Stats) -> str:
    mean = statistics.fmean(stats.micros)
    p95 = sorted(stats.micros)[int(len(stats.micros) * 0.95)]
    met = "meets" if mean <= TARGET_US else "MISSES"
    return f"  {label}: mean {mean:.0f} us, p95 {p95:.0f} us -> {met} the target"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=200, help="active workflows (200)")
    parser.add_argument("--changes", type=int, default=10_000, help="record changes (10000)")
    parser.add_argument("--records", type=int, default=10_000, help="records in the store (10000)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (7)")
    parser.add_argument("--db", help="store URL, an empty store (default: a temporary SQLite file)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="crmflow-trigger-bench-"))
    db_url = args.db or f"sqlite:///{tmp / 'store.db'}"
    ensure_postgres_database(db_url)
    app = App(Settings(db_url=db_url, task_queue="bench"))
    with app.sessions() as session:
        if WorkflowRepository(session).all() or ChangeRepository(session).last_id():
            app.close()
            shutil.rmtree(tmp, ignore_errors=True)
            sys.exit(f"{db_url}: the store is not empty; give the URL of an empty one")
    workload = make_workload(args.workflows, args.changes, args.records, args.seed)
    definitions = [WorkflowDefinition.model_validate(d) for d in workload.definitions]
    triggers = [Trigger.of(d, 1, active=True, activated_change_id=0) for d in definitions]
    kinds = Counter(op.kind for op in workload.ops)
    print(
        f"{len(triggers)} active criteria workflows "
        f"({sum(d.goal is not None for d in definitions)} with a goal, "
        f"{sum(d.settings.unenroll_when is not None for d in definitions)} unenroll_when, "
        f"{sum(bool(d.settings.suppression_lists) for d in definitions)} suppression lists, "
        f"{sum(d.enrollment.reenroll is not None for d in definitions)} reenroll); "
        f"{len(workload.ops)} changes ({', '.join(f'{n} {k}' for k, n in kinds.items())}) "
        f"on {len(workload.records)} records with {len(workload.enrollments)} earlier enrollments"
    )
    readers = Counter(name for t in triggers for name in t.enter.properties | t.leave.properties)
    print(
        "most read properties: "
        + ", ".join(f"{name} by {n} workflows" for name, n in readers.most_common(4))
    )

    # The bench's own objects (10,000 records and their snapshots) are not the dispatcher's:
    # keep the cyclic garbage collector from scanning them again and again on the clock.
    gc.collect()
    gc.freeze()
    memory = run_in_memory(workload, triggers)
    n = len(memory.micros)
    print(
        f"changes concerning at least one workflow: {memory.concerned} of {n} "
        f"({memory.concerned / n:.0%}); candidate workflows per change: "
        f"{memory.enter / n:.1f} to enroll in + {memory.leave / n:.1f} whose exit rules read it"
    )
    print_stats("(a) index + decide, in memory", memory)
    print(f"  decisions: {dict(memory.decisions)}")

    try:
        fill_store(app, workload, tmp)
        print(f"store {app.engine.url.render_as_string(hide_password=True)}")
        gc.collect()
        gc.freeze()
        run = asyncio.run(run_on_store(app, workload))
    finally:
        app.close()
        shutil.rmtree(tmp, ignore_errors=True)
    stats = run.stats
    n = len(stats.micros)
    print_stats("(b) Dispatcher.dispatch() with its store reads, no Temporal", stats)
    print(
        f"  dispatch_pending() per change (+ reading the feed, refreshing the index, marking): "
        f"{run.loop_seconds / n * 1e6:.0f} us"
    )
    print(f"  decisions: {dict(stats.decisions)}")
    print("  where the time goes (calls nested under the one above are part of it):")
    print(f"    {'call':55s} {'calls':>6s} {'us/call':>8s} {'us/change':>9s}")
    for _, _, label in TIMED_CALLS:
        if spent := run.calls.get(label):
            print(
                f"    {label:55s} {len(spent):6d} {statistics.fmean(spent) * 1e6:8.0f} "
                f"{sum(spent) / n * 1e6:9.0f}"
            )
    inside = sum(
        sum(run.calls.get(label, ()))
        for _, name, label in TIMED_CALLS
        if name in IN_DISPATCH and not label.startswith(" ")
    )
    own = sum(stats.micros) - inside * 1e6
    print(
        f"    {'rest of dispatch() (sessions, index, Python)':55s} {'':6s} {'':8s} {own / n:9.0f}"
    )
    print("target <= 1 ms (1000 us) per change:")
    print(verdict("(a) in memory", memory))
    print(verdict("(b) dispatch() on the store", stats))


if __name__ == "__main__":
    main()
