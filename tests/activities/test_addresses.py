"""A recipient is exactly one mailbox, and no header carries a line break: a record's email
field cannot make crmflow a relay, nor a subject rendered from a record inject a header. Through
the outbox and through a real SMTP server (aiosmtpd)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from tests_support import enroll_one, result_of, steps_of

from crmflow import services
from crmflow.activities.config import OutwardSettings, SmtpSettings
from crmflow.activities.messages import InvalidAddress, one_line, single_mailbox, smtp_message
from crmflow.store import OutboxMessage

# Record property -> a value that is not one plain mailbox.
NOT_ONE_MAILBOX = {
    "comma": "a@example.com,b@example.org",
    "semicolon": "a@example.com;b@example.org",
    "space": "a@example.com b@example.org",
    "display": "Ann <a@example.com>",
    "display-list": "a@example.com, Bob <b@example.org>",
    "group": "friends: a@example.com, b@example.org;",
    "crlf": "a@example.com\r\nBcc: c@example.net",
    "lf": "a@example.com\nBcc: c@example.net",
    "trailing-crlf": "a@example.com\r\n",
    "quoted": '"a@example.com,b"@example.org',
}


def mails() -> dict[str, Any]:
    actions: list[dict[str, Any]] = [
        # The default recipient is the record's `email`.
        {"id": "default-to", "type": "send_email", "subject": "Hi", "body": "."},
        {"id": "notify", "type": "notify", "to": "{{ record.comma }}", "subject": "Lead"},
    ]
    actions += [
        {
            "id": f"to-{name}",
            "type": "send_email",
            "to": f"{{{{ record['{name}'] }}}}",
            "subject": "Hi",
            "body": ".",
        }
        for name in NOT_ONE_MAILBOX
    ]
    actions.append(
        {
            "id": "injected-subject",
            "type": "send_email",
            "to": "Good@EXAMPLE.com",
            "subject": "Hi {{ record.firstname }}",
            "body": "Hello",
        }
    )
    return {
        "key": "mails",
        "name": "Mails",
        "enrollment": {"trigger": "manual"},
        "actions": actions,
    }


@pytest.mark.parametrize("over_smtp", [False, True], ids=["outbox", "smtp"])
async def test_only_one_plain_mailbox_is_ever_a_recipient(
    app, env, new_worker, publish, mailbox, over_smtp
):
    await publish(mails())
    services.set_record(
        app,
        "contact",
        "ann",
        {
            "email": "ann@example.com,relay@example.org",
            "firstname": "Ann\r\nBcc: evil@example.net",
            **NOT_ONE_MAILBOX,
        },
    )
    smtp = SmtpSettings(host=mailbox.host, port=mailbox.port) if over_smtp else None
    async with new_worker(outward=OutwardSettings(smtp=smtp)):
        result = await result_of(env, await enroll_one(app, "mails", "ann"))
    assert result.status == "completed"
    steps = steps_of(app, "mails")
    refused = {k: v for k, v in steps.items() if k != "injected-subject"}
    assert len(refused) == len(NOT_ONE_MAILBOX) + 2
    for action_id, outcome in refused.items():
        assert outcome.startswith("failed: invalid address "), (action_id, outcome)
        assert "\n" not in outcome and "\r" not in outcome
    assert "it contains a line break" in steps["to-crlf"]
    # The subject's line break became a space: one email, one recipient, no injected header.
    assert steps["injected-subject"].startswith(
        "email to Good@example.com: Hi Ann Bcc: evil@example.net"
    )
    [sent] = services.outbox(app)
    assert (sent["to"], sent["subject"]) == ("Good@example.com", "Hi Ann Bcc: evil@example.net")
    if over_smtp:
        assert mailbox.recipients == [["Good@example.com"]]
        [message] = mailbox.messages
        assert message["Subject"] == "Hi Ann Bcc: evil@example.net"
        assert message["Bcc"] is None
    else:
        assert mailbox.messages == []


@pytest.mark.parametrize("text", [*NOT_ONE_MAILBOX.values(), "", "a", "@x.com", "a@", "a@b"])
def test_single_mailbox_refuses_anything_but_one_address(text):
    with pytest.raises(InvalidAddress, match="invalid address"):
        single_mailbox(text)


def test_single_mailbox_normalizes_one_address():
    assert single_mailbox("  Ann.Lee+crm@EXAMPLE.com\t") == "Ann.Lee+crm@example.com"
    assert single_mailbox("o'neil@exämple.com") == "o'neil@exämple.com"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hi\r\nBcc: x@example.com", "Hi Bcc: x@example.com"),
        ("a\nb\rc", "a b c"),
        ("a\u2028b\x85c\x0bd\x00e", "a b c d e"),
        ("trailing\r\n", "trailing"),
        ("tab\tstays", "tab\tstays"),
    ],
)
def test_one_line(text, expected):
    assert one_line(text) == expected


def test_a_stored_message_is_checked_again_before_it_is_sent():
    """A `sending` row stored before addresses were checked this strictly is not sent to a
    list, and its subject is put on one line."""
    row = OutboxMessage(
        to="a@example.com,b@example.org",
        subject="Hi\r\nBcc: c@example.net",
        body=".",
        message_id="<m@crmflow>",
        sent_at=datetime.now(UTC),
    )
    smtp = SmtpSettings(host="mail.example.com")
    with pytest.raises(InvalidAddress):
        smtp_message(smtp, row)
    row.to = "a@example.com"
    message = smtp_message(smtp, row)
    assert message["To"] == "a@example.com" and message["Subject"] == "Hi Bcc: c@example.net"
