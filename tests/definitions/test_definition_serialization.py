"""Definitions survive storage as JSON and the trip into Temporal; the JSON Schema for editors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crmflow.definitions import (
    WorkflowDefinition,
    definition_json_schema,
    load_definition_file,
    load_definition_text,
)

FIXTURES = Path(__file__).parent / "fixtures"

EVERYTHING = """\
key: everything
name: Every action
object_type: contact
description: One of each
enrollment:
  trigger: criteria
  enroll_existing: true
  reenroll: {properties: [stage], events: [form_submitted], lists: [webinar]}
  criteria:
    all:
      - {property: stage, op: in, value: [lead, mql]}
      - {property: score, op: between, value: [10, 20.5]}
      - {property: signed_up, op: after, value: -30d}
      - {property: renewed, op: within_last, value: 1w}
      - {property: phone, op: unknown}
      - any:
          - {in_list: webinar}
          - {not_in_list: customers}
          - not: {event: page_viewed, where: {path: /pricing, n: 2}, within: PT0.5S, min_count: 2}
actions:
  - {id: d1, type: delay, duration: P1DT0.25S}
  - {id: d2, type: delay, until_date: "2026-12-01T09:00:00+01:00"}
  - {id: d3, type: delay, until_property: renewal, offset: -1d12h, at: "08:00"}
  - {id: d4, type: delay, until_weekday: [mon, fri], at: "09:00"}
  - {id: d5, type: delay, until_time: {at: "10:00"}}
  - {id: w, type: wait_for_event, event: email_opened, where: {campaign: x}, timeout: 3d,
     on_timeout: v}
  - id: b
    type: branch
    branches:
      - {name: hot, when: {property: score, op: gte, value: 50}, next: s}
      - {name: cold, when: {not: {event: email_opened}}, next: end}
  - {id: v, type: value_branch, property: plan, cases: {gold: s, 10: end, true: end},
     otherwise: s}
  - {id: s, type: split, paths: [{percent: 30, next: p1}, {percent: 70, next: p2}]}
  - {id: p1, type: set_property, property: stage, value: "{{ workflow.name }}", next: p3}
  - {id: p2, type: set_property, property: flag, value: null}
  - {id: p3, type: copy_property, from: email, to: backup_email}
  - {id: p4, type: clear_property, property: tmp}
  - {id: p5, type: increment_property, property: score, by: -2.5}
  - {id: l1, type: add_to_list, list: webinar}
  - {id: l2, type: remove_from_list, list: webinar}
  - {id: m1, type: send_email, subject: "Hi {{ record.firstname }}", body: "b",
     to: "{{ record.alt }}"}
  - {id: m2, type: notify, to: sales@example.com, subject: s, body: b}
  - {id: t, type: create_task, title: Call, due_in: 2h, assignee: "{{ record.owner }}"}
  - {id: r, type: create_record, object_type: deal, properties: {name: "{{ record.company }}",
     amount: 10, open: true, gone: null}}
  - {id: h, type: webhook, url: "https://example.com/x", method: PATCH,
     headers: {Authorization: "Bearer ${env:TOKEN}"}, body: {a: [1, null, "{{ enrollment.id }}"]},
     timeout: 30s}
  - {id: e1, type: enroll_in_workflow, workflow: nurture}
  - {id: e2, type: unenroll_from_workflow, workflows: [a, b]}
  - {id: c, type: custom, handler: crm.sync, params: {nested: {x: [1, null]}, empty: null}}
goal:
  criteria: {property: stage, op: eq, value: customer}
settings:
  timezone: America/New_York
  timezone_property: tz
  execution_window: {days: [mon, tue], from: "09:00", to: "17:00"}
  pause_dates: [2026-12-25]
  suppression_lists: [do-not-contact]
  unenroll_when: {property: unsubscribed, op: eq, value: true}
  unenroll_when_criteria_unmet: true
  unenroll_from: [other]
