"""The `crmflow` command line: thin click commands over `services`.

Exit codes (SPEC §4): 0 ok, 1 the operation failed, 2 bad input. Every error a user can cause
is reported on stderr as `crmflow: <message>`, never as a traceback (`CRMFLOW_DEBUG=1` shows
the traceback of unexpected errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, get_args

import click
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from sqlalchemy.exc import DBAPIError
from temporalio.client import Client
from temporalio.service import RPCError

from crmflow.activities.config import ConfigError
from crmflow.activities.models import EnrollmentStatus
from crmflow.definitions import (
    DefinitionError,
    InvalidInput,
    check_event_name,
    check_list_name,
    check_object_type,
    check_record_id,
    check_workflow_key,
    definition_json_schema,
    shown,
)
from crmflow.store import StoreError
from crmflow.store._engine import ensure_postgres_database

from . import _changes, _cli_insights, _review, _schedules, services
from . import _output as output
from . import up as long_running
from ._app import App, Settings
from .devserver import DevServerError
from .services import OperationFailed, UserError


class Checked(click.ParamType):
    """An argument checked by a rule of `crmflow.definitions` (README: "Limits and
    refusals"); a refusal is a usage error naming the argument."""

    def __init__(self, name: str, check: Callable[[str], str]) -> None:
        self.name = name
        self.check = check

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return self.check(value)
        except InvalidInput as exc:
            self.fail(str(exc), param, ctx)


RECORD_ID = Checked("record id", check_record_id)
OBJECT_TYPE = Checked("object type", check_object_type)
WORKFLOW_KEY = Checked("workflow key", check_workflow_key)
LIST_NAME = Checked("list name", check_list_name)
EVENT_NAME = Checked("event name", check_event_name)
VERSION = click.IntRange(1, 2**31 - 1)  # the store's version column is a 32-bit integer

FILE = click.Path(exists=True, dir_okay=False, readable=True, path_type=Path)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
object_option = click.option(
    "--object",
    "object_type",
    default="contact",
    show_default=True,
    metavar="TYPE",
    type=OBJECT_TYPE,
    help="Object type of the record ids.",
)
key_argument = click.argument("key", type=WORKFLOW_KEY)


def debugging() -> bool:
    return os.environ.get("CRMFLOW_DEBUG") == "1"


def first_line(exc: BaseException) -> str:
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig  # the driver's own message, without SQLAlchemy's SQL and links
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---------------------------------------------------------------- wiring

_HOST = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?$")


def check_temporal_address(address: str) -> str:
    """HOST:PORT (a host name, an IPv4 address or a bracketed IPv6 address, and a port)."""
    host, _, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            host = ""
    elif not _HOST.fullmatch(host):
        host = ""
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UserError(
            f"--temporal (or CRMFLOW_TEMPORAL) {shown(address)}: "
            "expected HOST:PORT, e.g. localhost:7233"
        )
    return address


class CliApp(App):
    async def client(self) -> Client:
        check_temporal_address(self.settings.temporal_address)
        try:
            return await super().client()
        except RuntimeError as exc:  # how the SDK reports a failed connection
            raise OperationFailed(
                f"cannot reach Temporal at {self.settings.temporal_address}: "
                "is `crmflow up` running?"
            ) from exc


def open_app(settings: Settings, *, create_database: bool = False) -> App:
    """The store (migrated) and a lazy Temporal client; an unusable database URL is bad input."""
    try:
        if create_database:
            # A role without access to the maintenance database may still use its own:
            # opening the store below reports the real problem, if there is one.
            with contextlib.suppress(Exception):
                ensure_postgres_database(settings.db_url)
        return CliApp(settings)
    except Exception as exc:
        if debugging():
            raise
        try:
            shown = long_running.shown_url(settings.db_url)
        except Exception:
            shown = settings.db_url
        raise UserError(f"cannot open the database {shown}: {first_line(exc)}") from None


class State:
    """What the global options configure; the App is opened on first use (`validate` and
    `schema` need no store)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._app: App | None = None

    def app(self) -> App:
        if self._app is None:
            self._app = open_app(self.settings)
        return self._app

    def __enter__(self) -> State:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._app is not None:
            self._app.close()


def state() -> State:
    return click.get_current_context().find_object(State)  # type: ignore[return-value]


def app() -> App:
    return state().app()


def report(exc: Exception) -> int:
    """Print an error the way a user should see it; return the exit code."""
    if isinstance(exc, DefinitionError):
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        return 2
    if isinstance(exc, UserError | StoreError | ConfigError):
        message, code = str(exc), 2
    elif isinstance(exc, OperationFailed | DevServerError):
        message, code = str(exc), 1
    elif isinstance(exc, OSError):
        message = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
        code = 2
    elif isinstance(exc, RPCError):
        message, code = f"Temporal refused: {exc.message}", 1
    else:
        message = (
            f"unexpected error: {type(exc).__name__}: {first_line(exc)} "
            "(CRMFLOW_DEBUG=1 shows the traceback)"
        )
        code = 1
    click.echo(f"crmflow: {message}", err=True)
    return code


class UsageError(click.UsageError):
    """A usage error on one line, as every other error: `crmflow: <message> (see `... --help`)`."""

    def __init__(self, error: click.UsageError) -> None:
        super().__init__(error.format_message(), error.ctx)

    def show(self, file: Any = None) -> None:
        message = " ".join(self.format_message().split())
        hint = f" (see `{self.ctx.command_path} --help`)" if self.ctx is not None else ""
        click.echo(f"crmflow: {message}{hint}", err=True)


def one_line(error: click.UsageError) -> click.UsageError:
    # A group called without a command prints its help, as click does.
    if isinstance(error, UsageError | click.exceptions.NoArgsIsHelpError):
        return error
    return UsageError(error)


class CrmflowGroup(click.Group):
    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise one_line(exc) from None
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            if debugging():
                raise
            ctx.exit(report(exc))


def fail(code: int) -> NoReturn:
    click.get_current_context().exit(code)


# ---------------------------------------------------------------- the group


@click.group(
    cls=CrmflowGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--db",
    "db_url",
    metavar="URL",
    envvar="CRMFLOW_DB",
    show_envvar=True,
    help="Store URL (sqlite:///… or postgresql://…). [default: sqlite:///.crmflow/crmflow.db]",
)
@click.option(
    "--temporal",
    "temporal_address",
    metavar="HOST:PORT",
    envvar="CRMFLOW_TEMPORAL",
    show_envvar=True,
    help="Temporal frontend address. [default: localhost:7233]",
)
@click.option(
    "--namespace",
    metavar="NS",
    envvar="CRMFLOW_NAMESPACE",
    show_envvar=True,
    help="Temporal namespace. [default: default]",
)
@click.version_option(package_name="crmflow", prog_name="crmflow")
@click.pass_context
def cli(
    ctx: click.Context, db_url: str | None, temporal_address: str | None, namespace: str | None
) -> None:
    """CRM automation workflows, run as durable Temporal workflows."""
    settings = Settings.from_env(
        db_url=db_url, temporal_address=temporal_address, namespace=namespace
    )
    ctx.obj = ctx.with_resource(State(settings))


@cli.command()
@click.option("--temporal-port", default=7233, show_default=True, type=click.IntRange(1, 65535))
@click.option("--ui-port", default=8233, show_default=True, type=click.IntRange(1, 65535))
def up(temporal_port: int, ui_port: int) -> None:
    """Run everything locally: a Temporal dev server (state in .crmflow/), the store and a
    worker. Ctrl-C stops them all."""
    asyncio.run(
        long_running.run_up(
            state().settings,
            open_app=partial(open_app, create_database=True),
            temporal_port=temporal_port,
            ui_port=ui_port,
            echo=click.echo,
        )
    )


@cli.command()
def worker() -> None:
    """Run a worker against the Temporal server (until SIGINT/SIGTERM)."""
    worker_app = open_app(state().settings, create_database=True)
    try:
        asyncio.run(long_running.run_worker(worker_app, echo=click.echo))
    finally:
        worker_app.close()


# ---------------------------------------------------------------- definitions


@cli.command()
@click.argument("files", nargs=-1, required=True, type=FILE)
def validate(files: Sequence[Path]) -> None:
    """Check definitions; print every problem."""
    checked = services.validate_files(files)
    for c in checked:
        if c.definition is not None:
            click.echo(f"{c.path}: ok ({c.definition.key})")
    problems = [p for c in checked for p in c.problems]
    if problems:
        raise DefinitionError(problems)


@cli.command()
def schema() -> None:
    """Print the JSON Schema of the definition format (for editors)."""
    output.print_json(definition_json_schema())


@cli.command()
@click.argument("files", nargs=-1, required=True, type=FILE)
@json_option
def publish(files: Sequence[Path], as_json: bool) -> None:
    """Validate definitions and store each as a new version (all of them, or none)."""
    published = asyncio.run(services.publish(app(), files))
    if as_json:
        output.print_json([{"key": p.key, "version": p.version, "path": p.path} for p in published])
        return
    for p in published:
        click.echo(f"{p.key}: version {p.version} ({p.path})")


@cli.command()
@json_option
def workflows(as_json: bool) -> None:
    """List published workflows; scheduled ones with their schedule and its state."""
    found = [w.as_json() for w in asyncio.run(services.list_workflows(app()))]
    output.emit(found, as_json, output.print_workflows)


@cli.command()
@key_argument
@click.option("--version", type=VERSION, help="A version (default: the latest).")
@json_option
def show(key: str, version: int | None, as_json: bool) -> None:
    """Show a workflow: versions, activation, schedule, enrollments, stored source."""
    found = asyncio.run(services.show_workflow(app(), key, version))
    output.emit(found, as_json, output.print_workflow)


@cli.command()
@key_argument
@click.option(
    "--next",
    "count",
    type=click.IntRange(1, 1000),
    default=5,
    show_default=True,
    help="How many next run times to print.",
)
@click.option("--run-now", is_flag=True, help="Start one run at once and print its result.")
@json_option
def schedule(key: str, count: int, run_now: bool, as_json: bool) -> None:
    """Next run times of a scheduled workflow (in its time zone); --run-now runs it now."""
    if run_now:
        result = asyncio.run(_schedules.run_now(app(), key))
        if result is None:
            raise services.OperationFailed(
                f"the run of '{key}' is still going: see `crmflow schedule {key}` later"
            )
        output.emit(result.model_dump(exclude_none=True), as_json, output.print_run)
        if result.failed:
            raise SystemExit(1)
        return
    times = [t.isoformat() for t in _schedules.next_runs(app(), key, count)]
    if as_json:
        output.print_json(times)  # SPEC §4: a plain list of ISO-8601 datetimes
        return
    runs = _schedules.recent_runs(app(), key)
    output.print_schedule({"next_runs": times, "recent_runs": runs})


@cli.command()
@key_argument
@click.option("--list", "list_records", is_flag=True, help="Print the ids of the matching records.")
@click.option(
    "--save-list",
    metavar="NAME",
    type=LIST_NAME,
    help="Save the matching records as a static list.",
)
@json_option
def review(key: str, list_records: bool, save_list: str | None, as_json: bool) -> None:
    """How many records match the criteria now, and what activation would do."""
    found = _review.review(app(), key, list_records=list_records, save_list=save_list).as_json()
    output.emit(found, as_json, output.print_review)


@cli.command()
@key_argument
@click.option(
    "--enroll-existing",
    is_flag=True,
    help="Also enroll the records that match the criteria now (criteria workflows).",
)
@json_option
def activate(key: str, enroll_existing: bool, as_json: bool) -> None:
    """Start enrolling in a workflow; resume its paused enrollments."""
    progress = output.progress_bar()
    bar: list[TaskID] = []  # started only when there are existing records to enroll

    def advance(done: int, total: int) -> None:
        if not bar:
            progress.start()
            bar.append(progress.add_task("enrolling existing records", total=total))
        progress.update(bar[0], completed=done, total=total)

    try:
        result = asyncio.run(
            services.activate(app(), key, enroll_existing=enroll_existing, on_progress=advance)
        )
    finally:
        if bar:
            progress.stop()
    existing = result.existing.as_json() if result.existing else None
    if as_json:
        output.print_json(
            {"key": key, "active": True, "resumed": result.resumed, "existing": existing}
        )
    else:
        resumed = f"; {result.resumed} paused enrollment(s) resumed" if result.resumed else ""
        click.echo(f"{key} is active{resumed}")
        if existing is not None:
            click.echo(output.existing_summary(existing))
    if existing is not None and existing["failed"]:
        for failure in existing["failures"][:5]:
            click.echo(
                f"crmflow: {failure['record_id']}: not enrolled: {failure['message']}", err=True
            )
        fail(1)


@cli.command()
@key_argument
@click.option("--unenroll-all", is_flag=True, help="End running enrollments instead of pausing.")
def deactivate(key: str, unenroll_all: bool) -> None:
    """Stop enrolling; pause (or end) running enrollments."""
    result = asyncio.run(services.deactivate(app(), key, unenroll_all=unenroll_all))
    if unenroll_all:
        click.echo(f"{key} is inactive; {result.unenrolled} enrollment(s) unenrolled")
    else:
        click.echo(f"{key} is inactive; {result.paused} enrollment(s) paused")


@cli.command()
@key_argument
def remove(key: str) -> None:
    """Delete an inactive workflow: its versions, enrollments, runs and Temporal Schedule."""
    deleted = asyncio.run(services.remove(app(), key))
    click.echo(f"{key} removed, with {deleted} ended enrollment(s)")


# ---------------------------------------------------------------- records, lists, events


@cli.group()
def records() -> None:
    """Import, set, show and delete records."""


@records.command("import")
@click.argument("path", metavar="FILE", type=FILE)
@object_option
@json_option
def import_records(path: Path, object_type: str, as_json: bool) -> None:
    """Upsert records from a CSV (header row) or JSONL file; the `id` column names each."""
    # The whole file is checked first: a refusal is one line, with no progress bar before it.
    rows = services.read_import(path)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=output.err(),
    )
    with progress:
        task = progress.add_task(f"importing {path.name}", total=len(rows))
        result = services.import_rows(
            app(), rows, object_type, on_progress=lambda n: progress.advance(task, n)
        )
        done = result.created + result.updated
    if as_json:
        output.print_json(
            {"object_type": object_type, "created": result.created, "updated": result.updated}
        )
    else:
        click.echo(
            f"imported {done} {object_type} record(s): "
            f"{result.created} created, {result.updated} updated"
        )


@records.command("set")
@click.argument("record_id", metavar="ID", type=RECORD_ID)
@click.argument("assignments", metavar="PROP=VALUE|PROP:=JSON...", nargs=-1, required=True)
@object_option
@json_option
def set_record(record_id: str, assignments: Sequence[str], object_type: str, as_json: bool) -> None:
    """Create or update a record: PROP=VALUE stores text, PROP:=JSON a JSON value."""
    values = services.parse_assignments(assignments)
    view = services.set_record(app(), object_type, record_id, values)
    output.emit(view, as_json, output.print_record)


@records.command("show")
@click.argument("record_id", metavar="ID", type=RECORD_ID)
@object_option
@json_option
def show_record(record_id: str, object_type: str, as_json: bool) -> None:
    """Show a record's properties and lists."""
    view = services.show_record(app(), object_type, record_id)
    output.emit(view, as_json, output.print_record)


@records.command("delete")
@click.argument("record_id", metavar="ID", type=RECORD_ID)
@object_option
def delete_record(record_id: str, object_type: str) -> None:
    """Delete a record; it is unenrolled from every workflow it is enrolled in."""
    services.delete_record(app(), object_type, record_id)
    click.echo(f"deleted {object_type} {record_id}")


@cli.group()
def lists() -> None:
    """Static lists: add, remove, show members."""


@lists.command("add")
@click.argument("name", metavar="LIST", type=LIST_NAME)
@click.argument("record_ids", metavar="ID...", nargs=-1, required=True, type=RECORD_ID)
@object_option
def list_add(name: str, record_ids: Sequence[str], object_type: str) -> None:
    """Add records to a list (created on first use)."""
    changed = services.change_list(app(), name, record_ids, object_type=object_type, add=True)
    click.echo(f"{name}: {changed} added ({len(record_ids) - changed} already there)")


@lists.command("remove")
@click.argument("name", metavar="LIST", type=LIST_NAME)
@click.argument("record_ids", metavar="ID...", nargs=-1, required=True, type=RECORD_ID)
@object_option
def list_remove(name: str, record_ids: Sequence[str], object_type: str) -> None:
    """Remove records from a list."""
    changed = services.change_list(app(), name, record_ids, object_type=object_type, add=False)
    click.echo(f"{name}: {changed} removed ({len(record_ids) - changed} were not members)")


@lists.command("show")
@click.argument("name", metavar="LIST", type=LIST_NAME)
@json_option
def list_show(name: str, as_json: bool) -> None:
    """Show a list's members."""
    found = services.show_list(app(), name)
    if as_json:
        output.print_json(found)
        return
    click.echo(f"{found['name']} ({found['object_type']}): {len(found['members'])} member(s)")
    for member in found["members"]:
        click.echo(f"  {member}")


@cli.group()
def events() -> None:
    """Record events (form_submitted, email_opened, ...)."""


@events.command("track")
@click.argument("record_id", metavar="ID", type=RECORD_ID)
@click.argument("name", type=EVENT_NAME)
@click.argument("assignments", metavar="[PROP=VALUE|PROP:=JSON]...", nargs=-1)
@object_option
@json_option
def track(
    record_id: str, name: str, assignments: Sequence[str], object_type: str, as_json: bool
) -> None:
    """Record that a record did NAME now, with properties."""
    properties = services.parse_assignments(assignments)
    event = services.track_event(app(), object_type, record_id, name, properties)
    if as_json:
        output.print_json(event)
    else:
        click.echo(f"{object_type} {record_id}: {name} at {output.when(event['occurred_at'])}")


# ---------------------------------------------------------------- enrollments


def print_outcomes(outcomes: list[services.EnrollOutcome], done: str, as_json: bool) -> None:
    """One line per record; exit 1 if any record was not handled."""
    if as_json:
        output.print_json(
            [
                {
                    "record_id": o.record_id,
                    "ok": o.ok,
                    "message": o.message,
                    "temporal_workflow_id": o.temporal_workflow_id,
                }
                for o in outcomes
            ]
        )
    else:
        for o in outcomes:
            if o.ok:
                click.echo(f"{o.record_id}: {o.message} ({o.temporal_workflow_id})")
            else:
                click.echo(f"crmflow: {o.record_id}: not {done}: {o.message}", err=True)
    if not all(o.ok for o in outcomes):
        fail(1)


@cli.command()
@key_argument
@click.argument("record_ids", metavar="ID...", nargs=-1, required=True, type=RECORD_ID)
@json_option
def enroll(key: str, record_ids: Sequence[str], as_json: bool) -> None:
    """Enroll records in an active workflow, now."""
    print_outcomes(asyncio.run(services.enroll(app(), key, record_ids)), "enrolled", as_json)


@cli.command()
@key_argument
@click.argument("record_ids", metavar="ID...", nargs=-1, required=True, type=RECORD_ID)
@json_option
def unenroll(key: str, record_ids: Sequence[str], as_json: bool) -> None:
    """End the running enrollments of records in a workflow."""
    print_outcomes(asyncio.run(services.unenroll(app(), key, record_ids)), "unenrolled", as_json)


@cli.command()
@key_argument
@click.option(
    "--record", "record_id", metavar="ID", type=RECORD_ID, help="Only this record's enrollments."
)
@click.option("--status", type=click.Choice(get_args(EnrollmentStatus)), help="Only this status.")
@json_option
def enrollments(key: str, record_id: str | None, status: str | None, as_json: bool) -> None:
    """Enrollments of a workflow, with status and steps."""
    found = services.list_enrollments(app(), key, record_id=record_id, status=status)
    output.emit(found, as_json, output.print_enrollments)


@cli.command()
@key_argument
@click.option("--record", "record_id", metavar="ID", type=RECORD_ID, required=True)
@json_option
def history(key: str, record_id: str, as_json: bool) -> None:
    """One record in a workflow: each enrollment's steps, and why it is (not) enrolled now."""
    found = services.history(app(), key, record_id)
    output.emit(found, as_json, output.print_history)


@cli.group(invoke_without_command=True)
@click.option("--failed", is_flag=True, help="Only the parked changes (dispatch failed too often).")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="At most this many, oldest first (0: all).",
)
@json_option
@click.pass_context
def changes(ctx: click.Context, failed: bool, limit: int, as_json: bool) -> None:
    """The change feed: changes not dispatched yet, pending or parked, with their error."""
    if ctx.invoked_subcommand is not None:
        return
    counts, found = _changes.list_changes(app(), parked_only=failed, limit=limit or None)
    if as_json:
        output.print_json(found)
    else:
        output.print_changes(counts, found)


