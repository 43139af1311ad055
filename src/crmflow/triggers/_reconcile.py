"""Reconciliation: enrollments the store shows running (or paused) whose Temporal run is gone.

An enrollment records its own end, from workflow code. A run that ends without running that
code (terminated by an operator, timed out, failed, cancelled, or deleted) leaves its row
`running` forever, and its search attribute `CrmflowStatus` too. The dispatcher's lease holder
looks for such rows now and then (Dispatcher.run) in two ways:

- closed runs: a visibility query for runs closed in one of those ways whose `CrmflowStatus`
  still says running or paused (found within a minute; needs visibility, which the
  time-skipping test server lacks: then only the sweep runs);
- a sweep over the running rows, a page at a time, asking Temporal for each row's run: a run
  that no longer exists (deleted) or closed that way is found however it happened.

Each finding is confirmed on the workflow id's latest run before the row is marked `failed`,
with the reason, so a run that continued as new, or a newer run of the id, is never mistaken
for a gone one.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHistoryEventFilterType,
)
from temporalio.service import RPCError, RPCStatusCode

from crmflow.definitions import ACTIVE_STATUSES
from crmflow.store import Enrollment, EnrollmentRepository

log = logging.getLogger(__name__)

GONE = {
    WorkflowExecutionStatus.TERMINATED: "was terminated outside crmflow",
    WorkflowExecutionStatus.TIMED_OUT: "timed out",
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.CANCELED: "was cancelled",
}
CLOSED_QUERY = (
    'CrmflowStatus IN ("running", "paused") AND '
    'ExecutionStatus IN ("Terminated", "TimedOut", "Failed", "Canceled")'
)
# Runs closed this long before the previous query are looked at again (visibility lags, and
# the worker's clock may differ from the server's).
OVERLAP = timedelta(minutes=10)
SWEEP_PAGE = 50
# A row younger than this may belong to a run not started yet (a fan-out in progress).
SWEEP_GRACE = timedelta(minutes=10)


class Reconciler:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        client: Client,
        *,
        sweep_page: int = SWEEP_PAGE,
        sweep_grace: timedelta = SWEEP_GRACE,
    ) -> None:
        self.sessions = sessions
        self.client = client
        self.sweep_page = sweep_page
        self.sweep_grace = sweep_grace
        self.visibility = True  # False once the server said it has none
        self._closed_since: datetime | None = None
        self._sweep_after = 0

    async def run_once(self) -> int:
        """One round: the closed-runs query, then one page of the sweep. Returns how many
        rows were marked."""
        return await self.closed_runs() + await self.sweep()

    async def closed_runs(self) -> int:
        """Rows whose run visibility shows closed without crmflow knowing."""
        if not self.visibility:
            return 0
        began = datetime.now(UTC)
        query = CLOSED_QUERY
        if self._closed_since is not None:
            query += f' AND CloseTime >= "{self._closed_since.isoformat()}"'
        workflow_ids: list[str] = []
        try:
            async for execution in self.client.list_workflows(query):
                workflow_ids.append(execution.id)
        except RPCError as exc:
            if exc.status != RPCStatusCode.UNIMPLEMENTED:
                raise
            log.info("Temporal has no visibility here: gone runs are found by the sweep only")
            self.visibility = False
            return 0
        self._closed_since = began - OVERLAP
        rows = await asyncio.to_thread(self._active, list(dict.fromkeys(workflow_ids)))
        return sum([await self._settle(row) for row in rows])

    async def sweep(self) -> int:
        """One page of the running rows, each checked against its run."""
        rows = await asyncio.to_thread(self._page)
        if not rows:
            self._sweep_after = 0  # the next round starts over
            return 0
        self._sweep_after = rows[-1].id
        return sum([await self._settle(row) for row in rows])

    def _active(self, workflow_ids: list[str]) -> list[Enrollment]:
        with self.sessions() as session:
            found = EnrollmentRepository(session).by_workflow_ids(workflow_ids)
        return [e for e in found.values() if e.status in ACTIVE_STATUSES]

    def _page(self) -> list[Enrollment]:
        with self.sessions() as session:
            return EnrollmentRepository(session).active_page(
                after=self._sweep_after,
                limit=self.sweep_page,
                enrolled_before=datetime.now(UTC) - self.sweep_grace,
            )

    async def _settle(self, row: Enrollment) -> int:
        """Mark the row failed if its workflow id's latest run is gone. Returns 1 if marked."""
        handle = self.client.get_workflow_handle(row.temporal_workflow_id)
        try:
            described: WorkflowExecutionDescription | None = await handle.describe()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            described = None
        if described is None:
            reason, ended = "its Temporal run does not exist (deleted, or never started)", None
        elif described.status in GONE:
            reason = f"its Temporal run {GONE[described.status]}"
            if described.status == WorkflowExecutionStatus.TERMINATED:
                reason += await self._termination_reason(row.temporal_workflow_id)
            ended = described.close_time
        else:
            return 0  # running, continued as new, or completed (it recorded its end itself)
        marked = await asyncio.to_thread(self._mark, row.id, reason, ended)
        if marked:
            log.warning("enrollment %s marked failed: %s", row.temporal_workflow_id, reason)
        return int(marked)

    async def _termination_reason(self, workflow_id: str) -> str:
        handle = self.client.get_workflow_handle(workflow_id)
        async for event in handle.fetch_history_events(
            event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT
        ):
            reason = event.workflow_execution_terminated_event_attributes.reason
            return f": {reason}" if reason else ""
        return ""

    def _mark(self, enrollment_id: int, reason: str, ended: datetime | None) -> bool:
        with self.sessions.begin() as session:
            return EnrollmentRepository(session).set_status(
                enrollment_id,
                "failed",
                reason=reason,
                ended_at=ended or datetime.now(UTC),
                only_from=ACTIVE_STATUSES,
            )
