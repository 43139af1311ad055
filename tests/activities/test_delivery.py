"""send_email and notify through SMTP, against a real local SMTP server (aiosmtpd)."""

from __future__ import annotations

from typing import Any

import pytest
from tests_support import enroll_one, result_of, steps_of

from crmflow import services
from crmflow.activities.config import ConfigError, OutwardSettings, SmtpSettings
from crmflow.store import OutboxRepository

MAILS: dict[str, Any] = {
    "key": "mails",
    "name": "Mails",
    "enrollment": {"trigger": "manual"},
    "actions": [
        {
            "id": "welcome",
            "type": "send_email",
            "subject": "Welcome, {{ record.firstname }}",
            "body": "Hello {{ record.firstname }}",
        },
        {"id": "tell", "type": "notify", "to": "sales@example.com", "subject": "New lead"},
        {"id": "after", "type": "set_property", "property": "mailed", "value": "yes"},
    ],
}


def smtp_of(mailbox) -> SmtpSettings:
    return SmtpSettings(host=mailbox.host, port=mailbox.port, sender="crm@example.com")


def statuses(app) -> dict[str, str]:
    with app.sessions() as session:
        return {m.action_id: m.delivery_status for m in OutboxRepository(session).all()}


async def test_emails_go_through_smtp_and_stay_in_the_outbox(
    app, env, new_worker, publish, mailbox
):
    await publish(MAILS)
    services.set_record(app, "contact", "ann", {"firstname": "Ann", "email": "ann@example.com"})
    async with new_worker(outward=OutwardSettings(smtp=smtp_of(mailbox))):
        result = await result_of(env, await enroll_one(app, "mails", "ann"))
    assert result.status == "completed"
    welcome, tell = mailbox.messages
    assert (welcome["To"], welcome["Subject"], welcome["From"]) == (
        "ann@example.com",
        "Welcome, Ann",
        "crm@example.com",
    )
    assert welcome.get_payload().strip() == "Hello Ann"
    assert tell["To"] == "sales@example.com"
    with app.sessions() as session:
        stored = OutboxRepository(session).all()
    assert [welcome["Message-ID"], tell["Message-ID"]] == [m.message_id for m in stored]
    assert welcome["Message-ID"].endswith(".welcome@crmflow>")
    assert statuses(app) == {"welcome": "sent", "tell": "sent"}
    assert [m["subject"] for m in services.outbox(app)] == ["Welcome, Ann", "New lead"]
    assert (
        steps_of(app, "mails")["welcome"]
        == "email to ann@example.com: Welcome, Ann (sent over SMTP)"
    )


async def test_a_refused_recipient_is_a_recorded_failure(app, env, new_worker, publish, mailbox):
    mailbox.refuse.add("ann@example.com")
    await publish(MAILS)
    services.set_record(app, "contact", "ann", {"firstname": "Ann", "email": "ann@example.com"})
    async with new_worker(outward=OutwardSettings(smtp=smtp_of(mailbox))):
        result = await result_of(env, await enroll_one(app, "mails", "ann"))
    assert result.status == "completed"
    steps = steps_of(app, "mails")
    assert steps["welcome"].startswith("failed: SMTP refused the email to ann@example.com")
    assert steps["after"] == 'mailed = "yes"'
    assert statuses(app) == {"welcome": "failed", "tell": "sent"}
    [tell] = mailbox.messages
    assert tell["To"] == "sales@example.com"


async def test_a_deferred_recipient_is_retried_and_delivered_once(
    app, env, new_worker, publish, mailbox
):
    mailbox.defer_once.add("ann@example.com")
    await publish(MAILS)
    services.set_record(app, "contact", "ann", {"firstname": "Ann", "email": "ann@example.com"})
    async with new_worker(outward=OutwardSettings(smtp=smtp_of(mailbox))):
        await result_of(env, await enroll_one(app, "mails", "ann"))
    assert steps_of(app, "mails")["welcome"].endswith("(sent over SMTP)")
    assert [m["To"] for m in mailbox.messages] == ["ann@example.com", "sales@example.com"]
    assert statuses(app) == {"welcome": "sent", "tell": "sent"}


async def test_without_smtp_settings_the_outbox_is_the_delivery(app, env, new_worker, publish):
    await publish(MAILS)
    services.set_record(app, "contact", "ann", {"firstname": "Ann", "email": "ann@example.com"})
    async with new_worker():
        await result_of(env, await enroll_one(app, "mails", "ann"))
    assert statuses(app) == {"welcome": "outbox", "tell": "outbox"}


def test_smtp_settings_from_the_environment():
    assert OutwardSettings.from_env({}).smtp is None
    smtp = OutwardSettings.from_env(
        {
            "CRMFLOW_SMTP_HOST": "mail.example.com",
            "CRMFLOW_SMTP_TLS": "starttls",
            "CRMFLOW_SMTP_USER": "u",
            "CRMFLOW_SMTP_PASSWORD": "p",
            "CRMFLOW_SMTP_FROM": "crm@example.com",
        }
    ).smtp
    assert smtp == SmtpSettings(
        host="mail.example.com",
        port=587,
        tls="starttls",
        user="u",
        password="p",
        sender="crm@example.com",
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CRMFLOW_SMTP_HOST": "h", "CRMFLOW_SMTP_PORT": "twenty-five"}, "CRMFLOW_SMTP_PORT="),
        ({"CRMFLOW_SMTP_HOST": "h", "CRMFLOW_SMTP_TLS": "ssl"}, "CRMFLOW_SMTP_TLS="),
        ({"CRMFLOW_WEBHOOK_RATE": "fast"}, "CRMFLOW_WEBHOOK_RATE="),
        ({"CRMFLOW_ALLOW_PRIVATE_WEBHOOKS": "maybe"}, "CRMFLOW_ALLOW_PRIVATE_WEBHOOKS="),
    ],
)
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        OutwardSettings.from_env(env)
