"""Plain service functions behind the CLI. Tests call them directly.

Each function owns its transactions; every SQL statement is in a store repository.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from temporalio.service import RPCError

from crmflow.definitions import (
    DefinitionError,
    InvalidInput,
    Problem,
    WorkflowDefinition,
    check_event_name,
    check_event_properties,
    check_list_name,
    check_object_type,
    check_properties,
    check_property_name,
    check_record_id,
    check_value,
    check_workflow_key,
    load_definition_data,
    load_definition_text,
    parse_json,
    read_definition_file,
    shown,
)
from crmflow.store import (
    ACTIVE_STATUSES,
    AssociationRepository,
    BrokenVersion,
    ChangeRepository,
    Enrollment,
    EnrollmentRepository,
    EnrollmentStep,
    EventRepository,
    ListRepository,
    OutboxRepository,
    RecordNotFound,
    RecordRepository,
    StoreError,
    TaskRepository,
    WorkflowRepository,
    WorkflowVersion,
    stored_definition,
)
from crmflow.triggers import EnrollmentStarter, EnrollOutcome, SignalFailed

from ._app import App
from ._imports import ImportProblem, Row, read_records

if TYPE_CHECKING:
    from ._review import ExistingEnrollment, Progress


class UserError(Exception):
    """Bad input: the CLI prints the message on one line and exits 2."""


class OperationFailed(Exception):
    """A well-formed request that could not be carried out: exit 1."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def checked(check: Callable[[Any], Any], value: Any, where: str = "") -> Any:
    """`check(value)` (a rule of `crmflow.definitions`), its refusal as bad input."""
    try:
        return check(value)
    except InvalidInput as exc:
        raise UserError(f"{where}: {exc}" if where else str(exc)) from None


def checked_key(key: str) -> None:
    checked(check_workflow_key, key)


def checked_record(object_type: str, record_id: str) -> None:
    checked(check_object_type, object_type)
    checked(check_record_id, record_id)


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
    from ._schedules import sync_schedule  # _schedules builds on this module

    with app.sessions() as session:
        workflows = WorkflowRepository(session)
        before = {w.key: v.trigger for w, v in workflows.all() if w.active}
    published = publish_files(app, paths)
    for p in published:
        definition, _ = load_version(app, p.key)
        if p.key in before and "schedule" in (before[p.key], definition.enrollment.trigger):
            await sync_schedule(app, p.key, active=True)
    return published


def load_version(app: App, key: str, version: int | None = None) -> tuple[WorkflowDefinition, int]:
    """A version's definition (the latest by default). A version stored before a validation
    rule that now refuses it is bad input to every command that needs it: exit 2, naming the
    key and version."""
    checked_key(key)
    with app.sessions() as session:
        try:
            found = WorkflowRepository(session).version(key, version)
            return stored_definition(found), found.version
        except StoreError as exc:
            raise UserError(str(exc)) from None


def broken_reason(row: WorkflowVersion) -> str | None:
    """Why a stored version no longer loads, or None."""
    try:
        stored_definition(row)
    except BrokenVersion as exc:
        return exc.reason
    return None


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
    from ._schedules import schedule_views  # _schedules builds on this module

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


