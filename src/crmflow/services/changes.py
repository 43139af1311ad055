"""`crmflow changes`: the change feed's changes not dispatched yet, and putting parked ones back.

A change is `pending` until the dispatcher has done what it calls for; one whose dispatch failed
is tried again later (`next_attempt_at`) and, after its last attempt, `parked`: out of the feed
until retried here. A pending change may wait behind an earlier failed change of its record
(`waiting_behind`): a record's changes are dispatched in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from crmflow.store import ChangeNotParked, ChangeRepository, FeedEntry, RecordChange

from ._app import App
from ._base import UserError
from .views import ChangeView

# Kinds of change (as the feed stores them) and what each changed.
PROPERTY_KINDS = ("created", "updated")
LIST_KINDS = ("listed", "unlisted")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def changed(change: RecordChange) -> dict[str, Any]:
    """What the change changed: property names, a list, or an event (nothing for a deletion)."""
    if change.kind in PROPERTY_KINDS:
        return {"properties": list(change.properties)}
    if change.kind in LIST_KINDS:
        return {"list": change.list_name}
    if change.kind == "event":
        return {"event": change.event_name}
    if change.kind == "time":  # time alone changed a term of one workflow's conditions
        events = list(change.before.get("events", []))
        return {
            "workflow": change.workflow_key,
            "properties": list(change.properties),
            "events": events,
        }
    return {}


def change_view(entry: FeedEntry) -> ChangeView:
    c = entry.change
    return ChangeView(
        **{
            "id": c.id,
            "object_type": c.object_type,
            "record_id": c.record_id,
            "kind": c.kind,
            "changed": changed(c),
            "occurred_at": _iso(c.occurred_at),
            "status": "parked" if c.parked_at is not None else "pending",
            "attempts": c.attempts,
            "error": c.error,
            "next_attempt_at": _iso(c.next_attempt_at),
            "parked_at": _iso(c.parked_at),
            "waiting_behind": entry.waiting_behind,
        }
    )


def list_changes(
    app: App, *, parked_only: bool = False, limit: int | None = None
) -> tuple[dict[str, int], list[ChangeView]]:
    """How many changes are pending and parked, and the oldest of them (`limit`; None: all)."""
    with app.sessions() as session:
        feed = ChangeRepository(session)
        found = feed.feed(parked_only=parked_only, limit=limit)
        return feed.counts(), [change_view(e) for e in found]


def retry_changes(app: App, change_ids: Sequence[int] | None) -> list[int]:
    """Put parked changes back in the feed (None: every parked change), all or none."""
    with app.sessions.begin() as session:
        try:
            return ChangeRepository(session).retry(change_ids)
        except ChangeNotParked as exc:
            raise UserError(str(exc)) from None
