"""The enrollment workflow: interprets one definition version for one record.

Deterministic by construction: time from `workflow.now()`, randomness from `workflow.random()`,
every read or write of the store in an activity. The definition travels in the input, so a later
publish never changes a running enrollment.

A run's history is bounded: when it grows long (Temporal suggests it, or HISTORY_LIMIT events),
the run continues as new, between two actions or in the middle of a wait (a delay, a
wait_for_event that keeps receiving events that do not match, a hold by the execution window,
a place in a rate limit's queue); the new run carries where it was (`Resume`) and picks the
wait up where it stopped. Runs started before this existed never continue as new (patch
CONTINUE_AS_NEW), so their histories replay unchanged; runs started with `generation` >= 1 in
their input may, without recording that patch (`_may_continue`).

Runs of generation >= 2 run the actions whose effect is one store transaction as local
activities (`ActionRun.local`); older runs keep an activity task per action, as they ran. That
choice is also a patch (STORE_ACTIONS_LOCAL), recorded once per run: a worker of an earlier
version that ran a generation-2 run's first workflow tasks (during a rolling upgrade; it knows
no generation 2) ran its store actions as activity tasks and recorded no patch, so an upgraded
worker replaying that history keeps activity tasks for the whole run instead of failing it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from crmflow.activities.custom import CustomActivities
    from crmflow.activities.enrollments import EnrollmentActivities
    from crmflow.activities.messages import MessageActivities
    from crmflow.activities.models import (
        GENERATION,
        ActionInput,
        ActionResult,
        DelayStart,
        EnrollmentInput,
        EnrollmentResult,
        EventSignal,
        FinishInput,
        GoalMetSignal,
        Resume,
        StepInput,
        TimingInput,
        TimingResult,
        UnenrollSignal,
        waiting_until,
    )
    from crmflow.activities.records import RecordActivities
    from crmflow.activities.webhooks import WebhookActivities
    from crmflow.activities.workflows import WorkflowActivities
    from crmflow.conditions import EventSnapshot, RecordSnapshot, evaluate
    from crmflow.definitions import (
        Action,
        DelayAction,
        EnrollmentStatus,
        EventFilter,
        SplitAction,
        SplitPath,
        WaitForEventAction,
        WebhookAction,
        format_duration,
    )

    from . import _policies, _time
    from . import search_attributes as sa
    from ._policies import BOOKKEEPING, OUTWARD, STORE_ACTION

END = "end"
# Runs that record this patch may continue as new; older ones never do.
CONTINUE_AS_NEW = "continue-as-new"
# Runs of generation >= 2 that record this patch run their store actions as local activities.
STORE_ACTIONS_LOCAL = "store-actions-local"


@dataclass(frozen=True)
class ActionRun:
    """How the interpreter runs one action type: its activity, that activity's timeouts and
    retries, whether it chooses the next action (a branch), and whether it runs as a local
    activity (runs of generation >= 2): an action whose effect is one store transaction and
    nothing outside it runs in the worker that runs the workflow task, without an activity
    task, its three events and the workflow task that would follow. Its retries stay bounded
    by its policy (between attempts a timer once the backoff passes a minute); the step row in
    its transaction keeps it exactly once like the others."""

    activity: Callable[[Any, ActionInput], Any]
    policy: Mapping[str, Any] = field(default_factory=lambda: STORE_ACTION)
    branching: bool = False
    local: bool = False


_update = ActionRun(RecordActivities.update_record, local=True)
_branch = ActionRun(EnrollmentActivities.evaluate_branch, branching=True, local=True)

# Every action type that runs in an activity, in one table the interpreter dispatches on.
ACTIONS: dict[str, ActionRun] = {
    "set_property": _update,
    "copy_property": _update,
    "clear_property": _update,
    "increment_property": _update,
    "add_to_list": _update,
    "remove_from_list": _update,
    "send_email": ActionRun(MessageActivities.send_email),
    "notify": ActionRun(MessageActivities.send_email),
    "create_task": ActionRun(MessageActivities.create_task, local=True),
    "branch": _branch,
    "value_branch": _branch,
    "create_record": ActionRun(RecordActivities.create_record, local=True),
    "webhook": ActionRun(WebhookActivities.call_webhook, OUTWARD),
    "enroll_in_workflow": ActionRun(WorkflowActivities.enroll_in_workflow),
    "unenroll_from_workflow": ActionRun(WorkflowActivities.unenroll_from_workflow),
    "custom": ActionRun(CustomActivities.run_custom_action, OUTWARD),
}

# Executed in the workflow itself (no activity).
_IN_WORKFLOW = {"delay", "split", "wait_for_event"}


def policy_of(action: Action) -> Mapping[str, Any]:
    """The options of the activity that runs `action` (deterministic: from the definition). A
    webhook attempt may take its own `timeout` plus a minute (DNS, rate limit)."""
    policy = ACTIONS[action.type].policy
    if isinstance(action, WebhookAction):
        return {**policy, "start_to_close_timeout": action.timeout + timedelta(minutes=1)}
    return policy


EXECUTABLE_ACTION_TYPES = frozenset(ACTIONS) | _IN_WORKFLOW


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
        # A delay the last action's transaction stored as started (generation >= 1): the next
        # action, taken up like a delay carried over by a continued run.
        self._then: Resume | None = None
        # The wait_for_event step in progress, and whether its event arrived.
        self._waiting_for: WaitForEventAction | None = None
        self._event: EventSignal | None = None
        # Whether this run may continue as new (patched), where an earlier run stopped, the
        # signals that came before `run` began (a continued run restores its wait first), and
        # whether a pause or resume signal came then.
        self._continuable = False
        self._resume: Resume | None = None
        self._started = False
        self._early_events: list[EventSignal] = []
        self._pause_signalled = False
        self._steps = 0  # actions run so far, over every run of the enrollment

    @workflow.signal
    def unenroll(self, signal: UnenrollSignal) -> None:
        if self._stop is None:
            self._stop = (EnrollmentStatus.UNENROLLED, signal.reason)

    @workflow.signal
    def goal_met(self, signal: GoalMetSignal) -> None:
        if self._stop is None:
            self._stop = (EnrollmentStatus.GOAL_MET, signal.detail or "goal met")

    @workflow.signal
    def event_tracked(self, signal: EventSignal) -> None:
        if not self._started:
            self._early_events.append(signal)
            return
        self._offer(signal)

    def _offer(self, signal: EventSignal) -> None:
        # Only events that arrive while the wait is in progress count (README: time and flow).
        wait = self._waiting_for
        if wait is None or self._event is not None or signal.name != wait.event:
            return
        snapshot = RecordSnapshot(
            object_type="event",
            id="event",
            events=[
                EventSnapshot(
                    name=signal.name, occurred_at=signal.occurred_at, properties=signal.properties
                )
            ],
        )
        if evaluate(EventFilter(event=wait.event, where=wait.where), snapshot, now=workflow.now()):
            self._event = signal

    @workflow.signal
    def pause(self) -> None:
        self._paused = True
        self._pause_signalled = True

    @workflow.signal
    def resume(self) -> None:
        self._paused = False
        self._pause_signalled = True

    @workflow.query
    def current_action(self) -> str | None:
        return self._current

    @workflow.run
    async def run(self, input: EnrollmentInput) -> EnrollmentResult:
        self._started = True
        self._continuable = self._may_continue(input)
        definition = input.definition
        actions = {action.id: action for action in definition.actions}
        current = definition.actions[0].id
        if (resume := input.resume) is not None:
            self._resume, current, self._steps = resume, resume.action_id, resume.steps
            self._pending = list(resume.pending)
            if not self._pause_signalled:  # a signal in this run is newer than the carried state
                self._paused = resume.paused
        while current != END:
            resuming = self._resume  # the first action of a continued run
            if resuming is None and self._stop is None and self._must_continue():
                self._continue(input, Resume(action_id=current))
            # A run that continued in the middle of an action's wait goes back into that wait
            # (which heeds a stop itself), as the earlier run would have: no hold before it.
            if (resuming is None or resuming.wait is None) and await self._hold():
                break
            action = actions[current]
            self._current = action.id
            chosen = await self._run_action(input, action)
            # A delay that started with this action is in progress: no hold before it (a pause
            # does not hold a delay that counts down; a stop ends it, inside).
            self._resume, self._then = self._then, None
            self._steps += 1
            if self._finished:
                break
            current = chosen or definition.next_of(action.id)
        self._current = None
        status, reason = (
            (EnrollmentStatus.COMPLETED, None)
            if self._finished
            else (self._stop or (EnrollmentStatus.COMPLETED, None))
        )
        if not self._finished:
            await workflow.execute_local_activity_method(
                EnrollmentActivities.finish_enrollment,
                self._finish(input, status, reason),
                summary=f"{status}" + (f": {reason}" if reason else ""),
                **BOOKKEEPING,
            )
        workflow.upsert_search_attributes([sa.STATUS.value_set(status)])
        return EnrollmentResult(status=status, reason=reason, steps=self._steps)

    @staticmethod
    def _may_continue(input: EnrollmentInput) -> bool:
        """May this run continue as new? Runs whose input says generation >= 1 may, and record
        nothing for it; older inputs (0) decide by the CONTINUE_AS_NEW patch: recorded when
        the run starts under this code, absent from runs started before continue-as-new
        existed. A history being replayed is always asked for the patch, so that a marker
        recorded by an older worker (one that ignored `generation`, during a rolling upgrade)
        is matched rather than found unexpected; asking does not record one in a replay."""
        if input.generation >= 1 and not workflow.unsafe.is_replaying():
            return True
        return workflow.patched(CONTINUE_AS_NEW) or input.generation >= 1

    def _must_continue(self) -> bool:
        """Has the history grown long enough to go on in a new run? (Never in a run started
        before continue-as-new existed: its replay must issue the same commands.)"""
        if not self._continuable:
            return False
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= _policies.HISTORY_LIMIT
        )

    def _continue(self, input: EnrollmentInput, resume: Resume) -> None:
        """Go on in a new run of the same workflow id, from `resume`."""
        carried = resume.model_copy(
            update={
                "steps": self._steps,
                "paused": self._paused,
                "pending": resume.pending if resume.wait == "queue" else list(self._pending),
            }
        )
        # The new run is made by this code from its start: it carries this code's generation.
        update = {"resume": carried, "generation": max(input.generation, GENERATION)}
        workflow.continue_as_new(input.model_copy(update=update))

    def _resumed(self, action: Action, wait: str) -> Resume | None:
        """The carried state of `action`'s wait, when this run continues it."""
        resume = self._resume
        if resume is not None and resume.action_id == action.id and resume.wait == wait:
            return resume
        return None

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
        if isinstance(action, WaitForEventAction):
            return await self._wait_for_event(input, action)
        held: str | bool | None = None
        queued = self._resumed(action, "queue")
        if queued is not None:
            if self._stop is not None:
                return END  # stopped as the run continued, before its next turn
            held = queued.held  # it was in a rate limit's queue, past the window already
        elif not ACTIONS[action.type].branching:
            held = await self._window(input, action)
            if held is False:
                return END  # stopped during the wait: the loop ends the enrollment
        # The last action of a path (statically known unless it branches) also stores the final
        # status, in the same transaction as its effect.
        last = not ACTIONS[action.type].branching and input.definition.next_of(action.id) == END
        pending = list(self._pending)
        then = self._delay_after(input, action)
        request = ActionInput(
            context=input.context,
            action=action,
            at=workflow.now(),
            steps=pending,
            finish=self._finish(input, EnrollmentStatus.COMPLETED, None) if last else None,
            then=then,
            held=held or None,
        )
        try:
            while True:
                result: ActionResult = await self._execute(input, action, request)
                if result.retry_in is None:
                    break
                # Queued behind a rate limit: wait for the turn here, not in retries.
                with suppress(TimeoutError):
                    await workflow.wait_condition(
                        lambda: self._stop is not None or self._must_continue(),
                        timeout=timedelta(seconds=result.retry_in),
                        timeout_summary=f"{action.id}: {result.outcome}",
                    )
                if self._stop is not None:
                    self._pending = pending
                    return END
                if self._must_continue():  # a long queue: its turns go on in a new run
                    why = held if isinstance(held, str) else None
                    resume = Resume(action_id=action.id, wait="queue", held=why)
                    self._continue(input, resume.model_copy(update={"pending": pending}))
        except (ActivityError, ApplicationError) as exc:
            # A local activity whose attempts ran out raises its last failure itself (an
            # ApplicationError), not wrapped in an ActivityError as an activity task's is.
            self._pending = pending
            # Retries exhausted: the failure is recorded on the step and the enrollment goes on.
            cause = str(exc.cause or exc)
            await self._record(input, action, workflow.now(), f"failed after retries: {cause}")
            return getattr(action, "otherwise", None)
        self._pending = []
        self._finished = last
        if then is not None and result.then_started is not None:
            started = result.then_started
            wake = then.wake(started)
            self._then = Resume(
                action_id=then.action_id,
                wait="delay",
                started=started,
                wake=wake,
                shown=wake.isoformat(),
            )
        return result.next

    @staticmethod
    async def _execute(input: EnrollmentInput, action: Action, request: ActionInput) -> Any:
        """Run `action`'s activity: as a local activity where the action allows it, the run's
        generation says so (>= 2) and the run records (or, replayed, recorded) the
        STORE_ACTIONS_LOCAL patch (absent when an earlier version ran the run)."""
        run = ACTIONS[action.type]
        local = run.local and input.generation >= 2 and workflow.patched(STORE_ACTIONS_LOCAL)
        execute = (
            workflow.execute_local_activity_method if local else workflow.execute_activity_method
        )
        return await execute(run.activity, request, summary=action.summary(), **policy_of(action))

    @staticmethod
    def _delay_after(input: EnrollmentInput, action: Action) -> DelayStart | None:
        """The duration delay that directly follows `action`, if any, to be stored as started
        by `action`'s transaction (runs of generation >= 1): a delay's start is shown at once
        without a store write of its own. Other delays need the zone or the record first."""
        if input.generation < 1 or ACTIONS[action.type].branching:
            return None
        following = input.definition.next_of(action.id)
        if following == END:
            return None
        delay = input.definition.action_map()[following]
        if not isinstance(delay, DelayAction) or delay.kind != "duration":
            return None
        assert delay.duration is not None
        return DelayStart(action_id=delay.id, duration=delay.duration)

    async def _timing(
        self, input: EnrollmentInput, *, date_property: str | None = None
    ) -> tuple[ZoneInfo, TimingResult | None]:
        """The zone to place an action or delay in (the record's own with `timezone_property`,
        else the workflow's) and, for until_property, the property's value. Reads the store
        only when the definition needs the record: no command otherwise."""
        settings = input.definition.settings
        if settings.timezone_property is None and date_property is None:
            return ZoneInfo(settings.timezone), None
        timing: TimingResult = await workflow.execute_local_activity_method(
            EnrollmentActivities.read_timing,
            TimingInput(
                context=input.context,
                timezone_property=settings.timezone_property,
                date_property=date_property,
            ),
            summary="read "
            + ", ".join(n for n in (settings.timezone_property, date_property) if n),
            **BOOKKEEPING,
        )
        return _time.zone_of(timing.timezone, settings.timezone), timing

    async def _window(self, input: EnrollmentInput, action: Action) -> str | bool | None:
        """Hold an action that came due outside the execution window or on a pause date until
        the next allowed moment. Returns why it was held (None: it was not; False: the
        enrollment was stopped meanwhile). No command without a window or pause dates."""
        settings = input.definition.settings
        if settings.execution_window is None and not settings.pause_dates:
            return None
        due = workflow.now()
        held: str | None = None
        if (resumed := self._resumed(action, "window")) is not None and resumed.due is not None:
            due, held = resumed.due, resumed.held
        while True:
            if await self._hold():
                return False
            zone, _ = await self._timing(input)
            now = workflow.now()
            allowed = _time.next_allowed(
                now, zone=zone, window=settings.execution_window, pause_dates=settings.pause_dates
            )
            if allowed <= now:
                return held
            paused = now.astimezone(zone).date() in settings.pause_dates
            why = "a pause date" if paused else "the execution window"
            held = f"came due {_time.show(due, zone)}, held by {why}"
            with suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: self._stop is not None or self._paused or self._must_continue(),
                    timeout=allowed - now,
                    timeout_summary=f"execution window: until {_time.show(allowed, zone)}",
                )
            if self._stop is None and not self._paused and self._must_continue():
                self._continue(
                    input, Resume(action_id=action.id, wait="window", due=due, held=held)
                )

    async def _delay(self, input: EnrollmentInput, action: DelayAction) -> str | None:
        resumed = self._resumed(action, "delay")
        if resumed is not None and resumed.started and resumed.wake and resumed.shown:
            # A delay started earlier, by an earlier run or with the action before it: its
            # start is stored; wait for the rest of it.
            started, wake, shown = resumed.started, resumed.wake, resumed.shown
            timeout = max(wake - workflow.now(), timedelta(0))
        else:
            started = workflow.now()
            settings = input.definition.settings
            needs_record = action.kind in ("until_property", "until_weekday", "until_time") or (
                action.kind == "until_date"
                and action.until_date is not None
                and action.until_date.tzinfo is None
            )
            if needs_record:
                zone, timing = await self._timing(input, date_property=action.until_property)
            else:
                zone, timing = ZoneInfo(settings.timezone), None
            computed = _time.wake_time(
                action, started, zone, property_value=timing.date_value if timing else None
            )
            if computed.at is None:
                outcome = f"{computed.problem}: continued at once"
                await self._record(input, action, started, outcome)
                return None
            wake = computed.at
            # Stored at once, so `enrollments` shows what the enrollment waits for.
            shown = _time.show(wake, zone) if action.kind != "duration" else wake.isoformat()
            waiting = waiting_until(shown) if wake > started else None
            await self._record(input, action, started, waiting, finished=False)
            timeout = wake - started
        if wake > started and timeout > timedelta(0):
            # The timer ends the wait unless an unenrollment or the goal ends it first.
            try:
                await workflow.wait_condition(
                    lambda: self._stop is not None or self._must_continue(),
                    timeout=timeout,
                    timeout_summary=action.summary(),
                )
            except TimeoutError:
                pass
            else:
                if self._stop is None:  # woken by a long history, not by a stop
                    self._continue(
                        input,
                        Resume(
                            action_id=action.id,
                            wait="delay",
                            started=started,
                            wake=wake,
                            shown=shown,
                        ),
                    )
        if self._stop is not None:
            outcome = f"interrupted: {self._stop[0]}"
        elif wake <= started:
            outcome = f"date {shown} already past: continued at once"
        else:
            outcome = f"waited until {shown}"
        self._pending.append(self._step(input, action, started, outcome))
        return None

    async def _wait_for_event(
        self, input: EnrollmentInput, action: WaitForEventAction
    ) -> str | None:
        resumed = self._resumed(action, "event")
        timeout = action.timeout
        if resumed is not None and resumed.started is not None:
            # A wait an earlier run started: its start is stored; the events that came while
            # this run was starting count.
            started = resumed.started
            self._waiting_for, self._event = action, None
            for early in self._early_events:
                self._offer(early)
            if timeout is not None:
                timeout = max(started + timeout - workflow.now(), timedelta(0))
        else:
            started = workflow.now()
            self._waiting_for, self._event = action, None
            zone = ZoneInfo(input.definition.settings.timezone)
            until = f" until {_time.show(started + timeout, zone)}" if timeout else ""
            await self._record(
                input, action, started, f"waiting for {action.event}{until}", finished=False
            )
        if resumed is None or timeout is None or timeout > timedelta(0):
            try:
                await workflow.wait_condition(
                    lambda: (
                        self._stop is not None or self._event is not None or self._must_continue()
                    ),
                    timeout=timeout,
                    timeout_summary=action.summary(),
                )
            except TimeoutError:
                pass
            else:
                if self._stop is None and self._event is None:  # woken by a long history
                    self._continue(
                        input, Resume(action_id=action.id, wait="event", started=started)
                    )
        event, self._waiting_for, self._event = self._event, None, None
        if self._stop is not None:
            outcome, chosen = f"interrupted: {self._stop[0]}", None
        elif event is not None:
            outcome, chosen = f"event {event.name} received", None
        else:
            assert action.timeout is not None
            target = action.on_timeout or input.definition.next_of(action.id)
            outcome = f"no {action.event} within {format_duration(action.timeout)}: -> {target}"
            chosen = action.on_timeout
        self._pending.append(self._step(input, action, started, outcome))
        return chosen

    async def _split(self, input: EnrollmentInput, action: SplitAction) -> str:
        # workflow.random() is seeded per run: a replay takes the same path.
        chosen = choose_path(action.paths, workflow.random().random())
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


def choose_path(paths: Sequence[SplitPath], draw: float) -> SplitPath:
    """The path a uniform draw in [0, 1) falls on, the percents laid end to end."""
    point, total = draw * 100, 0.0
    for path in paths:
        total += path.percent
        if point < total:
            return path
    return paths[-1]
