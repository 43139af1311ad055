"""`crmflow simulate` never lets an effect out: with SMTP, private webhooks and a custom handler
all configured in the environment, a simulation of a definition that uses them reaches none of
the real receivers, and each step says what would have happened."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import custom_handlers
from ruamel.yaml import YAML

from crmflow.services import simulate as _simulate


async def test_nothing_leaves_a_simulation(tmp_path: Path, receiver, mailbox, monkeypatch):
    monkeypatch.setenv("CRMFLOW_SMTP_HOST", mailbox.host)
    monkeypatch.setenv("CRMFLOW_SMTP_PORT", str(mailbox.port))
    monkeypatch.setenv("CRMFLOW_ALLOW_PRIVATE_WEBHOOKS", "1")
    monkeypatch.setenv("CRMFLOW_ACTIONS", "score=custom_handlers:score")
    custom_handlers.calls.clear()
    definition = {
        "key": "outward",
        "name": "Outward",
        "enrollment": {"trigger": "manual"},
        "actions": [
            {"id": "mail", "type": "send_email", "subject": "Hi", "body": "."},
            {"id": "hook", "type": "webhook", "url": receiver.url("/hook"), "body": {"a": 1}},
            {"id": "score", "type": "custom", "handler": "score", "params": {"points": 3}},
            {"id": "deal", "type": "create_record", "object_type": "deal", "properties": {}},
        ],
    }
    path = tmp_path / "outward.yaml"
    with path.open("w") as handle:
        YAML().dump(definition, handle)

    result = await _simulate.simulate(
        path,
        properties={"email": "ann@example.com"},
        start=(datetime.now(UTC) + timedelta(days=1)).isoformat(),
        events=[],
    )

    outcomes = {s.action_id: s.outcome for s in result.steps}
    assert list(outcomes) == ["mail", "hook", "score", "deal"], outcomes
    assert receiver.to("/hook") == []
    assert mailbox.messages == []
    assert custom_handlers.calls == []
    assert "not sent" in outcomes["hook"]
    assert "failed" not in " ".join(o or "" for o in outcomes.values())
