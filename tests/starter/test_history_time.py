"""`history` (why-not) and `review` say what time alone will do, as the time sweep does it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from crmflow import services
from crmflow.services import App
from crmflow.services.review import review

DAY = timedelta(days=1)


def reengage(**overrides: Any) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "key": "reengage",
        "name": "Re-engage",
        "enrollment": {
            "trigger": "criteria",
            "criteria": {"property": "last_activity", "op": "more_than_ago", "value": "30d"},
        },
        "actions": [{"id": "hello", "type": "send_email", "subject": "Hi", "body": "."}],
    }
    definition.update(overrides)
    return definition


def seconds(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


def why(app: App, record_id: str) -> dict[str, Any]:
    return services.history(app, "reengage", record_id)["explanation"]


async def test_history_says_when_time_will_enroll_the_record(app: App, publish: Any) -> None:
    await publish(
        reengage(goal={"criteria": {"property": "renewed_on", "op": "within_last", "value": "1d"}})
    )
    last = datetime.now(UTC).replace(microsecond=0) - 30 * DAY + timedelta(hours=2)
    services.set_record(app, "contact", "ann", {"last_activity": last.isoformat()})
    services.set_record(app, "contact", "bob", {"email": "b@x.io"})
    # Renewed on the very day ann turns 30 days silent: the goal holds then.
    services.set_record(
        app,
        "contact",
        "cid",
        {"last_activity": last.isoformat(), "renewed_on": (last + 30 * DAY).isoformat()},
    )
    crossing = seconds(last + 30 * DAY + timedelta(seconds=1))
    ann = why(app, "ann")
    assert ann["state"] == "criteria_unmet"
    assert ann["message"] == (
        "the enrollment criteria do not match now; will enroll when 'last_activity more than "
        f"30d ago' turns true at {crossing} (the time sweep acts within 30s of that)"
    )
    assert why(app, "bob")["message"] == "the enrollment criteria do not match now"
    assert why(app, "cid")["message"].endswith("but the goal will be met then: it will not enroll")
    # review agrees: two records come to match within 24 h by time alone.
    found = review(app, "reengage")
    assert found.tally is not None and found.tally.matching == 0
    assert "as time passes, 2 more record(s) come to match within 24 h" in found.message


async def test_history_of_an_inactive_workflow_says_nobody_enrolls_then(
    app: App, publish: Any
) -> None:
    await publish(reengage(), activate=False)
    last = datetime.now(UTC) - 30 * DAY + timedelta(minutes=5)
    services.set_record(app, "contact", "ann", {"last_activity": last.isoformat()})
    assert why(app, "ann")["message"].endswith("the workflow is inactive: it enrolls nobody then")
