"""What the dispatcher does when things fail, on the time-skipping server and both stores:
refused signals are retried, never dropped; a stop reaches an enrollment whose run is not
started yet; one failing change is retried, then parked, while the rest of the feed moves on;
events reach only the enrollments waiting for them; a broken stored version stops nothing
else; a dispatcher that lost its lease marks nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, update
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from test_automatic_enrollment import nurture, pending, settle, statuses, until_waiting, wait_for

import crmflow.triggers._dispatcher as dispatcher_module
from crmflow import services
from crmflow.rules import Change
from crmflow.services import App
from crmflow.store import ChangeRepository, Lease, RecordChange, Workflow, WorkflowVersion
from crmflow.triggers import Dispatcher, LeaseLost, TemporalUnreachable

NO_WAIT = (timedelta(0),) * 4  # retried at once: the test drives each attempt


class RefusingHandle:
    """A workflow handle whose signals Temporal refuses (unavailable) a number of times."""

    def __init__(self, handle: WorkflowHandle[Any, Any], refusals: dict[str, int]) -> None:
        self._handle, self._refusals = handle, refusals

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    async def signal(self, signal: Any, *args: Any, **kwargs: Any) -> None:
        name = signal if isinstance(signal, str) else signal.__name__
        if self._refusals.get(name, 0) > 0:
            self._refusals[name] -= 1
            raise RPCError("service unavailable", RPCStatusCode.UNAVAILABLE, b"")
        await self._handle.signal(signal, *args, **kwargs)


class RefusingClient:
    """The real client, except that some signals are refused first (Temporal's edge)."""

    def __init__(self, client: Client, refusals: dict[str, int]) -> None:
        self._client, self.refusals = client, refusals

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def get_workflow_handle(self, workflow_id: str, **kwargs: Any) -> Any:
        return RefusingHandle(
            self._client.get_workflow_handle(workflow_id, **kwargs), self.refusals
        )


def make_due(app: App) -> None:
    """The retry delay of every failed change has passed."""
    with app.sessions.begin() as session:
        session.execute(update(RecordChange).values(next_attempt_at=None))


def feed_of(app: App) -> dict[int, RecordChange]:
    with app.sessions() as session:
        return {e.change.id: e.change for e in ChangeRepository(session).feed()}


def last_change(app: App) -> int:
    with app.sessions() as session:
        return ChangeRepository(session).last_id()


async def signals_received(env: WorkflowEnvironment, workflow_id: str, name: str) -> int:
    history = await env.client.get_workflow_handle(workflow_id).fetch_history()
    return sum(
        1
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        and e.workflow_execution_signaled_event_attributes.signal_name == name
    )


@pytest.fixture
def dispatcher(app: App, env: WorkflowEnvironment) -> Dispatcher:
    return Dispatcher(app.sessions, env.client, task_queue=app.settings.task_queue)


async def test_a_refused_unenroll_signal_keeps_the_change_pending_until_it_is_delivered(
    app, env, new_worker, publish, dispatcher
):
    unsubscribed = {"property": "unsubscribed", "op": "eq", "value": True}
    await publish(nurture(settings={"unenroll_when": unsubscribed}))
    async with new_worker():
        services.set_record(app, "contact", "ann", {"lifecycle_stage": "lead", "email": "a@x.io"})
        await dispatcher.dispatch_pending()
        await until_waiting(app, "ann")
        dispatcher.starter.client = RefusingClient(env.client, {"unenroll": 1})
        services.set_record(app, "contact", "ann", {"unsubscribed": True})
        change_id = last_change(app)
        await dispatcher.dispatch_pending()
        # Not dropped: the change is still to do, with its error; the record still enrolled.
        assert pending(app) == 1
        change = feed_of(app)[change_id]
        assert change.attempts == 1 and "service unavailable" in (change.error or "")
        assert statuses(app) == [("ann", "running", None)]
        make_due(app)
        await dispatcher.dispatch_pending()
        await wait_for(lambda: statuses(app)[0][1] == "unenrolled")
    assert statuses(app) == [("ann", "unenrolled", "unenroll_when matched")]
    assert pending(app) == 0


@pytest.mark.parametrize("stop", ["unenroll", "goal_met"])
async def test_a_stop_reaches_an_enrollment_whose_run_is_not_started_yet(
    app, env, new_worker, publish, dispatcher, stop
):
    """A scheduled run's (or --enroll-existing's) fan-out has written the enrollment row but
    not started its run when the record joins a suppression list (or meets the goal): the run
    starts with the stop queued, runs no action, and the fan-out's start adds no second run."""
    goal = {"criteria": {"property": "lifecycle_stage", "op": "eq", "value": "customer"}}
    services.set_record(app, "contact", "ann", {"lifecycle_stage": "lead", "email": "a@x.io"})
    await publish(nurture(settings={"suppression_lists": ["do-not-contact"]}, goal=goal))
    await dispatcher.dispatch_pending()  # ann matched before activation: not enrolled
    assert statuses(app) == []
    definition, version = services.load_version(app, "nurture")
    [ready] = dispatcher.starter.prepare_page(definition, version, ["ann"], source="existing")
    async with new_worker():
        if stop == "unenroll":
            services.change_list(app, "do-not-contact", ["ann"], object_type="contact", add=True)
        else:
            services.set_record(app, "contact", "ann", {"lifecycle_stage": "customer"})
        await dispatcher.dispatch_pending()
        outcome = await dispatcher.starter.launch(ready)
        assert outcome.ok
        await settle(env, app)
    reason = "joined suppression list do-not-contact" if stop == "unenroll" else "goal met"
    status = "unenrolled" if stop == "unenroll" else "goal_met"
    assert statuses(app) == [("ann", status, reason)]
    [enrollment] = services.list_enrollments(app, "nurture")
    assert enrollment["steps"] == []
    assert services.outbox(app) == []
    assert pending(app) == 0


async def test_unenroll_from_workflow_does_not_succeed_on_a_refused_signal(
    app, env, new_worker, publish, monkeypatch
):
    """The step's signal is refused twice: the activity is retried (no success recorded
    meanwhile) and the target enrollment does end."""
    target = nurture(key="target", enrollment={"trigger": "manual"})
    del target["enrollment"]["criteria"]
    closer = {
        "key": "closer",
        "name": "Closer",
        "enrollment": {"trigger": "manual"},
        "actions": [{"id": "stop", "type": "unenroll_from_workflow", "workflows": ["target"]}],
    }
    await publish(target)
    await publish(closer)
    services.set_record(app, "contact", "ann", {"email": "a@x.io"})
    refusals = {"unenroll": 2}
    real_signal = WorkflowHandle.signal

    async def refusing(self: WorkflowHandle[Any, Any], signal: Any, *args: Any, **kw: Any) -> Any:
        name = signal if isinstance(signal, str) else signal.__name__
        if refusals.get(name, 0) > 0:
            refusals[name] -= 1
            raise RPCError("service unavailable", RPCStatusCode.UNAVAILABLE, b"")
        return await real_signal(self, signal, *args, **kw)

    async with new_worker():
        await services.enroll(app, "target", ["ann"])
        await until_waiting(app, "ann", key="target")
        monkeypatch.setattr(WorkflowHandle, "signal", refusing)
        await services.enroll(app, "closer", ["ann"])
        await settle(env, app, "closer")
        await settle(env, app, "target")
    assert refusals == {"unenroll": 0}
    assert statuses(app, "target") == [("ann", "unenrolled", "unenrolled by 'closer'")]
    [closing] = services.list_enrollments(app, "closer")
    assert [s["outcome"] for s in closing["steps"]] == ["unenrolled from target"]


async def test_a_change_that_keeps_failing_is_parked_and_the_feed_moves_on(
    app, env, new_worker, publish
):
    await publish(nurture())
    dispatcher = Dispatcher(
        app.sessions, env.client, task_queue=app.settings.task_queue, retry_delays=NO_WAIT
    )
    failing = {"on": True}

    def poison(point: str, change: Change) -> None:
        if point == "decided" and change.record_id == "bad" and failing["on"]:
            raise ValueError("this change cannot be dispatched")

    dispatcher.crash_point = poison
    async with new_worker():
        services.set_record(app, "contact", "bad", {"email": "b@x.io"})
        bad_first = last_change(app)
        services.set_record(app, "contact", "bad", {"lifecycle_stage": "lead"})
        bad_then = last_change(app)
        services.set_record(app, "contact", "ok", {"lifecycle_stage": "lead", "email": "o@x.io"})
        for _ in range(5):
            await dispatcher.dispatch_pending()
            make_due(app)
        # The other record went on at once; the bad record's changes wait: the first parked
        # after 5 attempts, the next behind it (in order).
        assert statuses(app) == [("ok", "running", None)]
        feed = feed_of(app)
        assert set(feed) == {bad_first, bad_then}
        assert feed[bad_first].attempts == 5 and feed[bad_first].parked_at is not None
        assert "ValueError: this change cannot be dispatched" in (feed[bad_first].error or "")
        assert feed[bad_then].attempts == 0 and feed[bad_then].parked_at is None
        # Later changes of other records are not held back either.
        services.set_record(app, "contact", "new", {"lifecycle_stage": "lead", "email": "n@x.io"})
        await dispatcher.dispatch_pending()
        assert ("new", "running", None) in statuses(app)
        # Fixed, and put back in the feed: the record's changes go through, in order.
        failing["on"] = False
        with app.sessions.begin() as session:
            assert ChangeRepository(session).retry([bad_first]) == [bad_first]
        await dispatcher.dispatch_pending()
        assert pending(app) == 0
        assert ("bad", "running", None) in statuses(app)


async def test_temporal_unreachable_counts_no_attempt(app, env, new_worker, publish):
    await publish(nurture())

    class Unreachable:
        """A client whose server does not answer."""

        class service_client:  # noqa: N801
            @staticmethod
            async def check_health() -> bool:
                raise RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")

        async def start_workflow(self, *args: Any, **kwargs: Any) -> None:
            raise RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")

    dispatcher = Dispatcher(
        app.sessions, env.client, task_queue=app.settings.task_queue, retry_delays=NO_WAIT
    )
    dispatcher.starter.client = Unreachable()  # type: ignore[assignment]
    services.set_record(app, "contact", "ann", {"lifecycle_stage": "lead", "email": "a@x.io"})
    for _ in range(8):
        with pytest.raises(TemporalUnreachable):
            await dispatcher.dispatch_pending()
    [change] = feed_of(app).values()
    assert change.attempts == 0 and change.parked_at is None
    assert "connection refused" in (change.error or "")
    dispatcher.starter.client = env.client
    async with new_worker():
        await dispatcher.dispatch_pending()
        assert statuses(app) == [("ann", "running", None)]


async def test_events_are_signalled_only_to_enrollments_waiting_for_them(
    app, env, new_worker, publish, dispatcher
):
    definition = nurture(
        actions=[
            {"id": "form", "type": "wait_for_event", "event": "form_submitted", "timeout": "1d"},
            {"id": "opened", "type": "wait_for_event", "event": "email_opened", "timeout": "1d"},
            {"id": "thanks", "type": "send_email", "subject": "Thanks", "body": "."},
        ]
    )
    await publish(definition)
    async with new_worker():
        services.set_record(app, "contact", "ann", {"lifecycle_stage": "lead", "email": "a@x.io"})
        await dispatcher.dispatch_pending()
        await until_waiting(app, "ann", step="form")
        [enrollment] = services.list_enrollments(app, "nurture")
        workflow_id = enrollment["temporal_workflow_id"]
        # It waits for a form now, not for an opened email: those events are not signalled.
        for _ in range(3):
            services.track_event(app, "contact", "ann", "email_opened", {})
        await dispatcher.dispatch_pending()
        assert pending(app) == 0
        assert await signals_received(env, workflow_id, "event_tracked") == 0
        services.track_event(app, "contact", "ann", "form_submitted", {})
        await dispatcher.dispatch_pending()
        await until_waiting(app, "ann", step="opened")
        services.track_event(app, "contact", "ann", "email_opened", {})
        await dispatcher.dispatch_pending()
        await settle(env, app)
        assert await signals_received(env, workflow_id, "event_tracked") == 2
    [enrollment] = services.list_enrollments(app, "nurture")
    outcomes = [(s["action_id"], s["outcome"]) for s in enrollment["steps"]]
    assert outcomes[:2] == [
        ("form", "event form_submitted received"),
        ("opened", "event email_opened received"),
    ]


async def test_a_broken_stored_version_does_not_stop_the_dispatcher(
    app, env, new_worker, publish, dispatcher
):
    await publish(nurture())
    await publish(nurture(key="other"))
    # A version stored before a validation rule that now refuses it.
    with app.sessions.begin() as session:
        stored = session.get(WorkflowVersion, ("other", 1))
        assert stored is not None
        broken = {**stored.definition, "actions": [{"id": "x", "type": "teleport"}]}
        session.execute(
            insert(WorkflowVersion).values(
                key="other",
                version=2,
                name=stored.name,
                object_type=stored.object_type,
                trigger=stored.trigger,
                definition=broken,
                source=stored.source,
                source_name=stored.source_name,
                published_at=datetime.now(UTC),
            )
        )
        session.execute(update(Workflow).where(Workflow.key == "other").values(latest_version=2))
    async with new_worker():
        services.set_record(app, "contact", "ann", {"lifecycle_stage": "lead", "email": "a@x.io"})
        await dispatcher.dispatch_pending()
        assert statuses(app) == [("ann", "running", None)]
        assert statuses(app, "other") == []
        assert pending(app) == 0


async def test_a_dispatcher_whose_lease_was_taken_over_cannot_mark(
    app, env, new_worker, publish, dispatcher
):
    """The first dispatcher is paused past its lease in the middle of a change; a second one
    takes over. The first may not mark the change when it resumes; the second does it."""
    await publish(nurture())
    second = Dispatcher(app.sessions, env.client, task_queue=app.settings.task_queue)

    def paused_past_the_lease(point: str, change: Change) -> None:
        if point == "decided":
            with app.sessions.begin() as session:
                session.execute(update(Lease).values(expires_at=datetime.now(UTC) - timedelta(1)))
            assert second.acquire_lease()

    dispatcher.crash_point = paused_past_the_lease
    async with new_worker():
        services.set_record(app, "contact", "ann", {"lifecycle_stage": "lead", "email": "a@x.io"})
        with pytest.raises(LeaseLost):
            await dispatcher.dispatch_pending()
        assert pending(app) == 1
        assert await dispatcher.dispatch_pending() == 0  # the lease is the second's now
        await second.dispatch_pending()
        assert pending(app) == 0
        assert statuses(app) == [("ann", "running", None)]


async def test_a_dispatcher_with_a_fast_clock_cannot_take_a_live_lease(
    app, env, publish, dispatcher, monkeypatch
):
    """Expiry is judged by the database's clock: a worker whose clock runs an hour ahead does
    not see the first dispatcher's lease as expired."""
    assert dispatcher.acquire_lease()

    class Ahead(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:  # type: ignore[override]
            return datetime.now(tz) + timedelta(hours=1)

    monkeypatch.setattr(dispatcher_module, "datetime", Ahead)
    skewed = Dispatcher(app.sessions, env.client, task_queue=app.settings.task_queue)
    assert not skewed.acquire_lease()
