"""Definitions for the graph tests: the examples, and a tour of every kind of edge and exit."""

from __future__ import annotations

from pathlib import Path

import pytest

from crmflow.definitions import WorkflowDefinition, load_definition_file, load_definition_text

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))

TOUR = """
key: tour
name: Tour of the graph
enrollment:
  trigger: criteria
  criteria:
    all:
      - {property: lifecycle_stage, op: eq, value: lead}
      - {property: seats, op: gt, value: 10}
  reenroll: {events: [form_submitted]}
goal:
  criteria: {property: lifecycle_stage, op: eq, value: customer}
settings:
  suppression_lists: [do-not-contact]
  unenroll_when: {in_list: churned}
  unenroll_when_criteria_unmet: true
actions:
  - id: route
    type: branch
    branches:
      - {name: big account, when: {property: seats, op: gte, value: 100}, next: sales}
      - {name: no email, when: {property: email, op: unknown}, next: end}
    otherwise: plan
  - id: sales
    type: notify
    to: sales@example.com
    subject: Big one
    next: wait-open
  - id: plan
    type: value_branch
    property: plan
    cases: {enterprise: ab, team: wait-open}
    otherwise: wait-open
  - id: ab
    type: split
    paths: [{percent: 30, next: wait-open}, {percent: 70, next: end}]
  - id: wait-open
    type: wait_for_event
    event: email_opened
    where: {campaign: welcome}
    timeout: 3d
    on_timeout: reminder
    next: thanks
  - id: reminder
    type: send_email
    subject: Reminder
    body: x
    next: end
  - id: thanks
    type: create_task
    title: Say thanks
"""


@pytest.fixture(scope="session")
def tour() -> WorkflowDefinition:
    return load_definition_text(TOUR, source_name="tour.yaml")


@pytest.fixture(scope="session", params=[path.name for path in EXAMPLES])
def example(request: pytest.FixtureRequest) -> WorkflowDefinition:
    return load_definition_file(Path(__file__).parents[2] / "examples" / request.param)
