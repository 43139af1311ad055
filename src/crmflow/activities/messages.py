"""Activities that produce messages and tasks: the outbox, SMTP delivery and the task list.

Without SMTP settings an email is a row of the outbox, written with its step in one transaction
(exactly once). With SMTP (CRMFLOW_SMTP_HOST) the send cannot join that transaction, so:
1. the message (with its Message-ID) is stored in the outbox as `sending`, and committed;
2. it is sent over SMTP;
3. the outbox row becomes `sent` and the step row is written, in one transaction.
A retry that finds the step returns it (nothing sent again). A retry that finds a `sending` row
sends that same stored message again, with the same Message-ID: it was either never sent (the
crash fell before the send) or accepted by the server a moment before the crash; only the second
case delivers twice, and the copies carry one Message-ID.
"""

from __future__ import annotations

import asyncio
import re
from email.message import EmailMessage
from email.utils import format_datetime

import aiosmtplib
from email_validator import EmailNotValidError, validate_email
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from crmflow.definitions import CreateTaskAction, NotifyAction, SendEmailAction
from crmflow.store import (
    EnrollmentRepository,
    OutboxMessage,
    OutboxRepository,
    RecordRepository,
    Task,
    TaskRepository,
)
from crmflow.templates import TemplateProblem

from ._once import Checkpoint, no_checkpoint, result_of, run_once
from ._templating import render_for
from .config import SmtpSettings
from .models import ActionInput, ActionResult, EnrollmentContext


def message_id(ctx: EnrollmentContext, action_id: str) -> str:
    """Stable across retries: a receiver can tell a resent copy from a new message."""
    return f"<{ctx.workflow_key}.{ctx.enrollment_id}.{action_id}@crmflow>"


class InvalidAddress(ValueError):
    """A recipient that is not exactly one plain mailbox; the message is for the user."""


