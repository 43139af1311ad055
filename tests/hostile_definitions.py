"""Hypothesis strategies of hostile definition documents: deep nesting, YAML aliases (billion
laughs, recursion), NaN/infinite/huge numbers, long text, odd YAML types, NUL and surrogates,
and templates that compute, loop or reach for attributes, dropped into every place a value can
stand in an otherwise valid definition, in YAML and in JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass

from hypothesis import strategies as st

# The document: `@` marks where the hostile value goes.
CRITERIA_DEFAULT = "{property: p, op: known}"
ACTION_DEFAULT = "{id: a, type: set_property, property: x, value: 1}"


def document(criteria: str = CRITERIA_DEFAULT, action: str = ACTION_DEFAULT) -> str:
    return (
        "key: hostile\n"
        "name: Hostile\n"
        "enrollment:\n"
        "  trigger: criteria\n"
        f"  criteria: {criteria}\n"
        "actions:\n"
        f"  - {action}\n"
        "  - {id: tail, type: clear_property, property: x}\n"
    )


CRITERIA_PLACES = [
    "@",
    "{property: p, op: eq, value: @}",
    "{property: p, op: between, value: [1, @]}",
    "{property: p, op: in, value: [a, @]}",
    "{all: [{property: p, op: known}, @]}",
    "{not: @}",
    "{event: @}",
    "{event: e, where: {k: @}, min_count: 1}",
    "{event: e, min_count: @}",
]
ACTION_PLACES = [
    "@",
    "{id: a, type: set_property, property: x, value: @}",
    "{id: a, type: increment_property, property: x, by: @}",
    "{id: a, type: split, paths: [{percent: @, next: tail}]}",
    "{id: a, type: value_branch, property: x, cases: {@: tail}}",
    "{id: a, type: value_branch, property: x, cases: {v: @}}",
    "{id: a, type: custom, handler: h, params: {p: @}}",
    "{id: a, type: custom, handler: h, params: {p: [{q: [@]}]}}",
    "{id: a, type: webhook, url: 'https://example.com', body: {b: [@]}}",
    "{id: a, type: webhook, url: 'https://example.com', headers: {X-A: @}}",
    "{id: a, type: webhook, url: @}",
    "{id: a, type: send_email, subject: @, body: b}",
    "{id: a, type: create_record, object_type: deal, properties: {n: @}}",
    "{id: a, type: delay, duration: @}",
    "{id: a, type: wait_for_event, event: e, where: {k: @}}",
    "{id: a, type: branch, branches: [{name: n, when: @, next: tail}]}",
    "{id: @, type: clear_property, property: x}",
]

NUMBERS = st.one_of(
    st.sampled_from([".nan", ".NaN", ".inf", "-.inf", "+.inf", "1e999", "-1e999", "1e308"]),
    st.integers(300, 6000).map(lambda n: "9" * n),
    st.integers(300, 5000).map(lambda n: "0x" + "f" * n),
    st.integers(-400, 400).map(lambda e: f"1.5e{e}"),
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)

NODES = [
    "{{not: {}}}",
    "{{any: [{}]}}",
    "{{all: [{}, {{property: p, op: known}}]}}",
    "[{}]",
    "{{k: {}}}",
]


@st.composite
def deep(draw: st.DrawFn) -> str:
    levels = draw(st.lists(st.sampled_from(NODES), min_size=1, max_size=400))
    text = "{property: p, op: known}"
    for node in levels:
        text = node.format(text)
    return text


@st.composite
def aliases(draw: st.DrawFn) -> str:
    """A flow list defining and expanding anchors: a billion laughs of random shape, or an
    alias inside its own anchor."""
    if draw(st.booleans()):
        return draw(st.sampled_from(["&r [*r]", "&r {a: [*r]}", "&r [1, [2, *r]]"]))
    levels = draw(st.integers(1, 12))
    fanout = draw(st.integers(2, 12))
    parts = ["&a0 [lol, lol, lol]"]
    for level in range(1, levels + 1):
        parts.append(f"&a{level} [{', '.join([f'*a{level - 1}'] * fanout)}]")
    return "[" + ", ".join(parts) + "]"


EXPRESSIONS = st.sampled_from(
    [
        "record.x",
        "record['a b']",
        "workflow.key",
        "enrollment.id",
        "''",
        "'a'",
        "10",
        "500000000",
        "5000000",
        "record",
        "''.__class__",
        "record.x.y",
        "range(10)",
        "lipsum()",
        "cycler",
        "[1, 2]",
        "{'a': 1}",
        "1" + "0" * 5000,
    ]
)
OPERATORS = st.sampled_from(
    [" * ", " ** ", " + ", " ~ ", " and ", " or ", " in ", " == ", " > ", " // ", " % "]
)
FILTERS = st.sampled_from(
    [
        "upper",
        "default('x')",
        "replace('', 'abcdefgh')",
        "round(99999)",
        "int",
        "format(1)",
        "attr('__class__')",
        "join(',')",
        "truncate(5)",
        "list",
        "e",
    ]
)


@st.composite
def templates(draw: st.DrawFn) -> str:
    expression = draw(EXPRESSIONS)
    for _ in range(draw(st.integers(0, 4))):
        expression = f"({expression}{draw(OPERATORS)}{draw(EXPRESSIONS)})"
    for _ in range(draw(st.integers(0, 3))):
        expression = f"{expression} | {draw(FILTERS)}"
    wrapper = draw(
        st.sampled_from(
            [
                "{{{{ {} }}}}",
                "{{% if {} %}}y{{% endif %}}",
                "{{% for c in {} %}}{{% for d in {} %}}.{{% endfor %}}{{% endfor %}}",
                "{{% set v = {} %}}{{{{ v }}}}",
                "{{% macro m() %}}{}{{% endmacro %}}",
                "{{{{ {}",
            ]
        )
    )
    return json.dumps(wrapper.replace("{}", expression, 1).replace("{}", expression))


ODD = st.sampled_from(
    [
        "!!binary aGVsbG8=",
        "!!set {a, b}",
        "!shout hello",
        "!!python/object:os.system {a: 1}",
        "!!str 12",
        "!!float '1'",
        "null",
        "~",
        "true",
        "[]",
        "{}",
        "{? [a, b] : c}",
        '"\\0"',
        '"\\ud800"',
        '"\\x01\\u2028\\t"',
        "'",
        "*undefined",
        "&anchor",
        "[1, 2",
        "{a: 1, a: 2}",
        "- x",
    ]
)

TEXT = st.one_of(
    st.integers(0, 80_000).map(lambda n: json.dumps("x" * n)),
    st.text(max_size=30).map(json.dumps),
)

HOSTILE = st.one_of(NUMBERS, deep(), aliases(), templates(), ODD, TEXT)


@dataclass(frozen=True)
class Hostile:
    text: str
    fmt: str  # "yaml" or "json"

    @property
    def suffix(self) -> str:
        return ".json" if self.fmt == "json" else ".yaml"


@st.composite
def yaml_documents(draw: st.DrawFn) -> Hostile:
    value = draw(HOSTILE)
    if draw(st.booleans()):
        text = document(criteria=draw(st.sampled_from(CRITERIA_PLACES)).replace("@", value))
    else:
        text = document(action=draw(st.sampled_from(ACTION_PLACES)).replace("@", value))
    return Hostile(text, "yaml")


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "9" * 5000]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


@st.composite
def json_documents(draw: st.DrawFn) -> Hostile:
    """A valid definition as JSON, one value replaced by random JSON (NaN and Infinity
    included, as Python's json module writes them), or nested very deep."""
    value = json.dumps(draw(JSON_VALUES))
    for raw in ("NaN", "Infinity", "-Infinity", "1e999", "9" * 5000):
        value = value.replace(json.dumps(raw), raw)
    if draw(st.booleans()):
        depth = draw(st.integers(1, 3000))
        value = "[" * depth + value + "]" * depth
    place = draw(
        st.sampled_from(
            [
                '{"property": "p", "op": "eq", "value": @}',
                '{"property": "p", "op": "between", "value": [1, @]}',
                "@",
            ]
        )
    )
    action = draw(
        st.sampled_from(
            [
                '{"id": "a", "type": "custom", "handler": "h", "params": {"p": @}}',
                '{"id": "a", "type": "increment_property", "property": "x", "by": @}',
                '{"id": "a", "type": "set_property", "property": "x", "value": @}',
            ]
        )
    )
    in_criteria = draw(st.booleans())
    criteria = place.replace("@", value) if in_criteria else '{"property": "p", "op": "known"}'
    action = '{"id": "a", "type": "clear_property", "property": "x"}' if in_criteria else action
    text = (
        '{"key": "hostile", "name": "Hostile", "enrollment": {"trigger": "criteria", '
        f'"criteria": {criteria}}}, "actions": [{action.replace("@", value)}]}}'
    )
    return Hostile(text, "json")


documents = st.one_of(yaml_documents(), json_documents())
"""Any hostile definition document."""
