"""Records, lists and events: what the CLI and the API write and read."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from crmflow.definitions import (
    InvalidInput,
    check_event_name,
    check_event_properties,
    check_list_name,
    check_object_type,
    check_properties,
    check_property_name,
    check_value,
    parse_json,
    shown,
)
from crmflow.store import (
    AssociationRepository,
    EventRepository,
    ListRepository,
    RecordNotFound,
    RecordRepository,
    StoreError,
)

from ._app import App
from ._base import (
    UserError,
    checked,
    checked_record,
    utcnow,
)
from .imports import ImportProblem, Row, read_records
from .views import EventView, ListView, RecordRef, RecordView

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


def record_view(session: Session, object_type: str, record_id: str) -> RecordView:
    record = RecordRepository(session).require(object_type, record_id)
    return RecordView(
        object_type=object_type,
        id=record_id,
        properties=dict(record.properties),
        lists=ListRepository(session).lists_of(object_type, record_id),
        associations=[
            RecordRef(object_type=other_type, id=other_id)
            for other_type, other_id in AssociationRepository(session).of_record(
                object_type, record_id
            )
        ],
    )


def set_record(app: App, object_type: str, record_id: str, values: Mapping[str, Any]) -> RecordView:
    """Create the record or merge `values` into it (a None removes a property)."""
    checked_record(object_type, record_id)
    checked(check_properties, values)
    with app.sessions.begin() as session:
        RecordRepository(session).upsert(object_type, record_id, values, now=utcnow())
        return record_view(session, object_type, record_id)


def show_record(app: App, object_type: str, record_id: str) -> RecordView:
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
            created, updated = records.upsert_many(object_type, batch, now=now, bulk=True)
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


def show_list(app: App, name: str) -> ListView:
    checked(check_list_name, name)
    with app.sessions() as session:
        lists = ListRepository(session)
        found = lists.get(name)
        if found is None:
            raise UserError(f"no list '{name}'")
        return ListView(name=name, object_type=found.object_type, members=lists.members(name))


def track_event(
    app: App, object_type: str, record_id: str, name: str, properties: Mapping[str, Any]
) -> EventView:
    checked_record(object_type, record_id)
    checked(check_event_name, name)
    properties = checked(check_event_properties, properties)
    with app.sessions.begin() as session:
        _require_record(session, object_type, record_id)
        event = EventRepository(session).add(
            object_type, record_id, name, properties, occurred_at=utcnow()
        )
        return EventView(
            object_type=object_type,
            record_id=record_id,
            name=name,
            properties=properties,
            occurred_at=event.occurred_at.isoformat(),
        )
