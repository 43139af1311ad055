"""Templates: only the constructs the definition format needs pass validation, and a render is
bounded in size and work, whatever the template or the record holds."""

from __future__ import annotations

from typing import Any

import pytest

from crmflow import templates
from crmflow.limits import MAX_RENDER_WORK, MAX_RENDERED_CHARS
from crmflow.templates import TemplateProblem, check_template, render


def rendered(source: str, **properties: Any) -> str:
    return render(
        source,
        properties=properties,
        workflow_key="welcome",
        workflow_name="Welcome series",
        enrollment_id="42",
    )


def refusal(source: str, **properties: Any) -> str:
    with pytest.raises(TemplateProblem) as caught:
        rendered(source, **properties)
    return str(caught.value)


# ------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("source", "message"),
    [
        # From the issue: accepted, then constant-folded (1.5 GB, 12 s of CPU) or worse.
        ("{{ ''.__class__.__mro__ }}", "'__mro__' cannot be read"),
        ("{{ 'a' * 500000000 }}", "arithmetic ('*') is not allowed"),
        ("{{ 10**5000000 }}", "arithmetic ('**') is not allowed"),
        ("{{ record.x * 1000000000 }}", "arithmetic ('*') is not allowed"),
        ("{{ record.seats + 1 }}", "arithmetic ('+') is not allowed"),
        ("{{ -record.seats }}", "arithmetic ('-') is not allowed"),
        ("{% for a in record.x %}{% for b in record.x %}.{% endfor %}{% endfor %}", "{% for %}"),
        ("{% macro m() %}x{% endmacro %}{{ m() }}", "{% macro %}"),
        ("{% set x = record.a %}{{ x }}", "{% set %}"),
        ("{% include 'other' %}", "{% include %}"),
        ("{% filter upper %}x{% endfilter %}", "{% filter %}"),
        ("{% with a = 1 %}{{ a }}{% endwith %}", "{% with %}"),
        ("{{ record.name.upper() }}", "calls are not allowed"),
        ("{{ range(10) }}", "calls are not allowed"),
        ("{{ record.a.b }}", "'b' cannot be read"),
        ("{{ record['a']['b'] }}", "'b' cannot be read"),
        ("{{ record[record.key] }}", "takes a quoted property name"),
        ("{{ record }}", "record cannot be used alone"),
        ("{% if workflow %}x{% endif %}", "workflow cannot be used alone"),
        ("{{ workflow.version }}", "workflow.version does not exist: use workflow.key or"),
        ("{{ enrollment.record_id }}", "enrollment.record_id does not exist: use enrollment.id"),
        ("{{ contact.name }}", "template reads contact"),
        ("{{ record.x | format(1) }}", "filter 'format' is not allowed"),
        ("{{ record.x | attr('__class__') }}", "filter 'attr' is not allowed"),
        ("{{ record.x | join(',') }}", "filter 'join' is not allowed"),
        ("{% if record.x is divisibleby 3 %}x{% endif %}", "test 'divisibleby' is not allowed"),
        ("{{ record.x[:3] }}", "slices are not allowed"),
        ("{{ {'a': 1} }}", "mapping literals are not allowed"),
        ("{{ record.x | default(*record.y) }}", "*args and **kwargs are not allowed"),
        ("{{ 1" + "0" * 5000 + " }}", "a number is too long"),
        ("{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}", "nested too deeply"),
    ],
)
def test_validation_refuses_what_templates_do_not_need(source: str, message: str) -> None:
    with pytest.raises(TemplateProblem) as caught:
        check_template(source)
    assert message in str(caught.value)


def test_expressions_nest_at_most_50_deep() -> None:
    # Deeper chains parse, but compiling them would exhaust Python's stack when they render.
    chain = "{{ record.x" + " | upper" * 50 + " }}"
    assert rendered(chain, x="a") == "A"
    with pytest.raises(TemplateProblem, match="expressions nest more than 50 deep"):
        check_template(chain.replace(" }}", " | lower }}"))
    ands = "{% if " + " and ".join(["record.x"] * 2000) + " %}y{% endif %}"
    with pytest.raises(TemplateProblem, match="expressions nest more than 50 deep"):
        check_template(ands)


def test_the_line_of_a_refusal_in_a_long_template_is_given() -> None:
    with pytest.raises(TemplateProblem) as caught:
        check_template("Hello {{ record.firstname }},\n\nYou owe {{ record.price * 2 }}.\n")
    assert str(caught.value) == "template: arithmetic ('*') is not allowed (line 3 of the template)"


