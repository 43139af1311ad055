"""Repository of scheduled runs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ._tables import ScheduledRun


class ScheduledRunRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def begin(
        self, *, key: str, version: int, temporal_workflow_id: str, trigger: str, now: datetime
    ) -> ScheduledRun:
        """The run of this Temporal workflow, created on first call (a retried activity finds
        it again)."""
        run = self.session.scalars(
            select(ScheduledRun).where(ScheduledRun.temporal_workflow_id == temporal_workflow_id)
        ).one_or_none()
        if run is None:
            run = ScheduledRun(
                workflow_key=key,
                version=version,
                temporal_workflow_id=temporal_workflow_id,
                trigger=trigger,
                status="running",
                started_at=now,
                matched=0,
                enrolled=0,
                skipped=0,
                failed=0,
            )
            self.session.add(run)
            self.session.flush()
        return run

    def get(self, run_id: int) -> ScheduledRun | None:
        return self.session.get(ScheduledRun, run_id)

    def for_workflow(self, key: str, *, limit: int = 20) -> list[ScheduledRun]:
        return list(
            self.session.scalars(
                select(ScheduledRun)
                .where(ScheduledRun.workflow_key == key)
                .order_by(ScheduledRun.started_at.desc(), ScheduledRun.id.desc())
                .limit(limit)
            )
        )
