"""Exactly-once execution of an action against the store.

The effect and the step row of (enrollment, action) commit in one transaction, and the step row
is unique and claimed (written, locked) before the effect: a retried activity (worker died after
the commit, before Temporal heard back) finds the step and returns its stored result instead of
acting twice, and so does an attempt running at the same time as another.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from crmflow.store import EnrollmentRepository, EnrollmentStep, StepWrite

from .models import (
    ActionInput,
    ActionResult,
    DelayStart,
    FinishInput,
    StepInput,
    waiting_until,
)

# Called by outward activities at "before_effect" and "after_effect" (between the effect and the
# step row): tests make the worker die there.
Checkpoint = Callable[[str, ActionInput], None]


def idempotency_key(workflow_id: str, action_id: str) -> str:
    """Stable across every attempt of one action of one enrollment (one Temporal workflow id)."""
    digest = hashlib.sha256(f"{workflow_id}\x00{action_id}".encode()).hexdigest()
    return f"crmflow-{digest[:40]}"


def no_checkpoint(point: str, input: ActionInput) -> None:
    return None


def result_of(step: EnrollmentStep, input: ActionInput) -> ActionResult:
    """The result an attempt stored as `step` (finished) for `input`: the same input, so the
    same `then` delay, stored as started at the step's finish unless the action chose a next."""
    next_ = step.detail.get("next")
    return ActionResult(
        outcome=step.outcome or "",
        failed=bool(step.detail.get("failed")),
        next=next_,
        detail={k: v for k, v in step.detail.items() if k not in ("failed", "next")},
        then_started=step.finished_at if input.then is not None and next_ is None else None,
    )


def stored_result(sessions: sessionmaker[Session], input: ActionInput) -> ActionResult | None:
    """The result an earlier attempt stored for this action of this enrollment, if any."""
    with sessions() as session:
        step = EnrollmentRepository(session).step(input.context.enrollment_id, input.action.id)
        return result_of(step, input) if step is not None and step.finished_at else None


async def run_outward(
    sessions: sessionmaker[Session],
    input: ActionInput,
    act: Callable[[], Awaitable[ActionResult]],
) -> ActionResult:
    """An action whose effect cannot join the store's transaction (an HTTP call, a Temporal
    signal): a finished step from an earlier attempt is returned without acting again;
    otherwise `act` runs and its result is stored as the step, unless it asks to be called again
    later (`retry_in`: nothing happened, nothing is stored)."""
    done = await asyncio.to_thread(stored_result, sessions, input)
    if done is not None:
        return done
    result = await act()
    if result.retry_in is not None:
        return result
    return await asyncio.to_thread(run_once, sessions, input, lambda session: result)


def finished_at(due: datetime) -> datetime:
    """Wall-clock completion time, never before the (maybe simulated) time the action came due."""
    return max(datetime.now(UTC), due)


def write_steps(session: Session, steps: list[StepInput]) -> None:
    enrollments = EnrollmentRepository(session)
    for step in steps:
        enrollments.write_step(
            step.context.enrollment_id,
            StepWrite(
                action_id=step.action_id,
                type=step.type,
                started_at=step.started_at,
                finished_at=step.finished_at,
                outcome=step.outcome,
                detail={},
            ),
        )


def write_delay_start(
    session: Session, enrollment_id: int, delay: DelayStart, started: datetime
) -> None:
    """The step of a duration delay starting at `started`, in progress (the interpreter's
    `_delay` shows its end the same way: the ISO instant, in UTC)."""
    wake = delay.wake(started)
    EnrollmentRepository(session).write_step(
        enrollment_id,
        StepWrite(
            action_id=delay.action_id,
            type="delay",
            started_at=started,
            finished_at=None,
            outcome=waiting_until(wake.isoformat()),
            detail={},
        ),
    )


def write_finish(session: Session, finish: FinishInput) -> None:
    write_steps(session, finish.steps)
    EnrollmentRepository(session).set_status(
        finish.context.enrollment_id, finish.status, reason=finish.reason, ended_at=finish.at
    )


def run_once(
    sessions: sessionmaker[Session],
    input: ActionInput,
    effect: Callable[[Session], ActionResult],
) -> ActionResult:
    ctx, action = input.context, input.action
    for _ in range(2):
        try:
            with sessions.begin() as session:
                enrollments = EnrollmentRepository(session)
                # Claim the step before acting: a concurrent attempt of the same action (the
                # first one stalled past its timeout while Temporal started another) waits on
                # this row's lock or its unique key, then finds it finished and returns its
                # result. Checking for the step only at the end would let both act (an
                # increment added twice, on PostgreSQL).
                done = enrollments.step(ctx.enrollment_id, action.id, for_update=True)
                if done is not None and done.finished_at is not None:
                    return result_of(done, input)
                if done is None:
                    enrollments.write_step(
                        ctx.enrollment_id,
                        StepWrite(
                            action_id=action.id,
                            type=action.type,
                            started_at=input.at,
                            finished_at=None,
                            outcome=None,
                            detail={},
                        ),
                    )
                write_steps(session, input.steps)
                result = effect(session)
                if input.held:
                    result = result.model_copy(
                        update={"outcome": f"{result.outcome} ({input.held})"}
                    )
                detail = dict(result.detail)
                if result.failed:
                    detail["failed"] = True
                if result.next is not None:
                    detail["next"] = result.next
                finished = finished_at(input.at)
                enrollments.write_step(
                    ctx.enrollment_id,
                    StepWrite(
                        action_id=action.id,
                        type=action.type,
                        started_at=input.at,
                        finished_at=finished,
                        outcome=result.outcome,
                        detail=detail,
                    ),
                )
                if input.then is not None and result.next is None:
                    write_delay_start(session, ctx.enrollment_id, input.then, finished)
                    result = result.model_copy(update={"then_started": finished})
                if input.finish is not None:
                    write_finish(session, input.finish)
                return result
        except IntegrityError:
            # A concurrent attempt committed the same step first: read its result.
            continue
    raise RuntimeError(f"step {action.id} of enrollment {ctx.enrollment_id} conflicted twice")
