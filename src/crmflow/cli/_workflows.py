"""Commands over definitions: validate, schema, publish, workflows, show, schedule, review,
activate, deactivate, remove."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import click
from rich.progress import (
    TaskID,
)

from crmflow import services
from crmflow.definitions import (
    DefinitionError,
    definition_json_schema,
)
from crmflow.services import review as _review
from crmflow.services import schedules as _schedules

from . import _output as output
from ._common import (
    FILE,
    LIST_NAME,
    VERSION,
    app,
    fail,
    json_option,
    key_argument,
)

# ---------------------------------------------------------------- definitions


@click.command()
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


@click.command()
def schema() -> None:
    """Print the JSON Schema of the definition format (for editors)."""
    output.print_json(definition_json_schema())


@click.command()
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


@click.command()
@json_option
def workflows(as_json: bool) -> None:
    """List published workflows; scheduled ones with their schedule and its state."""
    found = [w.as_json() for w in asyncio.run(services.list_workflows(app()))]
    output.emit(found, as_json, output.print_workflows)


@click.command()
@key_argument
@click.option("--version", type=VERSION, help="A version (default: the latest).")
@json_option
def show(key: str, version: int | None, as_json: bool) -> None:
    """Show a workflow: versions, activation, schedule, enrollments, stored source."""
    found = asyncio.run(services.show_workflow(app(), key, version))
    output.emit(found, as_json, output.print_workflow)


@click.command()
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


@click.command()
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


@click.command()
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


@click.command()
@key_argument
@click.option("--unenroll-all", is_flag=True, help="End running enrollments instead of pausing.")
def deactivate(key: str, unenroll_all: bool) -> None:
    """Stop enrolling; pause (or end) running enrollments."""
    result = asyncio.run(services.deactivate(app(), key, unenroll_all=unenroll_all))
    if unenroll_all:
        click.echo(f"{key} is inactive; {result.unenrolled} enrollment(s) unenrolled")
    else:
        click.echo(f"{key} is inactive; {result.paused} enrollment(s) paused")


@click.command()
@key_argument
def remove(key: str) -> None:
    """Delete an inactive workflow: its versions, enrollments, runs and Temporal Schedule."""
    deleted = asyncio.run(services.remove(app(), key))
    click.echo(f"{key} removed, with {deleted} ended enrollment(s)")
