"""Hypothesis strategies: valid workflow definitions of every shape, full of hostile text.

A definition is drawn as its document (a dict, as YAML would give) and validated by the real
model, so only definitions `crmflow validate` accepts come out. The action graph is acyclic by
construction (targets only point forward) and every action is reachable (each one is the target
of an earlier one; see `_wire`). Every free text (names, branch names, values, subjects, list
and event names) is drawn from text made to break labels: quotes, brackets, `#`, `<`, `>`, `&`,
`%%{init}%%`, `-->`, `</svg>`, backslash escapes of Graphviz (`\\N`, `\\l`), RTL marks, emoji.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from crmflow.definitions import WorkflowDefinition

HOSTILE = [
    '"',
    "'\"",
    "<script>alert(1)</script>",
    "</svg><svg onload=alert(1)>",
    "]]>",
    "<![CDATA[x]]>",
    "&amp; &lt; &#35; #quot; #35;",
    "A[x] --> B(y) {z} |w|",
    "%%{init: {'theme': 'dark'}}%%",
    "end",
    "subgraph",
    "x;y:z",
    "\\N \\G \\l \\r \\n \\E \\T \\H \\L \\",
    "a\\",
    "`**md**`",
    "click A call alert()",
    "classDef x fill:red",
    "👩\u200d💻 مرحبا \u202e gnp.exe",
    "\u2028 sep",
    "tab\tin",
    "x" * 150,
    "🙂" * 70,
]
_ALPHABET = st.characters(
    codec="utf-8",
    exclude_categories=("Cs",),
    include_characters="\"'<>&#|[](){}%`\\;:-*_~=!/@ \t\r\u2028\u00a0\u200b\U0001f600",
)


def _strip(text: str) -> str:
    return text.strip()


texts = st.one_of(st.sampled_from(HOSTILE), st.text(_ALPHABET, min_size=1, max_size=30))


def _name(text: str) -> str:
    """A name (list, event, branch, handler): no control character, no space at either end, at
    most 128 characters (the definition format's rules)."""
    shown = "".join("?" if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F else c for c in text)
    return " ".join(shown.split())[:128].strip()


names = texts.map(_name).filter(bool)
# Text fields that are templates: no braces, or a valid template.
template_texts = st.one_of(
    texts.map(lambda t: t.replace("{", "(").replace("}", ")")),
    st.sampled_from(["Hi {{ record.firstname }}", "{{ workflow.name }}: {{ enrollment.id }}"]),
)
property_names = st.sampled_from(["email", "lifecycle_stage", "seats", "plan", "a.b-c_d", "X"])
durations = st.sampled_from(["30s", "15m", "2h", "3d", "1w", "1d12h", "P1DT12H", "PT0.5S"])
scalars = st.one_of(
    texts,
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)


@st.composite
def property_filters(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(property_names)
    op = draw(
        st.sampled_from(
            [
                "eq",
                "neq",
                "in",
                "not_in",
                "contains",
                "not_contains",
                "starts_with",
                "ends_with",
                "gt",
                "gte",
                "lt",
                "lte",
                "between",
                "known",
                "unknown",
                "before",
                "after",
                "within_last",
                "more_than_ago",
            ]
        )
    )
    value: Any
    if op in ("eq", "neq"):
        value = draw(scalars)
    elif op in ("in", "not_in"):
        value = draw(st.lists(scalars, min_size=1, max_size=3))
    elif op in ("contains", "not_contains", "starts_with", "ends_with"):
        value = draw(texts)
    elif op in ("gt", "gte", "lt", "lte"):
        value = draw(st.one_of(st.integers(-1000, 1000), st.just("2026-01-05T10:00Z")))
    elif op == "between":
        value = draw(st.sampled_from([[1, 10], ["2026-01-01", "2026-02-01"]]))
    elif op in ("before", "after"):
        value = draw(st.sampled_from(["2026-01-05", "-30d", "+1d", "0s"]))
    elif op in ("within_last", "more_than_ago"):
        value = draw(durations)
    else:
        return {"property": name, "op": op}
    return {"property": name, "op": op, "value": value}


leaves = st.one_of(
    property_filters(),
    st.builds(lambda n: {"in_list": n}, names),
    st.builds(lambda n: {"not_in_list": n}, names),
    st.builds(
        lambda event, where, within, count: {
            "event": event,
            "where": where,
            **({"within": within} if within else {}),
            "min_count": count,
        },
        names,
        st.dictionaries(texts, st.one_of(scalars, st.none()), max_size=2),
        st.one_of(st.none(), durations),
        st.integers(1, 5),
    ),
)
conditions = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.builds(lambda c: {"all": c}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda c: {"any": c}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda c: {"not": c}, children),
    ),
    max_leaves=6,
)

