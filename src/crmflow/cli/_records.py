"""Commands over records, lists and events."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from crmflow import services

from . import _output as output
from ._common import (
    EVENT_NAME,
    FILE,
    LIST_NAME,
    RECORD_ID,
    app,
    json_option,
    object_option,
)

# ---------------------------------------------------------------- records, lists, events


@click.group()
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


@click.group()
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


@click.group()
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
