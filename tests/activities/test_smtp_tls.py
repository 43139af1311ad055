"""SMTP and TLS: without CRMFLOW_SMTP_TLS the worker uses STARTTLS when the server offers it, and
a password only ever travels over TLS to a server whose certificate checks out, unless
CRMFLOW_SMTP_TLS=none says otherwise. Against a real SMTP server (aiosmtpd) with a test CA."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage

import pytest
from temporalio.exceptions import ApplicationError
from tests_support import enroll_one, result_of, steps_of

from crmflow import services
from crmflow.activities.config import ConfigError, OutwardSettings, SmtpSettings
from crmflow.activities.messages import smtp_send
from crmflow.store import OutboxRepository

MAIL = {
    "key": "mail",
    "name": "Mail",
    "enrollment": {"trigger": "manual"},
    "actions": [
        {"id": "welcome", "type": "send_email", "subject": "Welcome", "body": "Hello"},
        {"id": "after", "type": "set_property", "property": "mailed", "value": "yes"},
    ],
}


def settings_for(box, **env: str) -> OutwardSettings:
    """The worker's settings as `crmflow worker` reads them: CRMFLOW_SMTP_TLS unset unless
    given."""
    return OutwardSettings.from_env(
        {"CRMFLOW_SMTP_HOST": box.host, "CRMFLOW_SMTP_PORT": str(box.port), **env}
    )


PASSWORD = {"CRMFLOW_SMTP_USER": "crm", "CRMFLOW_SMTP_PASSWORD": "smtp-s3cret"}


async def send_one(app, env, new_worker, publish, outward) -> str:
    await publish(MAIL)
    services.set_record(app, "contact", "ann", {"email": "ann@example.com"})
    async with new_worker(outward=outward):
        result = await result_of(env, await enroll_one(app, "mail", "ann"))
    assert result.status == "completed"
    steps = steps_of(app, "mail")
    assert steps["after"] == 'mailed = "yes"'
    return steps["welcome"]


async def test_starttls_is_used_when_the_server_offers_it(
    app, env, new_worker, publish, mail_ca, start_mailbox
):
    """No password: opportunistic encryption, even with a certificate the worker cannot check
    (a local relay's self-signed one): never worse than the clear text it replaces."""
    with start_mailbox(tls_context=mail_ca.server_context) as box:
        outcome = await send_one(app, env, new_worker, publish, settings_for(box))
    assert outcome == "email to ann@example.com: Welcome (sent over SMTP)"
    assert box.encrypted == [True]
    assert box.recipients == [["ann@example.com"]]


async def test_a_password_goes_over_starttls_to_a_verified_server(
    app, env, new_worker, publish, mail_ca, monkeypatch, start_mailbox
):
    monkeypatch.setenv("SSL_CERT_FILE", mail_ca.ca_file)  # the worker trusts the test CA
    with start_mailbox(tls_context=mail_ca.server_context, auth=True) as box:
        outcome = await send_one(app, env, new_worker, publish, settings_for(box, **PASSWORD))
    assert outcome.endswith("(sent over SMTP)")
    assert box.logins == [("crm", "smtp-s3cret", True)]
    assert box.encrypted == [True]


async def test_a_password_is_never_sent_to_a_server_without_starttls(
    app, env, new_worker, publish, start_mailbox
):
    with start_mailbox(auth=True) as box:
        outcome = await send_one(app, env, new_worker, publish, settings_for(box, **PASSWORD))
    assert outcome == (
        f"failed: SMTP 127.0.0.1:{box.port} does not offer STARTTLS: the password is not sent "
        "in clear text (CRMFLOW_SMTP_TLS=none allows it)"
    )
    assert box.logins == [] and box.messages == []
    with app.sessions() as session:
        [row] = OutboxRepository(session).all()
    assert row.delivery_status == "failed"


async def test_tls_none_sends_the_password_in_clear_when_told_to(
    app, env, new_worker, publish, start_mailbox
):
    with start_mailbox(auth=True) as box:
        outward = settings_for(box, CRMFLOW_SMTP_TLS="none", **PASSWORD)
        outcome = await send_one(app, env, new_worker, publish, outward)
    assert outcome.endswith("(sent over SMTP)")
    assert box.logins == [("crm", "smtp-s3cret", False)]
    assert box.encrypted == [False]


def message() -> EmailMessage:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "crm@example.com", "ann@example.com", "Hi"
    mail["Date"] = datetime.now(UTC)
    mail.set_content("Hello")
    return mail


async def test_a_password_is_not_sent_to_a_server_whose_certificate_fails(mail_ca, start_mailbox):
    """The worker does not trust the test CA here: the STARTTLS handshake fails, the attempt is
    retried later (a transient error to Temporal), and the password never left."""
    with start_mailbox(tls_context=mail_ca.server_context, auth=True) as box:
        smtp = SmtpSettings(host=box.host, port=box.port, user="crm", password="smtp-s3cret")
        with pytest.raises(ApplicationError) as failure:
            await smtp_send(smtp, message())
    assert failure.value.type == "SmtpConnection" and not failure.value.non_retryable
    assert "certificate" in str(failure.value).lower()
    assert box.logins == [] and box.messages == []


async def test_starttls_required_but_not_offered_sends_nothing(start_mailbox):
    with start_mailbox(auth=True) as box:
        smtp = SmtpSettings(
            host=box.host, port=box.port, tls="starttls", user="crm", password="smtp-s3cret"
        )
        with pytest.raises(ApplicationError, match="STARTTLS"):
            await smtp_send(smtp, message())
    assert box.logins == [] and box.messages == []


def test_tls_settings():
    base = {"CRMFLOW_SMTP_HOST": "mail.example.com"}
    assert OutwardSettings.from_env(base).smtp == SmtpSettings(
        host="mail.example.com", port=25, tls="auto", sender="crmflow@mail.example.com"
    )
    for value, port in (("none", 25), ("starttls", 587), ("tls", 465), ("", 25)):
        smtp = OutwardSettings.from_env({**base, "CRMFLOW_SMTP_TLS": value}).smtp
        assert smtp is not None and smtp.port == port
    with pytest.raises(ConfigError, match="^CRMFLOW_SMTP_FROM: contains a line break$"):
        OutwardSettings.from_env({**base, "CRMFLOW_SMTP_FROM": "crm@x.com\r\nBcc: a@b.com"})