_PLAIN_ACTIONS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "delay": st.one_of(
        st.builds(lambda d: {"duration": d}, durations),
        st.just({"until_time": "09:00"}),
        st.just({"until_weekday": ["mon", "thu"], "at": "08:30"}),
        st.just({"until_property": "renewal", "offset": "-7d", "at": "09:00"}),
        st.just({"until_date": "2027-01-01T09:00:00+01:00"}),
    ),
    "set_property": st.builds(
        lambda p, v: {"property": p, "value": v},
        property_names,
        st.one_of(template_texts, st.integers(), st.booleans(), st.none()),
    ),
    "copy_property": st.builds(lambda a, b: {"from": a, "to": b}, property_names, property_names),
    "clear_property": st.builds(lambda p: {"property": p}, property_names),
    "increment_property": st.builds(
        lambda p, by: {"property": p, "by": by}, property_names, st.integers(-5, 5)
    ),
    "add_to_list": st.builds(lambda n: {"list": n}, names),
    "remove_from_list": st.builds(lambda n: {"list": n}, names),
    "send_email": st.builds(lambda s, b: {"subject": s, "body": b}, template_texts, template_texts),
    "notify": st.builds(
        lambda s: {"to": "sales@example.com", "subject": s, "body": "x"}, template_texts
    ),
    "create_task": st.builds(lambda t: {"title": t, "due_in": "1d"}, template_texts),
    "create_record": st.builds(
        lambda v: {"object_type": "deal", "properties": {"name": v}}, template_texts
    ),
    "webhook": st.builds(
        lambda path: {"url": "https://hooks.example.com/" + path, "method": "PUT"}, template_texts
    ),
    "enroll_in_workflow": st.just({"workflow": "other-flow"}),
    "unenroll_from_workflow": st.just({"workflows": ["other-flow", "third"]}),
    "custom": st.builds(lambda h: {"handler": h, "params": {"x": 1}}, names),
}
ACTION_TYPES = [*_PLAIN_ACTIONS, "wait_for_event", "branch", "value_branch", "split"]


@st.composite
def definitions(draw: st.DrawFn) -> WorkflowDefinition:
    count = draw(st.integers(1, 8))
    ids = [f"a{i}" if draw(st.booleans()) else f"step-{i}_x" for i in range(count)]
    actions = [_action(draw, ids, index) for index in range(count)]
    _wire(draw, actions, ids)
    trigger = draw(st.sampled_from(["manual", "criteria", "schedule"]))
    enrollment: dict[str, Any] = {"trigger": trigger}
    settings: dict[str, Any] = {"timezone": draw(st.sampled_from(["UTC", "Europe/Paris"]))}
    if trigger != "manual":
        enrollment["criteria"] = draw(conditions)
    if trigger == "schedule":
        enrollment["schedule"] = draw(
            st.sampled_from(
                [
                    {"every": "day", "at": "08:00"},
                    {"every": "week", "at": "08:00", "days": ["fri", "mon"]},
                    {"every": "month", "at": "08:00", "days_of_month": [1, 31]},
                    {"every": "month", "at": "08:00", "on": "last_friday"},
                    {"every": "year", "at": "08:00", "month": 2, "day": 29},
                ]
            )
        )
    if trigger == "criteria":
        if draw(st.booleans()):
            enrollment["reenroll"] = {
                "properties": draw(st.lists(property_names, max_size=2)),
                "events": draw(st.lists(names, min_size=1, max_size=2)),
                "lists": draw(st.lists(names, max_size=2)),
            }
        settings["unenroll_when_criteria_unmet"] = draw(st.booleans())
    if draw(st.booleans()):
        settings["unenroll_when"] = draw(conditions)
    settings["suppression_lists"] = draw(st.lists(names, max_size=2))
    document: dict[str, Any] = {
        "key": draw(st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True)),
        "name": draw(texts),
        "object_type": draw(st.sampled_from(["contact", "deal"])),
        "enrollment": enrollment,
        "actions": actions,
        "settings": settings,
    }
    if draw(st.booleans()):
        document["goal"] = {"criteria": draw(conditions)}
    return WorkflowDefinition.model_validate(document)


