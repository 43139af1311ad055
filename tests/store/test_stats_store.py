"""`StatsRepository` on real SQLite and PostgreSQL: every figure of `crmflow stats` and of the
graph's counts, from enrollments and steps written as the interpreter writes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from crmflow.store import (
    Durations,
    EnrollmentRepository,
    StatsRepository,
    StepCounts,
    StepWrite,
    WorkflowRepository,
)

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def enroll(
    session: Session,
    record_id: str,
    steps: list[tuple[str, str, float, float | None, str | None]],
    *,
    version: int = 1,
    status: str = "completed",
    ended_after: float | None = None,
    enrolled_at: datetime = T0,
    reason: str | None = None,
) -> None:
    """An enrollment with steps (action, type, start offset s, duration s or None, outcome)."""
    repo = EnrollmentRepository(session)
    e = repo.create(
        key="nurture",
        version=version,
        object_type="contact",
        record_id=record_id,
        source="manual",
        now=enrolled_at,
    )
    for action_id, type_, start, duration, outcome in steps:
        started = enrolled_at + timedelta(seconds=start)
        finished = None if duration is None else started + timedelta(seconds=duration)
        repo.write_step(e.id, StepWrite(action_id, type_, started, finished, outcome, {}))
    ended = None if ended_after is None else enrolled_at + timedelta(seconds=ended_after)
    repo.set_status(e.id, status, reason=reason, ended_at=ended)


def publish(session: Session, versions: int = 2) -> None:
    for _ in range(versions):
        WorkflowRepository(session).publish(
            key="nurture",
            name="Nurture",
            object_type="contact",
            trigger="manual",
            definition={"key": "nurture"},
            source="",
            source_name="nurture.yaml",
            now=T0,
        )


def test_funnel_waits_goal_and_failures_per_version(sessions):
    with sessions.begin() as session:
        publish(session)
        # Version 1: ten enrollments wait 10, 20, ..., 100 s at `wait`; then mail.
        for i in range(1, 11):
            mail = "failed: the record has no email address" if i <= 2 else "sent"
            enroll(
                session,
                f"r{i}",
                [("wait", "delay", 0, 10.0 * i, "waited"), ("mail", "send_email", 10 * i, 0, mail)],
                status="goal_met" if i % 2 == 0 else "completed",
                ended_after=3600.0 * i,
            )
        # One still waiting, one paused while waiting: waiting now; one unenrolled mid-wait.
        enroll(session, "w1", [("wait", "delay", 0, None, "waiting until …")], status="running")
        enroll(session, "w2", [("wait", "delay", 0, None, "waiting until …")], status="paused")
        enroll(session, "u1", [("wait", "delay", 0, None, None)], status="unenrolled")
        # Unenrolled during the wait: reached, neither completed nor failed, not timed.
        enroll(
            session,
            "u2",
            [("wait", "delay", 0, 1000, "interrupted: unenrolled")],
            status="unenrolled",
        )
        # Version 2: one failed after retries, one enrollment failed as a whole.
        enroll(
            session,
            "v2a",
            [("mail", "send_email", 0, 0, "failed after retries: SMTP 451 try again later")],
            version=2,
        )
        enroll(session, "v2b", [], version=2, status="failed", reason="worker lost")

    with sessions() as session:
        found = StatsRepository(session).stats("nurture")
    assert [v.version for v in found] == [2, 1]
    v2, v1 = found
    assert v1.statuses == {
        "completed": 5,
        "goal_met": 5,
        "running": 1,
        "paused": 1,
        "unenrolled": 2,
    }
    assert v1.enrollments == 14 and v1.goal_met == 5
    # An unfinished step of an ended enrollment reached the action but waits no more.
    assert v1.actions["wait"] == StepCounts(reached=14, completed=10, failed=0, waiting=2)
    assert v1.actions["mail"] == StepCounts(reached=10, completed=8, failed=2, waiting=0)
    assert v1.action_types == {"wait": "delay", "mail": "send_email"}
    # Nearest rank over 10, 20, ..., 100: median rank 5 (50 s), p90 rank 9 (90 s).
    assert v1.waits == {"wait": Durations(count=10, median=50.0, p90=90.0)}
    assert "mail" not in v1.waits  # not a waiting step
    # Goal met by r2, r4, ..., r10 after 2, 4, ..., 10 hours: median rank 3 (6 h).
    assert v1.time_to_goal == Durations(count=5, median=21600.0, p90=36000.0)
    assert v1.failures == [("mail", "the record has no email address", 2)]

    assert v2.statuses == {"completed": 1, "failed": 1}
    assert v2.actions == {"mail": StepCounts(reached=1, completed=0, failed=1, waiting=0)}
    assert v2.waits == {} and v2.time_to_goal.count == 0 and v2.time_to_goal.median is None
    assert v2.failures == [("", "worker lost", 1), ("mail", "SMTP 451 try again later", 1)]


def test_since_and_one_version_counts(sessions):
    with sessions.begin() as session:
        publish(session)
        enroll(
            session, "old", [("wait", "delay", 0, 5, "waited")], enrolled_at=T0 - timedelta(days=40)
        )
        enroll(session, "new", [("wait", "delay", 0, None, "waiting")], status="running")
        enroll(session, "v2", [("wait", "delay", 0, None, "waiting")], version=2, status="running")
    with sessions() as session:
        stats = StatsRepository(session)
        recent = stats.stats("nurture", since=T0 - timedelta(days=30))
        assert {v.version: v.enrollments for v in recent} == {2: 1, 1: 1}
        assert recent[1].waits == {}  # the only finished wait began before --since
        assert stats.action_counts("nurture", version=1) == {
            "wait": StepCounts(reached=2, completed=1, failed=0, waiting=1)
        }
        assert stats.action_counts("nurture", version=2) == {
            "wait": StepCounts(reached=1, completed=0, failed=0, waiting=1)
        }
        assert stats.stats("other") == []


def test_percentiles_keep_three_significant_digits(sessions):
    """Durations are grouped rounded to 3 significant digits: 1 d 2 h 3 min 4 s (93,784 s)
    counts as 93,800 s."""
    with sessions.begin() as session:
        publish(session, versions=1)
        enroll(session, "a", [("wait", "wait_for_event", 0, 93784.0, "event x received")])
        enroll(session, "b", [("wait", "wait_for_event", 0, 0.4, "event x received")])
    with sessions() as session:
        (v1,) = StatsRepository(session).stats("nurture")
    assert v1.waits["wait"] == Durations(count=2, median=0.0, p90=93800.0)