@changes.command("retry")
@click.argument("change_ids", metavar="ID...", nargs=-1, type=int)
@click.option("--all", "retry_all", is_flag=True, help="Every parked change.")
def retry_changes(change_ids: Sequence[int], retry_all: bool) -> None:
    """Put parked changes back in the feed (with a fresh set of attempts)."""
    if bool(change_ids) == retry_all:
        raise click.UsageError("give the ids of parked changes, or --all (not both)")
    retried = _changes.retry_changes(app(), None if retry_all else change_ids)
    click.echo(
        f"{len(retried)} change(s) back in the feed"
        + (f": {', '.join(map(str, retried))}" if retried else "")
    )


@cli.command()
@json_option
def outbox(as_json: bool) -> None:
    """Emails delivered by workflows."""
    found = services.outbox(app())
    output.emit(found, as_json, output.print_outbox)


@cli.command()
@json_option
def tasks(as_json: bool) -> None:
    """Tasks created by workflows."""
    found = services.tasks(app())
    output.emit(found, as_json, output.print_tasks)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--set",
    "assignments",
    metavar="PROP=VALUE|PROP:=JSON",
    multiple=True,
    help="A property of the simulated record (repeatable).",
)
@click.option("--start", metavar="ISO", help="When the enrollment begins (default now).")
@click.option(
    "--event",
    "event_specs",
    metavar="OFFSET:NAME[:PROP=VALUE,...]",
    multiple=True,
    help="An event that many hours/days after the start, e.g. 2h:email_opened (repeatable).",
)
@json_option
def simulate(
    file: Path,
    assignments: Sequence[str],
    start: str | None,
    event_specs: Sequence[str],
    as_json: bool,
) -> None:
    """Run FILE for one made-up record on a private time-skipping server; nothing is sent."""
    from . import _simulate

    properties = services.parse_assignments(assignments)
    events = [_simulate.parse_event(spec) for spec in event_specs]
    result = asyncio.run(
        _simulate.simulate(file, properties=properties, start=start, events=events)
    )
    if as_json:
        output.print_json([step.as_json() for step in result.steps])
    else:
        output.print_simulation(result)


cli.add_command(_cli_insights.graph)
cli.add_command(_cli_insights.stats)


def main() -> None:
    try:
        cli.main(prog_name="crmflow")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    else:  # pragma: no cover - click's standalone mode always exits
        code = 0
    # The Temporal SDK's Rust threads can abort interpreter teardown ("PyGILState_Release: thread
    # state must be current", temporalio/sdk-python#300; measured here: about 1 exit in 4 after
    # any RPC). Everything is closed by now (click closed the store), so skip the teardown.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):  # e.g. `crmflow outbox | head`: a closed pipe
            stream.flush()
    os._exit(code)
