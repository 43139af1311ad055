"""What every service shares: its errors, checked arguments, loading a stored version, the
starter and signalling."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from crmflow.definitions import (
    InvalidInput,
    WorkflowDefinition,
    check_object_type,
    check_record_id,
    check_workflow_key,
)
from crmflow.enrolling import EnrollmentStarter, SignalFailed
from crmflow.store import (
    BrokenVersion,
    Enrollment,
    StoreError,
    WorkflowRepository,
    WorkflowVersion,
    stored_definition,
)

from ._app import App


class UserError(Exception):
    """Bad input: the CLI prints the message on one line and exits 2."""


class OperationFailed(Exception):
    """A well-formed request that could not be carried out: exit 1."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def checked(check: Callable[[Any], Any], value: Any, where: str = "") -> Any:
    """`check(value)` (a rule of `crmflow.definitions`), its refusal as bad input."""
    try:
        return check(value)
    except InvalidInput as exc:
        raise UserError(f"{where}: {exc}" if where else str(exc)) from None


def checked_key(key: str) -> None:
    checked(check_workflow_key, key)


def checked_record(object_type: str, record_id: str) -> None:
    checked(check_object_type, object_type)
    checked(check_record_id, record_id)


def load_version(app: App, key: str, version: int | None = None) -> tuple[WorkflowDefinition, int]:
    """A version's definition (the latest by default). A version stored before a validation
    rule that now refuses it is bad input to every command that needs it: exit 2, naming the
    key and version."""
    checked_key(key)
    with app.sessions() as session:
        try:
            found = WorkflowRepository(session).version(key, version)
            return stored_definition(found), found.version
        except StoreError as exc:
            raise UserError(str(exc)) from None


def broken_reason(row: WorkflowVersion) -> str | None:
    """Why a stored version no longer loads, or None."""
    try:
        stored_definition(row)
    except BrokenVersion as exc:
        return exc.reason
    return None


async def starter(app: App) -> EnrollmentStarter:
    return await app.starter()


async def _signal(
    app: App,
    enrollments: Sequence[Enrollment],
    send: Callable[[EnrollmentStarter, list[str]], Awaitable[int]],
    *,
    key: str,
    retry: str,
) -> int:
    """Signal enrollments; a signal Temporal refused (other than to a run that is over) is
    an operation failed, with what to run again."""
    if not enrollments:
        return 0
    try:
        return await send(await starter(app), [e.temporal_workflow_id for e in enrollments])
    except SignalFailed as exc:
        raise OperationFailed(f"{key}: {exc}; run `{retry}` again") from None