def _shown(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def single_mailbox(text: str) -> str:
    """The one address `text` is, normalized (domain lower-cased, IDNA); InvalidAddress
    otherwise. Exactly one `local@domain`: no list (`a@x.com,b@y.com` would make a record's
    email field a relay), no display name or group, no quoting, no line break anywhere."""
    if "\r" in text or "\n" in text:
        raise InvalidAddress(f"invalid address {_shown(text)}: it contains a line break")
    candidate = text.strip(" \t")
    try:
        return validate_email(candidate, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise InvalidAddress(f"invalid address {_shown(candidate)}: {exc}") from None


# Line breaks (CR, LF and the other characters `str.splitlines` breaks on) and other control
# characters, which have no place in a one-line header.
_NOT_IN_A_HEADER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]+")


def one_line(text: str) -> str:
    """Header text on one line: each run of line breaks or control characters becomes one
    space. A record value rendered into a subject can neither inject a header nor stop the
    email."""
    return _NOT_IN_A_HEADER.sub(" ", text).strip()


class PermanentSmtpError(Exception):
    """The email cannot go out: a 5xx reply, or a password that would travel in clear text.
    The message is the step's outcome (after `failed: `)."""


def smtp_message(smtp: SmtpSettings, outbox: OutboxMessage) -> EmailMessage:
    """The message of an outbox row; InvalidAddress when its recipient is not one mailbox (a
    row stored before addresses were checked this strictly)."""
    message = EmailMessage()
    message["From"] = smtp.sender
    message["To"] = single_mailbox(outbox.to)
    message["Subject"] = one_line(outbox.subject)
    message["Message-ID"] = outbox.message_id
    message["Date"] = format_datetime(outbox.sent_at)
    message.set_content(outbox.body)
    return message


# CRMFLOW_SMTP_TLS -> aiosmtplib's `start_tls`: None upgrades when the server offers STARTTLS.
_START_TLS: dict[str, bool | None] = {"auto": None, "none": False, "starttls": True, "tls": False}


def _encrypted(client: aiosmtplib.SMTP) -> bool:
    return client.get_transport_info("sslcontext") is not None


async def smtp_send(smtp: SmtpSettings, message: EmailMessage) -> None:
    """Send one message; PermanentSmtpError for a 5xx or a password that would go out in clear
    text, ApplicationError (retryable) otherwise.

    TLS (CRMFLOW_SMTP_TLS): `tls` and `starttls` require it, with the server's certificate
    checked; `none` never uses it; unset (`auto`) upgrades with STARTTLS when the server offers
    it. Without a password that is opportunistic encryption (the certificate is not checked:
    never worse than the clear text it replaces, so a local relay with a self-signed
    certificate keeps working); with a password the certificate is checked, and a server that
    offers no STARTTLS is not sent the password at all."""
    client = aiosmtplib.SMTP(
        hostname=smtp.host,
        port=smtp.port,
        timeout=smtp.timeout,
        use_tls=smtp.tls == "tls",
        start_tls=_START_TLS[smtp.tls],
        validate_certs=smtp.tls != "auto" or smtp.password is not None,
    )
    where = f"{smtp.host}:{smtp.port}"
    try:
        await client.connect()
        if smtp.user is not None:
            if smtp.password is not None and smtp.tls == "auto" and not _encrypted(client):
                raise PermanentSmtpError(
                    f"SMTP {where} does not offer STARTTLS: the password is not sent in clear "
                    "text (CRMFLOW_SMTP_TLS=none allows it)"
                )
            await client.login(smtp.user, smtp.password or "")
        await client.send_message(message)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [error.code for error in exc.recipients]
        if codes and all(code >= 500 for code in codes):
            raise PermanentSmtpError(
                f"SMTP refused the email to {message['To']}: recipient refused: "
                f"{exc.recipients[0].message}"
            ) from None
        raise ApplicationError(f"SMTP: recipient deferred: {exc}", type="SmtpDeferred") from None
    except aiosmtplib.SMTPResponseException as exc:
        if exc.code >= 500:
            raise PermanentSmtpError(
                f"SMTP refused the email to {message['To']}: {exc.code} {exc.message}"
            ) from None
        raise ApplicationError(f"SMTP: {exc.code} {exc.message}", type="SmtpDeferred") from None
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise ApplicationError(
            f"SMTP {where}: {type(exc).__name__}: {exc}", type="SmtpConnection"
        ) from None
    finally:
        client.close()


class MessageActivities:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        smtp: SmtpSettings | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self.sessions = sessions
        self.smtp = smtp
        self.checkpoint = checkpoint or no_checkpoint

    @activity.defn(name="send_email")
    def send_email(self, input: ActionInput) -> ActionResult:
        if self.smtp is not None:
            return self._deliver(self.smtp, input)
        return run_once(self.sessions, input, lambda session: self._to_outbox(session, input))

    @activity.defn(name="create_task")
    def create_task(self, input: ActionInput) -> ActionResult:
        return run_once(self.sessions, input, lambda session: self._create_task(session, input))

    def _compose(
        self, session: Session, input: ActionInput, *, status: str
    ) -> OutboxMessage | ActionResult:
        """The outbox row of the email, or the permanent failure that stops it."""
        ctx, action = input.context, input.action
        if not isinstance(action, SendEmailAction | NotifyAction):
            raise TypeError(f"send_email cannot run a {action.type} action")
        record = RecordRepository(session).get(ctx.object_type, ctx.record_id)
        props = dict(record.properties) if record is not None else {}
        try:
            to_template = action.to if action.to else "{{ record.email }}"
            rendered_to = render_for(ctx, to_template, props)
            subject = one_line(render_for(ctx, action.subject, props))
            body = render_for(ctx, action.body, props)
        except TemplateProblem as exc:
            return ActionResult(outcome=f"failed: {exc}", failed=True)
        if not rendered_to.strip():
            return ActionResult(outcome="failed: the record has no email address", failed=True)
        try:
            to = single_mailbox(rendered_to)
        except InvalidAddress as exc:
            return ActionResult(outcome=f"failed: {exc}", failed=True)
        return OutboxMessage(
            enrollment_id=ctx.enrollment_id,
            action_id=action.id,
            kind="notification" if isinstance(action, NotifyAction) else "email",
            to=to,
            subject=subject,
            body=body,
            message_id=message_id(ctx, action.id),
            workflow_key=ctx.workflow_key,
            object_type=ctx.object_type,
            record_id=ctx.record_id,
            delivery_status=status,
            sent_at=input.at,
        )

    def _to_outbox(self, session: Session, input: ActionInput) -> ActionResult:
        message = self._compose(session, input, status="outbox")
        if isinstance(message, ActionResult):
            return message
        OutboxRepository(session).add(message)
        return ActionResult(
            outcome=f"email to {message.to}: {message.subject}", detail={"to": message.to}
        )

    def _deliver(self, smtp: SmtpSettings, input: ActionInput) -> ActionResult:
        ctx, action = input.context, input.action
        with self.sessions.begin() as session:
            step = EnrollmentRepository(session).step(ctx.enrollment_id, action.id)
            if step is not None and step.finished_at is not None:
                return result_of(step, input)
            prepared = self._prepare(smtp, session, input)
        if isinstance(prepared, ActionResult):
            failure = prepared
            return run_once(self.sessions, input, lambda session: failure)
        email, to, subject = prepared
        self.checkpoint("before_effect", input)
        try:
            asyncio.run(smtp_send(smtp, email))
        except PermanentSmtpError as exc:
            outcome, status = f"failed: {exc}", "failed"
        else:
            outcome, status = f"email to {to}: {subject} (sent over SMTP)", "sent"
            self.checkpoint("after_effect", input)

        def record(session: Session) -> ActionResult:
            row = OutboxRepository(session).for_action(ctx.enrollment_id, action.id)
            if row is not None:
                row.delivery_status = status
            return ActionResult(outcome=outcome, failed=status == "failed", detail={"to": to})

        return run_once(self.sessions, input, record)

    def _prepare(
        self, smtp: SmtpSettings, session: Session, input: ActionInput
    ) -> tuple[EmailMessage, str, str] | ActionResult:
        """The message to send (with its recipient and subject), stored as `sending` first; a
        `sending` row left by an earlier attempt is sent as it was stored. Or the permanent
        failure that stops it."""
        ctx, action = input.context, input.action
        outbox = OutboxRepository(session)
        stored = outbox.for_action(ctx.enrollment_id, action.id)
        if stored is None:
            composed = self._compose(session, input, status="sending")
            if isinstance(composed, ActionResult):
                return composed
            stored = outbox.add(composed)
        try:
            return smtp_message(smtp, stored), stored.to, stored.subject
        except InvalidAddress as exc:
            stored.delivery_status = "failed"
            return ActionResult(outcome=f"failed: {exc}", failed=True)

    def _create_task(self, session: Session, input: ActionInput) -> ActionResult:
        ctx, action = input.context, input.action
        if not isinstance(action, CreateTaskAction):
            raise TypeError(f"create_task cannot run a {action.type} action")
        record = RecordRepository(session).get(ctx.object_type, ctx.record_id)
        props = dict(record.properties) if record is not None else {}
        try:
            title = render_for(ctx, action.title, props)
            assignee = render_for(ctx, action.assignee, props).strip() if action.assignee else None
        except TemplateProblem as exc:
            return ActionResult(outcome=f"failed: {exc}", failed=True)
        due_at = input.at + action.due_in if action.due_in is not None else None
        TaskRepository(session).add(
            Task(
                enrollment_id=ctx.enrollment_id,
                action_id=action.id,
                title=title,
                assignee=assignee or None,
                due_at=due_at,
                workflow_key=ctx.workflow_key,
                object_type=ctx.object_type,
                record_id=ctx.record_id,
                created_at=input.at,
            )
        )
        due = f", due {due_at:%Y-%m-%d %H:%M} UTC" if due_at else ""
        return ActionResult(outcome=f"task '{title}'{due}")
