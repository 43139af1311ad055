"""The enrollment workflow: interprets one definition version for one record.

Deterministic by construction: time from `workflow.now()`, randomness from `workflow.random()`,
every read or write of the store in an activity. The definition travels in the input, so a later
publish never changes a running enrollment.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from crmflow.activities.custom import CustomActivities
    from crmflow.activities.enrollments import EnrollmentActivities
    from crmflow.activities.messages import MessageActivities
    from crmflow.activities.models import (
        ActionInput,
        ActionResult,
        EnrollmentInput,
        EnrollmentResult,
        EnrollmentStatus,
        FinishInput,
        GoalMetSignal,
        StepInput,
        UnenrollSignal,
    )
    from crmflow.activities.records import RecordActivities
    from crmflow.activities.webhooks import WebhookActivities
    from crmflow.activities.workflows import WorkflowActivities
    from crmflow.definitions import Action, DelayAction, SplitAction

    from . import _search_attributes as sa
    from ._policies import BOOKKEEPING, policy_of

END = "end"

# Which activity runs which action type: the interpreter dispatches on this table.
_ACTIVITY_OF: dict[str, Callable[[Any, ActionInput], Any]] = {
    "set_property": RecordActivities.update_record,
    "copy_property": RecordActivities.update_record,
    "clear_property": RecordActivities.update_record,
    "increment_property": RecordActivities.update_record,
    "add_to_list": RecordActivities.update_record,
    "remove_from_list": RecordActivities.update_record,
    "send_email": MessageActivities.send_email,
    "notify": MessageActivities.send_email,
    "create_task": MessageActivities.create_task,
    "branch": EnrollmentActivities.evaluate_branch,
    "value_branch": EnrollmentActivities.evaluate_branch,
    "create_record": RecordActivities.create_record,
    "webhook": WebhookActivities.call_webhook,
    "enroll_in_workflow": WorkflowActivities.enroll_in_workflow,
    "unenroll_from_workflow": WorkflowActivities.unenroll_from_workflow,
    "custom": CustomActivities.run_custom_action,
}

_BRANCHING = {"branch", "value_branch"}

# Executed in the workflow itself (no activity).
_IN_WORKFLOW = {"delay", "split"}

EXECUTABLE_ACTION_TYPES = frozenset(_ACTIVITY_OF) | _IN_WORKFLOW


@workflow.defn(name="Enrollment")
class EnrollmentWorkflow:
    def __init__(self) -> None:
        self._stop: tuple[EnrollmentStatus, str | None] | None = None
        self._paused = False
        self._current: str | None = None
        # Steps without an effect of their own (the end of a delay), stored with the next
        # store write instead of in a round trip of their own.
        self._pending: list[StepInput] = []
        self._finished = False

    @workflow.signal
    def unenroll(self, signal: UnenrollSignal) -> None:
        if self._stop is None:
            self._stop = ("unenrolled", signal.reason)

    @workflow.signal
    def goal_met(self, signal: GoalMetSignal) -> None:
        if self._stop is None:
            self._stop = ("goal_met", signal.detail or "goal met")

    @workflow.signal
    def pause(self) -> None:
        self._paused = True

    @workflow.signal
    def resume(self) -> None:
        self._paused = False

    @workflow.query
    def current_action(self) -> str | None:
        return self._current

    @workflow.run
    async def run(self, input: EnrollmentInput) -> EnrollmentResult:
        definition = input.definition
        actions = {action.id: action for action in definition.actions}
        current = definition.actions[0].id
        steps = 0
        while current != END:
            if await self._hold():
                break
            action = actions[current]
            self._current = action.id
            chosen = await self._run_action(input, action)
            steps += 1
            if self._finished:
                break
            current = chosen or definition.next_of(action.id)
        self._current = None
        status, reason = (
            ("completed", None) if self._finished else (self._stop or ("completed", None))
        )
        if not self._finished:
            await workflow.execute_local_activity_method(
                EnrollmentActivities.finish_enrollment,
                self._finish(input, status, reason),
                summary=f"{status}" + (f": {reason}" if reason else ""),
                **BOOKKEEPING,
            )
        workflow.upsert_search_attributes([sa.STATUS.value_set(status)])
        return EnrollmentResult(status=status, reason=reason, steps=steps)

    def _finish(
        self, input: EnrollmentInput, status: EnrollmentStatus, reason: str | None
    ) -> FinishInput:
        steps, self._pending = self._pending, []
        return FinishInput(
            context=input.context, status=status, reason=reason, at=workflow.now(), steps=steps
        )

    async def _hold(self) -> bool:
        """Before each action: stop if asked, wait while the workflow is deactivated."""
        if self._stop is None and self._paused:
            await self._flush()
            workflow.upsert_search_attributes([sa.STATUS.value_set("paused")])
            await workflow.wait_condition(lambda: not self._paused or self._stop is not None)
            if self._stop is None:
                workflow.upsert_search_attributes([sa.STATUS.value_set("running")])
        return self._stop is not None

    async def _run_action(self, input: EnrollmentInput, action: Action) -> str | None:
        """Run one action; returns the chosen target for branching actions, else None."""
        if isinstance(action, DelayAction):
            return await self._delay(input, action)
        if isinstance(action, SplitAction):
            return await self._split(input, action)
        # The last action of a path (statically known unless it branches) also stores the final
        # status, in the same transaction as its effect.
        last = action.type not in _BRANCHING and input.definition.next_of(action.id) == END
        pending = list(self._pending)
        try:
            result: ActionResult = await workflow.execute_activity_method(
                _ACTIVITY_OF[action.type],
                ActionInput(
                    context=input.context,
                    action=action,
                    at=workflow.now(),
                    steps=pending,
                    finish=self._finish(input, "completed", None) if last else None,
                ),
                summary=action.summary(),
                **policy_of(action),
            )
        except ActivityError as exc:
            self._pending = pending
            # Retries exhausted: the failure is recorded on the step and the enrollment goes on.
            cause = str(exc.cause or exc)
            await self._record(input, action, workflow.now(), f"failed after retries: {cause}")
            return getattr(action, "otherwise", None)
        self._pending = []
        self._finished = last
        return result.next

    async def _delay(self, input: EnrollmentInput, action: DelayAction) -> str | None:
        started = workflow.now()
        wake = _wake_time(action, started, input.definition.settings.timezone)
        # Stored at once, so `enrollments` shows what the enrollment waits for.
        waiting = f"waiting until {wake.isoformat()}" if wake > started else None
        await self._record(input, action, started, waiting, finished=False)
        if wake > started:
            # The timer ends the wait unless an unenrollment or the goal ends it first.
            with suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: self._stop is not None,
                    timeout=wake - started,
                    timeout_summary=action.summary(),
                )
        if self._stop is not None:
            outcome = f"interrupted: {self._stop[0]}"
        elif wake <= started:
            outcome = f"date {wake.isoformat()} already past: continued at once"
        else:
            outcome = f"waited until {wake.isoformat()}"
        self._pending.append(self._step(input, action, started, outcome))
        return None

    async def _split(self, input: EnrollmentInput, action: SplitAction) -> str:
        # workflow.random() is seeded per run: a replay takes the same path.
        draw = workflow.random().random() * 100
        total = 0.0
        chosen = action.paths[-1]
        for path in action.paths:
            total += path.percent
            if draw < total:
                chosen = path
                break
        index = action.paths.index(chosen) + 1
        await self._record(
            input, action, workflow.now(), f"path {index} ({chosen.percent}%) -> {chosen.next}"
        )
        return chosen.next

    def _step(
        self,
        input: EnrollmentInput,
        action: Action,
        started: datetime,
        outcome: str | None,
        *,
        finished: bool = True,
    ) -> StepInput:
        return StepInput(
            context=input.context,
            action_id=action.id,
            type=action.type,
            started_at=started,
            finished_at=workflow.now() if finished else None,
            outcome=outcome,
        )

    async def _record(
        self,
        input: EnrollmentInput,
        action: Action,
        started: datetime,
        outcome: str | None,
        *,
        finished: bool = True,
    ) -> None:
        """Store a step now (a delay's start must be visible at once)."""
        self._pending.append(self._step(input, action, started, outcome, finished=finished))
        await self._flush()

    async def _flush(self) -> None:
        for step in self._pending:
            await workflow.execute_local_activity_method(
                EnrollmentActivities.record_step,
                step,
                summary=f"step {step.action_id}: {step.outcome or 'started'}",
                **BOOKKEEPING,
            )
        self._pending = []


def _wake_time(action: DelayAction, now: datetime, timezone: str) -> datetime:
    if action.duration is not None:
        return now + action.duration
    if action.until_date is not None:
        # A date without an offset is in the workflow's time zone.
        if action.until_date.tzinfo is None:
            return action.until_date.replace(tzinfo=ZoneInfo(timezone))
        return action.until_date
    raise ValueError(f"delay '{action.id}': a {action.kind} delay is not executable yet")
