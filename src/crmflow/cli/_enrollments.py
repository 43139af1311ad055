"""Commands over enrollments: enroll, unenroll, enrollments, history, changes, outbox, tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import click

from crmflow import services
from crmflow.definitions import EnrollmentStatus
from crmflow.services import changes as _changes

from . import _output as output
from ._common import (
    RECORD_ID,
    app,
    fail,
    json_option,
    key_argument,
)

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


@click.command()
@key_argument
@click.argument("record_ids", metavar="ID...", nargs=-1, required=True, type=RECORD_ID)
@json_option
def enroll(key: str, record_ids: Sequence[str], as_json: bool) -> None:
    """Enroll records in an active workflow, now."""
    print_outcomes(asyncio.run(services.enroll(app(), key, record_ids)), "enrolled", as_json)


@click.command()
@key_argument
@click.argument("record_ids", metavar="ID...", nargs=-1, required=True, type=RECORD_ID)
@json_option
def unenroll(key: str, record_ids: Sequence[str], as_json: bool) -> None:
    """End the running enrollments of records in a workflow."""
    print_outcomes(asyncio.run(services.unenroll(app(), key, record_ids)), "unenrolled", as_json)


@click.command()
@key_argument
@click.option(
    "--record", "record_id", metavar="ID", type=RECORD_ID, help="Only this record's enrollments."
)
@click.option(
    "--status", type=click.Choice([s.value for s in EnrollmentStatus]), help="Only this status."
)
@json_option
def enrollments(key: str, record_id: str | None, status: str | None, as_json: bool) -> None:
    """Enrollments of a workflow, with status and steps."""
    found = services.list_enrollments(app(), key, record_id=record_id, status=status)
    output.emit(found, as_json, output.print_enrollments)


@click.command()
@key_argument
@click.option("--record", "record_id", metavar="ID", type=RECORD_ID, required=True)
@json_option
def history(key: str, record_id: str, as_json: bool) -> None:
    """One record in a workflow: each enrollment's steps, and why it is (not) enrolled now."""
    found = services.history(app(), key, record_id)
    output.emit(found, as_json, output.print_history)


@click.group(invoke_without_command=True)
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
        output.print_changes(counts, [c.as_json() for c in found])


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


@click.command()
@json_option
def outbox(as_json: bool) -> None:
    """Emails delivered by workflows."""
    found = services.outbox(app())
    output.emit(found, as_json, output.print_outbox)


@click.command()
@json_option
def tasks(as_json: bool) -> None:
    """Tasks created by workflows."""
    found = services.tasks(app())
    output.emit(found, as_json, output.print_tasks)
