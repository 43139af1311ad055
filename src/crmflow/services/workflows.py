"""Definitions: validate, publish, list and show workflows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from crmflow.definitions import (
    DefinitionError,
    Problem,
    WorkflowDefinition,
    load_definition_data,
    load_definition_text,
    read_definition_file,
)
from crmflow.store import (
    EnrollmentRepository,
    StoreError,
    WorkflowRepository,
    stored_definition,
)

from ._app import App
from ._base import (
    UserError,
    broken_reason,
    checked_key,
    load_version,
    utcnow,
)
from .schedules import schedule_views, sync_schedule
from .views import WorkflowView

# ---------------------------------------------------------------- definitions


@dataclass(frozen=True)
class Checked:
    path: Path
    definition: WorkflowDefinition | None
    problems: list[Problem]
    source: str = ""
    """The text that was validated: what publish stores (not the file as it may be later)."""


def validate_files(paths: Sequence[Path]) -> list[Checked]:
    checked = []
    for path in paths:
        try:
            source = read_definition_file(path)
            definition = load_definition_text(source, source_name=str(path))
        except DefinitionError as exc:
            checked.append(Checked(path, None, list(exc.problems)))
        else:
            checked.append(Checked(path, definition, [], source))
    return checked


def definition_json(definition: WorkflowDefinition) -> dict[str, Any]:
    return definition.model_dump(mode="json", by_alias=True, exclude_none=True)


@dataclass(frozen=True)
class Published:
    key: str
    version: int
    path: str


def publish_files(app: App, paths: Sequence[Path]) -> list[Published]:
    """Validate every file first; publish all of them in one transaction, or none. What each
    version stores must load again: its stored form, read back through the store's column
    type, is validated before the transaction commits."""
    checked = validate_files(paths)
    problems = [p for c in checked for p in c.problems]
    if problems:
        raise DefinitionError(problems)
    keys = [c.definition.key for c in checked if c.definition]
    duplicated = {k for k in keys if keys.count(k) > 1}
    if duplicated:
        raise UserError(
            f"the same key is published twice in one call: {', '.join(sorted(duplicated))}"
        )
    published = []
    now = utcnow()
    with app.sessions.begin() as session:
        workflows = WorkflowRepository(session)
        for c in checked:
            assert c.definition is not None
            try:
                version = workflows.publish(
                    key=c.definition.key,
                    name=c.definition.name,
                    object_type=c.definition.object_type,
                    trigger=c.definition.enrollment.trigger,
                    definition=definition_json(c.definition),
                    source=c.source,
                    source_name=str(c.path),
                    now=now,
                )
            except StoreError as exc:
                raise UserError(f"{c.path}: {exc}") from None
            # Read back what the database holds (its JSON round trip), not the object in memory.
            session.refresh(version, ["definition"])
            try:
                load_definition_data(version.definition, source_name=str(c.path))
            except DefinitionError as exc:
                raise DefinitionError(
                    [replace(p, message=f"{p.message} (as stored)") for p in exc.problems]
                ) from None
            published.append(Published(c.definition.key, version.version, str(c.path)))
    return published


async def publish(app: App, paths: Sequence[Path]) -> list[Published]:
    """Publish, then bring the Temporal Schedule of each active workflow in line with its new
    version at once (the very next run uses it)."""

    with app.sessions() as session:
        workflows = WorkflowRepository(session)
        before = {w.key: v.trigger for w, v in workflows.all() if w.active}
    published = publish_files(app, paths)
    for p in published:
        definition, _ = load_version(app, p.key)
        if p.key in before and "schedule" in (before[p.key], definition.enrollment.trigger):
            await sync_schedule(app, p.key, active=True)
    return published


@dataclass(frozen=True)
class WorkflowSummary:
    key: str
    name: str
    object_type: str
    trigger: str
    version: int
    active: bool
    enrollments: dict[str, int]
    schedule: dict[str, Any] | None = None  # scheduled workflows: see `schedule_views`
    # Why the latest version's stored definition no longer loads (None: it loads).
    broken: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "object_type": self.object_type,
            "trigger": self.trigger,
            "version": self.version,
            "active": self.active,
            "enrollments": self.enrollments,
            "schedule": self.schedule,
            "broken": self.broken,
        }


async def list_workflows(app: App) -> list[WorkflowSummary]:
    """Every workflow at its latest version; a scheduled one with its schedule and the state of
    its Temporal Schedule (unknown, not an error, when Temporal is unreachable); one whose
    stored definition no longer loads as broken, with the reason."""

    with app.sessions() as session:
        enrollments = EnrollmentRepository(session)
        found = WorkflowRepository(session).all()
        summaries = [
            WorkflowSummary(
                key=w.key,
                name=v.name,
                object_type=v.object_type,
                trigger=v.trigger,
                version=v.version,
                active=w.active,
                enrollments=enrollments.count_by_status(w.key),
                broken=broken_reason(v),
            )
            for w, v in found
        ]
        broken = {s.key for s in summaries if s.broken}
        scheduled = [
            (w.key, stored_definition(v))
            for w, v in found
            if v.trigger == "schedule" and w.key not in broken
        ]
    schedules = await schedule_views(app, scheduled)
    return [replace(s, schedule=schedules.get(s.key)) for s in summaries]


async def show_workflow(app: App, key: str, version: int | None = None) -> WorkflowView:
    """A version of a workflow (the latest by default). `schedule` describes the Temporal
    Schedule, which always follows the latest version, whichever version is shown."""

    checked_key(key)
    with app.sessions() as session:
        workflows = WorkflowRepository(session)
        try:
            workflow = workflows.require(key)
            found = workflows.version(key, version)
            latest = workflows.version(key)
        except StoreError as exc:
            raise UserError(str(exc)) from None
        shown: dict[str, Any] = {
            "key": key,
            "version": found.version,
            "latest_version": workflow.latest_version,
            "versions": [v.version for v in workflows.versions(key)],
            "active": workflow.active,
            "published_at": found.published_at.isoformat(),
            "source_name": found.source_name,
            "enrollments": EnrollmentRepository(session).count_by_status(key),
            "definition": found.definition,
            "source": found.source,
            # Why this version's stored definition no longer loads (None: it loads).
            "broken": broken_reason(found),
        }
        latest_broken = broken_reason(latest) is not None
        definition = None if latest_broken else stored_definition(latest)
    schedules = await schedule_views(app, [(key, definition)] if definition else [])
    return WorkflowView(**shown, schedule=schedules.get(key))