async def show_workflow(app: App, key: str, version: int | None = None) -> dict[str, Any]:
    """A version of a workflow (the latest by default). `schedule` describes the Temporal
    Schedule, which always follows the latest version, whichever version is shown."""
    from ._schedules import schedule_views  # _schedules builds on this module

    checked_key(key)
    with app.sessions() as session:
        workflows = WorkflowRepository(session)
        try:
            workflow = workflows.require(key)
            found = workflows.version(key, version)
            latest = workflows.version(key)
        except StoreError as exc:
            raise UserError(str(exc)) from None
        shown = {
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
    return {**shown, "schedule": schedules.get(key)}


# ---------------------------------------------------------------- activation


async def starter(app: App) -> EnrollmentStarter:
    return EnrollmentStarter(app.sessions, await app.client(), app.settings.task_queue)


async def _signal(
    app: App,
    enrollments: Sequence[Enrollment],
    send: Callable[[EnrollmentStarter, list[str]], Awaitable[int]],
    *,
    key: str,
    retry: str,
) -> int:
    """Signal enrollments; a signal Temporal refused (other than to a run that is over) is
    an operation failed, with what to run again."""
    if not enrollments:
        return 0
    try:
        return await send(await starter(app), [e.temporal_workflow_id for e in enrollments])
    except SignalFailed as exc:
        raise OperationFailed(f"{key}: {exc}; run `{retry}` again") from None


@dataclass(frozen=True)
class ActivationResult:
    key: str
    active: bool
    resumed: int = 0
    paused: int = 0
    unenrolled: int = 0
    existing: ExistingEnrollment | None = None  # with enroll_existing


async def activate(
    app: App, key: str, *, enroll_existing: bool = False, on_progress: Progress | None = None
) -> ActivationResult:
    """Activate (or keep active), resume paused enrollments; with `enroll_existing` (or the
    definition's `enrollment.enroll_existing`) also enroll the records that match now."""
    # _review and _schedules build on this module
    from ._review import enroll_existing as enroll_matching
    from ._schedules import sync_schedule

    definition, version = load_version(app, key)
    trigger = definition.enrollment.trigger
    enroll_existing = enroll_existing or definition.enrollment.enroll_existing
    if enroll_existing and trigger != "criteria":
        raise UserError(
            f"--enroll-existing is for criteria workflows; '{key}' is {trigger}: "
            f"enroll records with `crmflow enroll {key} ID...`"
        )
    with app.sessions() as session:
        paused = EnrollmentRepository(session).find(key, statuses=["paused"], limit=1)
        if enroll_existing or paused or trigger == "schedule":
            # Reach Temporal before changing anything, so a failure changes nothing.
            await app.client()
    with app.sessions.begin() as session:
        workflows = WorkflowRepository(session)
        if not workflows.require(key, for_update=True).active:
            workflow = workflows.set_active(key, True, now=utcnow())
            # Automatic enrollment reacts to the changes from now on; records that match
            # already enroll only with enroll_existing. Activating an active workflow keeps
            # this point: moving it on would drop the changes still waiting for the dispatcher.
            workflow.activated_change_id = ChangeRepository(session).last_id()
        resumed = EnrollmentRepository(session).set_status_for_workflow(
            key, from_status="paused", to_status="running"
        )
    await _signal(
        app,
        resumed,
        lambda s, ids: s.resume(ids),
        key=key,
        retry=f"crmflow deactivate {key} && crmflow activate {key}",
    )
    if trigger == "schedule":
        await sync_schedule(app, key, active=True)
    # Only now, with the workflow active: a record that comes to match from here on is
    # enrolled by the dispatcher or below, and the store refuses the second of the two.
    existing = (
        await enroll_matching(app, definition, version, on_progress=on_progress)
        if enroll_existing
        else None
    )
    return ActivationResult(key, True, resumed=len(resumed), existing=existing)


async def deactivate(app: App, key: str, *, unenroll_all: bool = False) -> ActivationResult:
    from ._schedules import sync_schedule  # _schedules builds on this module

    # The stored trigger, not the definition: a broken version can still be deactivated.
    with app.sessions() as session:
        try:
            scheduled = WorkflowRepository(session).version(key).trigger == "schedule"
        except StoreError as exc:
            raise UserError(str(exc)) from None
    with app.sessions() as session:
        if scheduled or EnrollmentRepository(session).find(
            key, statuses=list(ACTIVE_STATUSES), limit=1
        ):
            await app.client()
    with app.sessions.begin() as session:
        WorkflowRepository(session).set_active(key, False, now=utcnow())
        enrollments = EnrollmentRepository(session)
        if unenroll_all:
            targets = enrollments.find(key, statuses=list(ACTIVE_STATUSES))
        else:
            targets = enrollments.set_status_for_workflow(
                key, from_status="running", to_status="paused"
            )
    if scheduled:
        await sync_schedule(app, key, active=False)  # paused: no run while inactive
    if unenroll_all:
        reason = "workflow deactivated with --unenroll-all"
        done = await _signal(
            app,
            targets,
            lambda s, ids: s.unenroll(ids, reason),
            key=key,
            retry=f"crmflow deactivate {key} --unenroll-all",
        )
        return ActivationResult(key, False, unenrolled=done)
    await _signal(
        app,
        targets,
        lambda s, ids: s.pause(ids),
        key=key,
        retry=f"crmflow activate {key} && crmflow deactivate {key}",
    )
    return ActivationResult(key, False, paused=len(targets))


async def remove(app: App, key: str) -> int:
    """Delete an inactive workflow with no running or paused enrollment: its Temporal Schedule
    first (so a failure there changes nothing), then its versions, enrollments and runs.
    Returns how many enrollments were deleted with it."""
    from ._schedules import delete_schedule  # _schedules builds on this module

    checked_key(key)
    with app.sessions() as session:
        workflows = WorkflowRepository(session)
        try:
            workflow = workflows.require(key)
        except StoreError as exc:
            raise UserError(str(exc)) from None
        if workflow.active:
            raise UserError(f"workflow '{key}' is active: run `crmflow deactivate {key}` first")
        enrollments = EnrollmentRepository(session)
        if enrollments.find(key, statuses=list(ACTIVE_STATUSES), limit=1):
            raise UserError(
                f"workflow '{key}' has enrollments still paused: "
                f"run `crmflow deactivate {key} --unenroll-all` first"
            )
        scheduled = any(v.trigger == "schedule" for v in workflows.versions(key))
        count = sum(enrollments.count_by_status(key).values())
    if scheduled:
        await delete_schedule(app, key)
    with app.sessions.begin() as session:
        WorkflowRepository(session).remove(key)
    return count


# ---------------------------------------------------------------- records, lists, events


def argument(text: str) -> str:
    """An argument as a message quotes it: as typed when short and printable."""
    return text if text.isprintable() and len(text) <= 60 else shown(text, 60)


def parse_assignments(pairs: Sequence[str]) -> dict[str, Any]:
    """`PROP=VALUE` stores text; `PROP:=JSON` stores a JSON value (SPEC §4): a string, a
    number (no NaN or Infinity, integers within signed 64 bits), a boolean or null. Names and
    values follow `crmflow.definitions` rules; a refusal names the argument."""
    values: dict[str, Any] = {}
    for pair in pairs:
        where = argument(pair)
        if ":=" in pair and (pair.index(":=") < pair.index("=") + 1 if "=" in pair else True):
            name, raw = pair.split(":=", 1)
            try:
                value = parse_json(raw)
            except json.JSONDecodeError as exc:
                raise UserError(f"{where}: not valid JSON after ':=' ({exc.msg})") from None
            except RecursionError:
                raise UserError(f"{where}: not valid JSON after ':=' (nested too deeply)") from None
            except InvalidInput as exc:
                raise UserError(f"{where}: {exc}") from None
        elif "=" in pair:
            name, value = pair.split("=", 1)
        else:
            raise UserError(f"{where}: expected PROP=VALUE or PROP:=JSON")
        name = name.strip()
        if not name:
            raise UserError(f"{where}: the property name is empty")
        checked(check_property_name, name, where)
        checked(check_value, value, where)
        if name in values:
            raise UserError(f"{where}: property {shown(name)} is given twice")
        values[name] = value
    return values


def record_view(session: Any, object_type: str, record_id: str) -> dict[str, Any]:
    record = RecordRepository(session).require(object_type, record_id)
    return {
        "object_type": object_type,
        "id": record_id,
        "properties": dict(record.properties),
        "lists": ListRepository(session).lists_of(object_type, record_id),
        # Beyond SPEC §4's shape: the records `create_record` made for it (or it was made for).
        "associations": [
            {"object_type": other_type, "id": other_id}
            for other_type, other_id in AssociationRepository(session).of_record(
                object_type, record_id
            )
        ],
    }


def set_record(
    app: App, object_type: str, record_id: str, values: Mapping[str, Any]
) -> dict[str, Any]:
    """Create the record or merge `values` into it (a None removes a property)."""
    checked_record(object_type, record_id)
    checked(check_properties, values)
    with app.sessions.begin() as session:
        RecordRepository(session).upsert(object_type, record_id, values, now=utcnow())
        return record_view(session, object_type, record_id)


def show_record(app: App, object_type: str, record_id: str) -> dict[str, Any]:
    checked_record(object_type, record_id)
    with app.sessions() as session:
        try:
            return record_view(session, object_type, record_id)
        except RecordNotFound as exc:
            raise UserError(str(exc)) from None


def delete_record(app: App, object_type: str, record_id: str) -> None:
    """Delete the record with its list memberships and events. The change feed carries the
    deletion to the dispatcher, which unenrolls the record from every workflow."""
    checked_record(object_type, record_id)
    with app.sessions.begin() as session:
        if not RecordRepository(session).delete(object_type, record_id, now=utcnow()):
            raise UserError(f"no {object_type} with id '{record_id}'")


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0


def read_import(path: Path) -> list[Row]:
    """Every row of a CSV or JSONL file, checked (see `_imports`); a problem is bad input."""
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        return read_records(path)
    except ImportProblem as exc:
        raise UserError(str(exc)) from None


def import_rows(
    app: App,
    rows: Sequence[Row],
    object_type: str,
    *,
    batch_size: int = 1000,
    on_progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Upsert checked rows, all in one transaction."""
    checked(check_object_type, object_type)
    result = ImportResult()
    now = utcnow()
    with app.sessions.begin() as session:
        records = RecordRepository(session)
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            created, updated = records.upsert_many(object_type, batch, now=now)
            result.created += created
            result.updated += updated
            if on_progress:
                on_progress(len(batch))
    return result


def import_records(
    app: App,
    path: Path,
    object_type: str,
    *,
    batch_size: int = 1000,
    on_progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Upsert every row (its `id` column names the record). The whole file is checked before
    anything is written, so a bad line never leaves half an import behind."""
    checked(check_object_type, object_type)
    rows = read_import(path)
    return import_rows(app, rows, object_type, batch_size=batch_size, on_progress=on_progress)


def _require_record(session: Any, object_type: str, record_id: str) -> None:
    if RecordRepository(session).get(object_type, record_id) is None:
        raise UserError(f"no {object_type} with id '{record_id}'")


def change_list(app: App, name: str, ids: Sequence[str], *, object_type: str, add: bool) -> int:
    """Add or remove records; returns how many memberships changed."""
    checked(check_list_name, name)
    for record_id in ids:
        checked_record(object_type, record_id)
    changed = 0
    now = utcnow()
    with app.sessions.begin() as session:
        lists = ListRepository(session)
        for record_id in ids:
            _require_record(session, object_type, record_id)
            try:
                if add:
                    changed += lists.add(name, object_type, record_id, now=now)
                else:
                    changed += lists.remove(name, object_type, record_id, now=now)
            except StoreError as exc:
                raise UserError(str(exc)) from None
    return changed


def show_list(app: App, name: str) -> dict[str, Any]:
    checked(check_list_name, name)
    with app.sessions() as session:
        lists = ListRepository(session)
        found = lists.get(name)
        if found is None:
            raise UserError(f"no list '{name}'")
        return {"name": name, "object_type": found.object_type, "members": lists.members(name)}


def track_event(
    app: App, object_type: str, record_id: str, name: str, properties: Mapping[str, Any]
) -> dict[str, Any]:
    checked_record(object_type, record_id)
    checked(check_event_name, name)
    properties = checked(check_event_properties, properties)
    with app.sessions.begin() as session:
        _require_record(session, object_type, record_id)
        event = EventRepository(session).add(
            object_type, record_id, name, properties, occurred_at=utcnow()
        )
        return {
            "object_type": object_type,
            "record_id": record_id,
            "name": name,
            "properties": properties,
            "occurred_at": event.occurred_at.isoformat(),
        }


# ---------------------------------------------------------------- enrollments


async def enroll(app: App, key: str, record_ids: Sequence[str]) -> list[EnrollOutcome]:
    checked_key(key)
    for record_id in record_ids:
        checked(check_record_id, record_id)
    with app.sessions() as session:
        workflow = WorkflowRepository(session).get(key)
        if workflow is None:
            raise UserError(f"no workflow '{key}'")
        if not workflow.active:
            raise OperationFailed(
                f"workflow '{key}' is not active: run `crmflow activate {key}` first"
            )
    definition, version = load_version(app, key)
    enrolling = await starter(app)
    outcomes = []
    for record_id in record_ids:
        try:
            outcome = await enrolling.start(definition, version, record_id, source="manual")
        except RPCError as exc:
            raise OperationFailed(
                f"could not start the enrollment of '{record_id}': {exc}"
            ) from exc
        outcomes.append(outcome)
    return outcomes


async def unenroll(
    app: App,
    key: str,
    record_ids: Sequence[str],
    *,
    reason: str = "unenrolled manually",
    wait: float = 10.0,
) -> list[EnrollOutcome]:
    """Signal each running enrollment; wait (bounded) until the workflow has recorded it."""
    checked_key(key)
    for record_id in record_ids:
        checked(check_record_id, record_id)
    with app.sessions() as session:
        try:
            object_type = WorkflowRepository(session).version(key).object_type
        except StoreError as exc:
            raise UserError(str(exc)) from None
        enrollments = EnrollmentRepository(session)
        targets = {
            record_id: enrollments.active_for(key, object_type, record_id)
            for record_id in record_ids
        }
    signals = await starter(app)
    outcomes = []
    for record_id, enrollment in targets.items():
        if enrollment is None:
            outcomes.append(
                EnrollOutcome(record_id, False, f"'{record_id}' is not enrolled in '{key}'")
            )
            continue
        try:
            await signals.unenroll([enrollment.temporal_workflow_id], reason)
        except SignalFailed as exc:
            outcomes.append(EnrollOutcome(record_id, False, f"could not signal: {exc}"))
            continue
        status = await _wait_for_end(app, enrollment.id, wait)
        if status is None:
            # The signal is delivered and durable: it takes effect as soon as a worker runs.
            ok, message = True, "unenroll requested: it takes effect when a worker runs"
        else:
            ok = status == "unenrolled"
            message = "unenrolled" if ok else f"had already ended as {status}"
        outcomes.append(EnrollOutcome(record_id, ok, message, enrollment.temporal_workflow_id))
    return outcomes


async def _wait_for_end(app: App, enrollment_id: int, timeout: float) -> str | None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        with app.sessions() as session:
            found = EnrollmentRepository(session).get(enrollment_id)
            if found is not None and found.status not in ACTIVE_STATUSES:
                return found.status
        if asyncio.get_running_loop().time() >= deadline:
            return None
        await asyncio.sleep(0.1)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def step_view(step: EnrollmentStep) -> dict[str, Any]:
    return {
        "action_id": step.action_id,
        "type": step.type,
        "started_at": _iso(step.started_at),
        "finished_at": _iso(step.finished_at),
        "outcome": step.outcome,
    }


def enrollment_view(enrollment: Enrollment, steps: list[EnrollmentStep]) -> dict[str, Any]:
    return {
        "workflow": enrollment.workflow_key,
        "version": enrollment.version,
        "record_id": enrollment.record_id,
        "object_type": enrollment.object_type,
        "status": enrollment.status,
        "reason": enrollment.reason,
        "source": enrollment.source,
        "enrolled_at": _iso(enrollment.enrolled_at),
        "ended_at": _iso(enrollment.ended_at),
        "temporal_workflow_id": enrollment.temporal_workflow_id,
        "steps": [step_view(s) for s in steps],
    }


def list_enrollments(
    app: App, key: str, *, record_id: str | None = None, status: str | None = None
) -> list[dict[str, Any]]:
    checked_key(key)
    if record_id is not None:
        checked(check_record_id, record_id)
    with app.sessions() as session:
        if WorkflowRepository(session).get(key) is None:
            raise UserError(f"no workflow '{key}'")
        repo = EnrollmentRepository(session)
        found = repo.find(key, record_id=record_id, statuses=[status] if status else None)
        steps = repo.steps([e.id for e in found])
        return [enrollment_view(e, steps[e.id]) for e in found]


def history(app: App, key: str, record_id: str) -> dict[str, Any]:
    """One record in one workflow: why it is (not) enrolled now, and every enrollment it had,
    oldest first, with its timeline."""
    from ._review import explain_record  # _review builds on this module

    checked_key(key)
    checked(check_record_id, record_id)
    object_type, explanation = explain_record(app, key, record_id)
    return {
        "workflow": key,
        "record_id": record_id,
        "object_type": object_type,
        "explanation": explanation.as_json(),
        "enrollments": list_enrollments(app, key, record_id=record_id),
    }


def outbox(app: App) -> list[dict[str, Any]]:
    with app.sessions() as session:
        return [
            {
                "to": m.to,
                "subject": m.subject,
                "body": m.body,
                "workflow": m.workflow_key,
                "action_id": m.action_id,
                "record_id": m.record_id,
                "sent_at": _iso(m.sent_at),
                "kind": m.kind,
                "message_id": m.message_id,
                "delivery_status": m.delivery_status,
            }
            for m in OutboxRepository(session).all()
        ]


def tasks(app: App) -> list[dict[str, Any]]:
    with app.sessions() as session:
        return [
            {
                "title": t.title,
                "assignee": t.assignee,
                "due_at": _iso(t.due_at),
                "record_id": t.record_id,
                "workflow": t.workflow_key,
                "action_id": t.action_id,
                "created_at": _iso(t.created_at),
            }
            for t in TaskRepository(session).all()
        ]
