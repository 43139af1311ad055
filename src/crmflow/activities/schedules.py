"""The activity of a scheduled run: select the matching records in SQL, page by page, and start
their enrollments with bounded concurrency."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity

from crmflow.store import (
    BrokenVersion,
    ScheduledRunRepository,
    WorkflowRepository,
    select_matching,
)

from .models import ScheduledRunInput, ScheduledRunResult
from .ports import Enroller, Outcome


class SchedulingActivities:
    def __init__(self, sessions: sessionmaker[Session], starter: Enroller) -> None:
        self.sessions = sessions
        self.starter = starter

    @activity.defn(name="run_schedule")
    async def run_schedule(self, input: ScheduledRunInput) -> ScheduledRunResult:
        info = activity.info()
        key, now = input.workflow_key, datetime.now(UTC)
        with self.sessions.begin() as session:
            workflows = WorkflowRepository(session)
            workflow = workflows.get(key)
            if workflow is None or not workflow.active:
                return ScheduledRunResult(workflow_key=key, note="workflow not active: no run")
            version = workflow.latest_version
            try:
                definition = workflows.definition(key, version)
            except BrokenVersion as exc:
                return ScheduledRunResult(workflow_key=key, version=version, note=str(exc))
            run = ScheduledRunRepository(session).begin(
                key=key,
                version=version,
                temporal_workflow_id=info.workflow_id or info.activity_id,
                trigger=input.trigger,
                now=now,
            )
            run_id = run.id
            dialect_name = session.get_bind().dialect.name
        criteria = definition.enrollment.criteria
        if criteria is None:
            return ScheduledRunResult(workflow_key=key, version=version, note="no criteria")
        # A retried attempt resumes after the last page the previous one finished.
        after: str | None = None
        counts = {"matched": 0, "enrolled": 0, "skipped": 0, "failed": 0}
        if info.heartbeat_details:
            after, counts = info.heartbeat_details[0], dict(info.heartbeat_details[1])
        selection = select_matching(
            criteria, object_type=definition.object_type, now=now, dialect_name=dialect_name
        )

        def record(record_id: str, outcome: Outcome) -> None:
            counts["matched"] += 1
            if isinstance(outcome, Exception):
                counts["failed"] += 1
                activity.logger.warning("enrolling %s failed: %s", record_id, outcome)
            elif outcome.ok:
                counts["enrolled"] += 1
            else:
                counts["skipped"] += 1  # enrolled from an earlier run and still going, or refused

        def page_done(last_id: str) -> None:
            activity.heartbeat(last_id, counts)
            self._save(run_id, counts, status="running")

        await self.starter.enroll_selected(
            definition,
            version,
            selection,
            source="schedule",
            on_outcome=record,
            after=after,
            on_page=page_done,
        )
        self._save(run_id, counts, status="completed", finished=datetime.now(UTC))
        return ScheduledRunResult(workflow_key=key, version=version, **counts)

    def _save(
        self, run_id: int, counts: dict[str, Any], *, status: str, finished: datetime | None = None
    ) -> None:
        with self.sessions.begin() as session:
            run = ScheduledRunRepository(session).get(run_id)
            if run is not None:
                run.matched, run.enrolled = counts["matched"], counts["enrolled"]
                run.skipped, run.failed = counts["skipped"], counts["failed"]
                run.status = status
                run.finished_at = finished
