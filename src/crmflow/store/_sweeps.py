"""Watermarks of the time sweep: per workflow, the instant up to which the changes that time
alone makes to its conditions have been handed to the dispatcher.

A sweep claims the window after the watermark (locking the row), selects the crossings in it,
appends them, and advances the watermark, all in one transaction: a crash rolls everything back
and the next sweep does the same window again; a commit never lets the window be done twice.
The watermark only moves forward, and `advance` checks it has not moved since the claim.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ._tables import TimeSweep
from ._workflows import WorkflowNotFound


class SweepConflict(Exception):
    """The watermark moved since the window was claimed: the caller's transaction must be rolled
    back (another sweep did, or is doing, this window)."""


@dataclass(frozen=True, slots=True)
class SweepWindow:
    """The instants (start, end] of one workflow's sweep."""

    workflow_key: str
    start: datetime  # exclusive: swept already
    end: datetime  # inclusive


class TimeSweepRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def swept_to(self, workflow_key: str) -> datetime | None:
        """The watermark, or None when the workflow was never started for sweeping."""
        row = self.session.get(TimeSweep, workflow_key)
        return None if row is None else row.swept_to

    def begin_at(self, workflow_key: str, at: datetime) -> datetime:
        """Sweep the workflow from `at` on (at its activation: what time did before is not its
        concern): moves the watermark to `at`, unless it is already later. Returns it."""
        row = self.session.get(TimeSweep, workflow_key, with_for_update=True)
        if row is None:
            try:
                with self.session.begin_nested():
                    row = TimeSweep(workflow_key=workflow_key, swept_to=at)
                    self.session.add(row)
                    self.session.flush()
                return at
            except IntegrityError as exc:  # created by another transaction meanwhile?
                row = self.session.get(
                    TimeSweep, workflow_key, with_for_update=True, populate_existing=True
                )
                if row is None:  # no: there is no such workflow
                    raise WorkflowNotFound(workflow_key) from exc
        if row.swept_to < at:
            row.swept_to = at
            self.session.flush()
        return row.swept_to

    def claim(
        self, workflow_key: str, *, until: datetime, max_span: timedelta | None = None
    ) -> SweepWindow | None:
        """The next window to sweep, up to `until` (at most `max_span` long, so a sweep that
        catches up after a long stop works in bounded steps), with the watermark locked until
        the transaction ends; None when there is nothing to sweep."""
        row = self.session.get(
            TimeSweep, workflow_key, with_for_update=True, populate_existing=True
        )
        if row is None or until <= row.swept_to:
            return None
        end = until if max_span is None else min(until, row.swept_to + max_span)
        return SweepWindow(workflow_key, row.swept_to, end)

    def advance(self, window: SweepWindow) -> None:
        """Move the watermark to the window's end, in the caller's transaction. Raises
        SweepConflict when it is no longer at the window's start."""
        result = self.session.execute(
            update(TimeSweep)
            .where(
                TimeSweep.workflow_key == window.workflow_key,
                TimeSweep.swept_to == window.start,
            )
            .values(swept_to=window.end)
        )
        if cast(CursorResult[Any], result).rowcount != 1:
            raise SweepConflict(
                f"the time sweep of '{window.workflow_key}' moved past {window.start.isoformat()}"
            )