"""

SCHEDULES = [
    '{every: day, at: "08:00"}',
    '{every: week, at: "08:00", days: [fri, mon]}',
    '{every: month, at: "08:00", days_of_month: [1, 15, 31]}',
    '{every: month, at: "15:00", on: last_day}',
    '{every: month, at: "09:00", on: first_monday}',
    '{every: year, at: "08:00", month: 2, day: 29}',
]


def definitions() -> list[WorkflowDefinition]:
    found = [load_definition_file(path) for path in sorted(FIXTURES.glob("*.yaml"))]
    found.append(load_definition_text(EVERYTHING))
    for schedule in SCHEDULES:
        found.append(
            load_definition_text(
                "key: s\nname: S\nenrollment:\n  trigger: schedule\n  criteria: {in_list: x}\n"
                f"  schedule: {schedule}\n"
                "actions:\n  - {id: a, type: clear_property, property: p}\n"
            )
        )
    return found


@pytest.mark.parametrize("definition", definitions(), ids=lambda d: d.key)
def test_json_round_trip(definition: WorkflowDefinition) -> None:
    stored = definition.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert WorkflowDefinition.model_validate(stored) == definition
    assert WorkflowDefinition.model_validate_json(json.dumps(stored)) == definition
    # Field names instead of aliases (`not_`, `from_`) are accepted too.
    assert WorkflowDefinition.model_validate(definition.model_dump(mode="json")) == definition
    assert WorkflowDefinition.model_validate_json(definition.model_dump_json()) == definition


def test_everything_round_trips_to_the_same_document() -> None:
    definition = load_definition_text(EVERYTHING)
    stored = definition.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert stored["actions"][0] == {"id": "d1", "type": "delay", "duration": "P1DT0H0M0.250000S"}
    assert stored["actions"][2]["offset"] == "-1d12h"
    assert stored["actions"][4]["until_time"] == "10:00"
    assert stored["actions"][7]["cases"] == {"gold": "s", "10": "end", "true": "end"}
    assert stored["actions"][11]["from"] == "email"
    assert "value" not in stored["actions"][10]  # null is the default: left out
    assert stored["actions"][19]["properties"]["gone"] is None
    assert stored["actions"][23]["params"] == {"nested": {"x": [1, None]}, "empty": None}
    assert stored["enrollment"]["criteria"]["all"][5]["any"][2]["not"]["event"] == "page_viewed"
    assert stored["settings"]["execution_window"] == {
        "days": ["mon", "tue"],
        "from": "09:00",
        "to": "17:00",
    }
    assert load_definition_text(json.dumps(stored), source_name="x.json") == definition


def test_temporal_pydantic_data_converter_round_trip() -> None:
    converter = pytest.importorskip("temporalio.contrib.pydantic").pydantic_data_converter
    definition = load_definition_text(EVERYTHING)
    payloads = converter.payload_converter.to_payloads([definition])
    (back,) = converter.payload_converter.from_payloads(payloads, [WorkflowDefinition])
    assert back == definition


# --------------------------------------------------------------------------- schema


def test_json_schema_shape() -> None:
    schema = definition_json_schema()
    assert isinstance(schema, dict)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "crmflow workflow definition"
    assert set(schema["required"]) == {"key", "name", "enrollment", "actions"}
    mapping = schema["properties"]["actions"]["items"]["discriminator"]["mapping"]
    assert set(mapping) == {
        "delay",
        "wait_for_event",
        "branch",
        "value_branch",
        "split",
        "set_property",
        "copy_property",
        "clear_property",
        "increment_property",
        "add_to_list",
        "remove_from_list",
        "send_email",
        "notify",
        "create_task",
        "create_record",
        "webhook",
        "enroll_in_workflow",
        "unenroll_from_workflow",
        "custom",
    }
    defs = schema["$defs"]
    assert "type" in defs["DelayAction"]["required"]
    assert defs["DelayAction"]["additionalProperties"] is False
    assert "not" in defs["NotCondition"]["properties"]
    assert "from" in defs["CopyPropertyAction"]["properties"]
    assert defs["SendEmailAction"]["properties"]["subject"]["description"]
    json.dumps(schema)  # serializable as is


def test_json_schema_validates_the_examples() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = definition_json_schema()
    validator = jsonschema.Draft202012Validator(schema)
    for definition in definitions():
        document = definition.model_dump(mode="json", by_alias=True, exclude_none=True)
        assert not list(validator.iter_errors(document)), definition.key
    assert list(validator.iter_errors({"key": "Bad Key", "name": "x"}))