@pytest.mark.parametrize(
    "source",
    [
        "Hi {{ record.firstname }} of {{ workflow.name }} ({{ workflow.key }} {{ enrollment.id }})",
        "{{ record['first name'] }}",
        "{{ record.firstname | default('there') | title }}",
        "{% if record.seats > 10 %}big{% elif record.seats is defined %}small{% endif %}",
        "{{ 'vip' if record.plan in ['gold', 'platinum'] and not record.churned else 'std' }}",
        "{{ record.first ~ ' ' ~ record.last | upper }}",
        "{{ record.amount | float | round(2) }} {{ record.n | int }} {{ record.b | truncate(20) }}",
        "{{ record.x | replace('a', 'b') | trim | lower | capitalize | e | urlencode | length }}",
        "{% if record.score >= -5 and record.score != 0 or record.vip == true %}x{% endif %}",
        "{# a comment #}{% raw %}{{ not a template }}{% endraw %}",
    ],
)
def test_validation_accepts_what_the_definition_format_needs(source: str) -> None:
    check_template(source)


def test_lenient_check_keeps_stored_definitions_loadable() -> None:
    # A version stored (or an enrollment started) before the allowlist still validates: its
    # templates are refused when they render instead (below). Unknown names are refused as ever.
    check_template("{{ record.price * 1.2 }}{% set x = 1 %}{{ x }}", strict=False)
    with pytest.raises(TemplateProblem, match="template reads contact"):
        check_template("{{ contact.name }}", strict=False)


# ------------------------------------------------------------------------------- rendering


def test_filters_tests_and_branches_render() -> None:
    source = (
        "{{ record.firstname | default('there') | title }}: "
        "{% if record.seats > 10 %}big{% elif record.seats is defined %}small"
        "{% else %}none{% endif %}"
        " {{ record['company name'] ~ '!' }} {{ record.amount | float | round(1) }}"
        " {{ record.code | replace('-', '') | upper }} {{ record.n | int }}"
        " {{ workflow.key }}/{{ workflow.name }}/{{ enrollment.id }}"
    )
    text = rendered(
        source,
        firstname="ann",
        seats=4,
        **{"company name": "Acme"},
        amount="12.345",
        code="ab-c",
        n="7",
    )
    assert text == "Ann: small Acme! 12.3 ABC 7 welcome/Welcome series/42"


def test_a_missing_property_renders_empty_and_compares_false() -> None:
    assert rendered("[{{ record.nope }}]") == "[]"
    assert rendered("{% if record.nope > 3 %}yes{% else %}no{% endif %}") == "no"
    assert rendered("{{ record.nope | default('x') }}") == "x"


def test_every_listed_filter_is_usable() -> None:
    for name in templates.FILTERS:
        check_template(f"{{{{ record.x | {name} }}}}")


def test_a_stored_template_the_rules_refuse_is_refused_when_it_renders() -> None:
    assert refusal("{{ record.x * 3 }}", x="ab") == "template: arithmetic ('*') is not allowed"
    assert "{% for %}" in refusal("{% for c in record.x %}{{ c }}{% endfor %}", x="ab")


def test_an_error_while_rendering_is_a_template_problem() -> None:
    # A comparison Python cannot make: a fact about this record, not worth a retry.
    assert refusal("{{ record.seats > 10 }}", seats="many").startswith("template error: '>'")
    assert "precision" in refusal("{{ record.n | round(5000) }}", n=1.5)
    assert "template error" in refusal("{{ record.n | round }}", n="a word")


def test_the_rendered_text_is_capped() -> None:
    big = "x" * (MAX_RENDERED_CHARS + 1)
    assert refusal("{{ record.notes }}", notes=big) == (
        f"the rendered text has {MAX_RENDERED_CHARS + 1:,} characters;"
        f" at most {MAX_RENDERED_CHARS:,}"
    )
    assert rendered("{{ record.notes | truncate(10) }}", notes=big) == "xxxxxxx..."


@pytest.mark.parametrize(
    "source",
    [
        # Each would build tens of megabytes (and more, chained) before the size cap could act.
        "{{ record.x | replace('', '0123456789') }}",
        "{{ record.x | replace('a', '0123456789') | replace('0', '0123456789') }}",
        "{{ " + " ~ ".join(["record.x"] * 20) + " | length }}",
    ],
)
def test_a_render_reads_and_produces_a_bounded_amount(source: str) -> None:
    x = "a" * (MAX_RENDER_WORK // 10)
    assert "more than 1,000,000 characters" in refusal(source, x=x)


def test_conversions_of_huge_values_fall_back_to_their_default() -> None:
    assert rendered("{{ record.n | int }}|{{ record.n | float }}", n="9" * 5000) == "0|0.0"
    assert rendered("{{ record.f | int(-1) }}", f=float("inf")) == "-1"
