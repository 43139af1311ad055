"""Limits and refusals of the loader: numbers no definition can hold, documents too big, too
deep or too aliased, and the size and shape limits of new definitions. Every refusal is a
located problem, never an exception of another kind."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crmflow import limits
from crmflow.definitions import (
    DefinitionError,
    Problem,
    WorkflowDefinition,
    load_definition_data,
    load_definition_file,
    load_definition_text,
)

Problems = Callable[..., list[Problem]]
Load = Callable[..., WorkflowDefinition]
README = Path(__file__).parents[2] / "README.md"


def one(found: list[Problem]) -> Problem:
    assert len(found) == 1, found
    return found[0]


def json_problems(document: dict[str, Any] | str) -> list[Problem]:
    text = document if isinstance(document, str) else json.dumps(document)
    with pytest.raises(DefinitionError) as caught:
        load_definition_text(text, source_name="flow.json")
    return caught.value.problems


def manual(*actions: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "key": "flow",
        "name": "Flow",
        "enrollment": {"trigger": "manual"},
        "actions": list(actions) or [{"id": "a", "type": "clear_property", "property": "x"}],
        **extra,
    }


def criteria(condition: Any) -> dict[str, Any]:
    return {**manual(), "enrollment": {"trigger": "criteria", "criteria": condition}}


# ---------------------------------------------------------------------------------- numbers

# Every place a number can stand, with the path the problem must name ({} is the number).
PLACES = [
    ("enrollment:\n  trigger: criteria\n  criteria: {property: s, op: gt, value: {}}\n", None),
    ("actions:\n  - {id: a, type: increment_property, property: s, by: {}}\n", "actions[0].by"),
    (
        "actions:\n  - {id: a, type: set_property, property: s, value: {}}\n",
        "actions[0].value",
    ),
    (
        "actions:\n  - {id: a, type: custom, handler: h, params: {a: [{b: {c: [1, {}]}}]}}\n",
        "actions[0].params.a[0].b.c[1]",
    ),
    (
        "actions:\n  - {id: a, type: webhook, url: 'https://x', body: {n: [{}]}}\n",
        "actions[0].body.n[0]",
    ),
    (
        "actions:\n  - {id: a, type: split, paths: [{percent: {}, next: end}]}\n",
        "actions[0].paths[0].percent",
    ),
    (
        "actions:\n  - {id: a, type: wait_for_event, event: e, where: {n: {}}}\n",
        "actions[0].where.n",
    ),
]
HEADER = "key: flow\nname: Flow\n"
MANUAL = "enrollment: {trigger: manual}\n"
ACTION = "actions:\n  - {id: a, type: clear_property, property: x}\n"


@pytest.mark.parametrize(
    ("written", "message"),
    [
        (".nan", ".nan is not a finite number"),
        (".NaN", ".NaN is not a finite number"),
        (".inf", ".inf is not a finite number"),
        ("-.inf", "-.inf is not a finite number"),
        ("1e999", "1e999 is out of range: numbers lie within ±1e308"),
        ("-2e308", "-2e308 is out of range: numbers lie within ±1e308"),
        ("1" * 309, "an integer beyond 1e308 is out of range: numbers lie within ±1e308"),
        ("9" * 5000, "a number written with 5,000 characters is out of range"),
        ("1" + "0" * 400 + ".5", "a number written with 403 characters is out of range"),
    ],
)
@pytest.mark.parametrize(("place", "path"), PLACES)
def test_numbers_no_definition_can_hold_are_located_problems(
    written: str, message: str, place: str, path: str | None
) -> None:
    document = HEADER + place.replace("{}", written)
    if "enrollment:" not in place:
        document = HEADER + MANUAL + place.replace("{}", written)
    else:
        document += ACTION
    with pytest.raises(DefinitionError) as caught:
        load_definition_text(document, source_name="flow.yaml")
    problem = one(caught.value.problems)
    assert problem.path == (path or "enrollment.criteria.value")
    assert problem.message == message
    assert problem.line == (5 if path is None else 5)


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("NaN", "NaN is not a finite number"),
        ("Infinity", "Infinity is not a finite number"),
        ("-Infinity", "-Infinity is not a finite number"),
        ("1e999", "1e999 is out of range: numbers lie within ±1e308"),
        ("1" * 5000, "a number written with 5,000 characters is out of range"),
    ],
)
def test_json_numbers_no_definition_can_hold_are_located_problems(
    written: str, message: str
) -> None:
    places = {
        "enrollment.criteria.value[1]": criteria(
            {"property": "s", "op": "between", "value": [1, "@"]}
        ),
        'actions[0].cases["10"]': manual(
            {"id": "a", "type": "value_branch", "property": "p", "cases": {"10": "end"}},
            goal={"criteria": {"property": "g", "op": "in", "value": [1, "@"]}},
        ),
        "actions[0].params.deep[0][0]": manual(
            {"id": "a", "type": "custom", "handler": "h", "params": {"deep": [["@"]]}}
        ),
    }
    for path, document in places.items():
        text = json.dumps(document).replace('"@"', written)
        found = one(json_problems(text))
        if path.startswith("actions[0].cases"):
            path = "goal.criteria.value[1]"
        assert (found.path, found.message, found.line) == (path, message, 1)


def test_a_key_that_is_not_a_finite_number_is_located(problems: Problems) -> None:
    found = one(
        problems("actions:\n  - {id: a, type: value_branch, property: p, cases: {.nan: end}}\n")
    )
    assert (found.path, found.message) == (
        'actions[0].cases[".nan"]',
        "key: .nan is not a finite number",
    )


def test_the_largest_numbers_are_held(load: Load) -> None:
    definition = load(
        "actions:\n  - {id: a, type: increment_property, property: s, by: -1e308}\n"
        "  - {id: b, type: set_property, property: s, value: " + "9" * 308 + "}\n"
    )
    assert definition.actions[0].by == -1e308


# ------------------------------------------------------------------------- document shape


def billion_laughs(levels: int, fanout: int = 9) -> str:
    lines = [HEADER + MANUAL + "actions:\n  - id: a\n    type: custom\n    handler: h\n    params:"]
    lines.append('      l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]')
    for level in range(1, levels + 1):
        lines.append(f"      l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * fanout)}]")
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_is_refused_while_it_is_read() -> None:
    text = billion_laughs(9)  # about 700 bytes; 9**10 strings once expanded
    assert len(text.encode()) < 800
    with pytest.raises(DefinitionError) as caught:
        load_definition_text(text, source_name="lol.yaml")
    found = one(caught.value.problems)
    assert found.message == "the document holds more than 100,000 values (YAML aliases expanded)"
    assert found.line == 14  # l5: the first list that takes the document past the limit


def test_a_small_file_cannot_publish_a_big_definition() -> None:
    # Under the values limit, the expanded definition still has to fit its encoded size.
    text = billion_laughs(3)  # 6,561 strings once expanded: fine as a shape
    load_definition_text(text, source_name="ok.yaml")
    with pytest.raises(DefinitionError) as caught:
        load_definition_text(text.replace('"lol"', '"' + "lol" * 20 + '"'), source_name="x.yaml")
    assert one(caught.value.problems).message.startswith("the definition is ")


def test_aliases_are_fine_within_the_limits(load: Load) -> None:
    definition = load(
        "goal:\n  criteria: &paid {property: plan, op: in, value: [pro, team]}\n"
        "settings:\n  unenroll_when: {not: *paid}\n"
        "actions:\n  - {id: a, type: clear_property, property: x}\n"
    )
    assert definition.settings.unenroll_when is not None


@pytest.mark.parametrize(
    "text",
    [
        "a: &a [1, *a]\n",
        "a: &a {b: [{c: *a}]}\n",
    ],
)
def test_a_recursive_alias_is_refused(text: str, problems: Problems) -> None:
    found = one(problems(text, header=False))
    assert found.message == "alias *a is inside its own anchor: recursion"
    assert found.line == 1


def test_an_alias_cannot_take_the_document_past_the_depth_limit(problems: Problems) -> None:
    deep = "[" * 60 + "1" + "]" * 60
    deeper = "[" * 45 + "*deep" + "]" * 45
    found = one(problems(f"a: &deep {deep}\nb: {deeper}\n", header=False))
    assert (found.message, found.line) == (
        "mappings and lists nest deeper than 100 levels",
        2,
    )


@pytest.mark.parametrize("levels", [300, 2000])
def test_deep_nesting_is_a_located_problem_not_a_recursion_error(
    levels: int, problems: Problems
) -> None:
    nots = "{not: " * levels + "{property: a, op: known}" + "}" * levels
    anys = "{any: [" * levels + "{property: a, op: known}" + "]}" * levels
    for condition in (nots, anys):
        text = "enrollment:\n  trigger: criteria\n  criteria: " + condition + "\n" + ACTION
        found = one(problems(HEADER + text, header=False))
        assert found.message == "mappings and lists nest deeper than 100 levels"
        assert found.line == 5
    as_json = json.dumps(criteria({"property": "a", "op": "known"}))
    deep_json = as_json.replace('{"property"', '{"not": ' * levels + '{"property"').replace(
        '"known"}', '"known"}' + "}" * levels
    )
    assert one(json_problems(deep_json)).message == "mappings and lists nest deeper than 100 levels"


def test_conditions_nest_at_most_32_levels(load: Load, problems: Problems) -> None:
    def branch(levels: int) -> str:
        condition = "{not: " * levels + "{property: a, op: known}" + "}" * levels
        return (
            "actions:\n  - id: a\n    type: branch\n    branches:\n"
            f"      - {{name: n, next: end, when: {condition}}}\n"
        )

    load(branch(limits.MAX_CONDITION_DEPTH))
    found = one(problems(branch(limits.MAX_CONDITION_DEPTH + 1)))
    assert found.path == "actions[0].branches[0].when"
    assert found.message == "all/any/not nest 33 levels deep here; at most 32"
    assert found.line == 9


def test_conditions_have_at_most_500_terms() -> None:
    values = list(range(limits.MAX_CONDITION_TERMS - 1))
    ok = criteria(
        {"all": [{"property": "a", "op": "known"}, {"property": "b", "op": "in", "value": values}]}
    )
    load_definition_text(json.dumps(ok), source_name="ok.json")
    too_many = criteria({"any": [{"property": "a", "op": "eq", "value": n} for n in range(501)]})
    found = one(json_problems(too_many))
    assert found.path == "enrollment.criteria"
    assert found.message.startswith("the condition has 501 terms")


def test_a_definition_has_at_most_1000_actions() -> None:
    actions = [{"id": f"a{n}", "type": "clear_property", "property": "x"} for n in range(1000)]
    assert len(load_definition_text(json.dumps(manual(*actions))).actions) == 1000
    found = one(
        json_problems(
            manual(*actions, {"id": "one-more", "type": "clear_property", "property": "x"})
        )
    )
    assert (found.path, found.message) == ("actions", "1,001 actions; at most 1,000")


def test_the_encoded_definition_stays_far_below_temporals_payload_limit() -> None:
    body = "x" * 60_000
    actions = [
        {"id": f"m{n}", "type": "send_email", "subject": "s", "body": body} for n in range(5)
    ]
    found = one(json_problems(manual(*actions)))
    assert found.path == ""
    assert re.fullmatch(
        r"the definition is [\d,]+ bytes once encoded; at most 262,144 \(it travels with every"
        r" enrollment\)",
        found.message,
    )
    load_definition_text(json.dumps(manual(*actions[:4])))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x" * 65_537, "text of 65,537 characters; at most 65,536"),
        ("a\u0000b", "text may not contain a NUL character (\\u0000)"),
        ("a\ud800b", "text may not contain a lone surrogate (\\ud800-\\udfff)"),
    ],
)
def test_text_no_definition_can_hold(value: str, message: str) -> None:
    document = manual({"id": "a", "type": "send_email", "subject": "s", "body": value})
    found = one(json_problems(document))
    assert (found.path, found.message) == ("actions[0].body", message)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("!!binary aGVsbG8=", "binary data (!!binary) is not a definition value"),
        ("!!set {a, b}", "a set (!!set) is not a definition value"),
        ("!shout hello", "a value tagged !shout is not a definition value"),
    ],
)
def test_yaml_types_json_lacks_are_refused(value: str, message: str, problems: Problems) -> None:
    found = one(
        problems(f"actions:\n  - {{id: a, type: custom, handler: h, params: {{p: {value}}}}}\n")
    )
    assert found.path == "actions[0].params.p"
    assert found.message.startswith(message)


def test_a_complex_key_is_refused(problems: Problems) -> None:
    found = one(
        problems("actions:\n  - {id: a, type: custom, handler: h, params: {? [a, b] : 1}}\n")
    )
    assert (found.path, found.message) == ("actions[0].params", "a key must be text, not a list")


def test_str_tagged_values_are_text(load: Load) -> None:
    definition = load(
        "actions:\n  - {id: a, type: set_property, property: code, value: !!str 10}\n"
    )
    assert definition.actions[0].value == "10"


def test_min_count_is_bounded(problems: Problems) -> None:
    found = one(problems("goal:\n  criteria: {event: e, min_count: 1000001}\n" + ACTION))
    assert (found.path, found.line) == ("goal.criteria.min_count", 6)


# -------------------------------------------------------------------------------- the file


def test_a_file_over_1_mib_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(HEADER + MANUAL + ACTION + "#" * limits.MAX_FILE_BYTES)
    with pytest.raises(DefinitionError) as caught:
        load_definition_file(path)
    assert str(one(caught.value.problems)) == (
        f"{path}: the file is larger than 1,048,576 bytes (1 MiB)"
    )


def test_a_file_of_exactly_1_mib_is_read(tmp_path: Path) -> None:
    text = HEADER + MANUAL + ACTION
    path = tmp_path / "full.yaml"
    path.write_text(text + "#" * (limits.MAX_FILE_BYTES - len(text)))
    assert load_definition_file(path).key == "flow"


# ----------------------------------------------------------------- new and stored definitions


def test_stored_definitions_load_without_the_rules_of_new_ones() -> None:
    # A version stored before these limits (or the input of a running enrollment) still loads;
    # its templates are refused when they render. New definitions get the limits.
    deep = {"property": "a", "op": "known"}
    for _ in range(40):
        deep = {"not": deep}
    document = criteria(deep)
    document["actions"] = [
        {"id": "a", "type": "send_email", "subject": "{{ record.price * 2 }}", "body": "b"}
    ]
    WorkflowDefinition.model_validate(document)
    found = json_problems(document)
    assert [p.path for p in found] == ["enrollment.criteria", "actions[0].subject"]
    with pytest.raises(DefinitionError):
        load_definition_data(document, source_name="stored")


def test_every_limit_is_listed_in_the_readme() -> None:
    section = README.read_text().split("## Limits and refusals", 1)[1].split("\n## ", 1)[0]
    names = [name for name in vars(limits) if name.startswith("MAX_")]
    assert names
    for name in names:
        assert f"`{name}`" in section, f"{name} is not in the README's Limits and refusals"
