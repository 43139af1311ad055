"""Two attempts of one store action at the same time (the first stalled past its start-to-close
timeout, and Temporal started the next while it still ran): the effect happens once, and both
attempts answer its result. Found by bench/chaos.py's review: an increment was added twice on
PostgreSQL when both attempts got past the step check before either committed."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from sqlalchemy import func, select

from crmflow.activities.models import ActionInput, EnrollmentContext
from crmflow.activities.records import RecordActivities
from crmflow.definitions import WorkflowDefinition
from crmflow.services import App, Settings
from crmflow.store import (
    EnrollmentRepository,
    EnrollmentStep,
    RecordRepository,
    WorkflowRepository,
)

DEFINITION = WorkflowDefinition.model_validate(
    {
        "key": "race",
        "name": "Race",
        "enrollment": {"trigger": "manual"},
        "actions": [{"id": "bump", "type": "increment_property", "property": "visits", "by": 1}],
    }
)


def test_overlapping_attempts_of_an_increment_add_once(store_url):
    app = App(Settings(db_url=store_url))
    now = datetime.now(UTC)
    try:
        with app.sessions.begin() as session:
            WorkflowRepository(session).publish(
                key="race",
                name="Race",
                object_type="contact",
                trigger="manual",
                definition=DEFINITION.model_dump(mode="json", by_alias=True, exclude_none=True),
                source="",
                source_name="race.yaml",
                now=now,
            )
            RecordRepository(session).upsert("contact", "ann", {"visits": 1}, now=now)
            enrollment = EnrollmentRepository(session).create(
                key="race",
                version=1,
                object_type="contact",
                record_id="ann",
                source="manual",
                now=now,
            )
            enrollment_id = enrollment.id
        action = ActionInput(
            context=EnrollmentContext(
                enrollment_id=enrollment_id,
                workflow_key="race",
                workflow_name="Race",
                version=1,
                object_type="contact",
                record_id="ann",
            ),
            action=DEFINITION.actions[0],
            at=now,
        )
        activities = RecordActivities(app.sessions)
        results = []
        # Hold the record's lock (where the database has row locks) while both attempts start,
        # so that on PostgreSQL both are inside their transaction before either can commit.
        stall = app.sessions()
        RecordRepository(stall).get("contact", "ann", for_update=True)
        attempts = [
            threading.Thread(target=lambda: results.append(activities.update_record(action)))
            for _ in range(2)
        ]
        for attempt in attempts:
            attempt.start()
        time.sleep(1.0)
        stall.commit()
        stall.close()
        for attempt in attempts:
            attempt.join(60)
        assert [r.outcome for r in results] == ["visits: 1 -> 2", "visits: 1 -> 2"]
        with app.sessions() as session:
            assert RecordRepository(session).require("contact", "ann").properties["visits"] == 2
            steps = session.scalar(
                select(func.count())
                .select_from(EnrollmentStep)
                .where(EnrollmentStep.enrollment_id == enrollment_id)
            )
            assert steps == 1
    finally:
        app.close()