def _action(draw: st.DrawFn, ids: list[str], index: int) -> dict[str, Any]:
    kind = draw(st.sampled_from(ACTION_TYPES))
    action: dict[str, Any] = {"id": ids[index], "type": kind}
    if kind in _PLAIN_ACTIONS:
        action.update(draw(_PLAIN_ACTIONS[kind]))
    elif kind == "wait_for_event":
        action["event"] = draw(names)
        action["where"] = draw(st.dictionaries(texts, scalars, max_size=2))
        if draw(st.booleans()):
            action["timeout"] = draw(durations)
    elif kind == "branch":
        branch_names = draw(st.lists(names, min_size=1, max_size=4, unique=True))
        action["branches"] = [{"name": n, "when": draw(conditions)} for n in branch_names]
    elif kind == "value_branch":
        action["property"] = draw(property_names)
        action["cases"] = {
            value: None for value in draw(st.lists(texts, min_size=1, max_size=5, unique=True))
        }
    else:
        percents = draw(st.sampled_from([[100], [50, 50], [10, 20, 70], [1, 1, 98]]))
        action["paths"] = [{"percent": p} for p in percents]
    return action


def _wire(draw: st.DrawFn, actions: list[dict[str, Any]], ids: list[str]) -> None:
    """Fill every target with a later action or `end` (acyclic). Branching actions always have
    the following action among their targets; a plain action may jump (`next: <later id>`) or
    end (`next: end`), and is made to fall through again where that would leave the following
    action unreachable."""
    for index, action in enumerate(actions):
        later = ids[index + 1 :]
        follower = later[0] if later else "end"
        targets = st.sampled_from([*later, "end"])
        kind = action["type"]
        if kind == "split":
            for path in action["paths"]:
                path["next"] = draw(targets)
            action["paths"][0]["next"] = follower
        elif kind == "branch":
            for case in action["branches"]:
                case["next"] = draw(targets)
            if draw(st.booleans()):
                action["otherwise"] = follower  # else: continues with the following action
        elif kind == "value_branch":
            for value in action["cases"]:
                action["cases"][value] = draw(targets)
            if draw(st.booleans()):
                action["otherwise"] = follower
        elif kind == "wait_for_event":
            if "timeout" in action and draw(st.booleans()):
                action["on_timeout"] = follower
                action["next"] = draw(targets)
        elif draw(st.booleans()):
            action["next"] = draw(targets)
    reached = {ids[0]}
    for index, action in enumerate(actions):
        if index + 1 < len(ids) and action["id"] in reached:
            follower = ids[index + 1]
            if action["type"] in _PLAIN_ACTIONS and follower not in _targets(actions, reached):
                action.pop("next", None)
        reached |= _targets(actions, reached)


def _targets(actions: list[dict[str, Any]], reached: set[str]) -> set[str]:
    """The ids that the reached actions lead to (explicitly or by falling through)."""
    found: set[str] = set()
    for index, action in enumerate(actions):
        if action["id"] not in reached:
            continue
        explicit = [
            action.get("next"),
            action.get("otherwise"),
            action.get("on_timeout"),
            *(path["next"] for path in action.get("paths", [])),
            *(case["next"] for case in action.get("branches", [])),
            *action.get("cases", {}).values(),
        ]
        found |= {target for target in explicit if target not in (None, "end")}
        falls = action["type"] != "split" and action.get("next") is None
        falls = falls and action.get("otherwise") is None
        if falls and index + 1 < len(actions):
            found.add(actions[index + 1]["id"])
    return found
