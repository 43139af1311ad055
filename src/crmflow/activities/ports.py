"""What the activities that enroll need from the layer above them, as a protocol: the worker's
wiring passes in the one starter of `crmflow.enrolling` (so no activity imports it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Select

from crmflow.definitions import WorkflowDefinition


@dataclass(frozen=True)
class EnrollOutcome:
    """What happened to one record of an enroll or unenroll request."""

    record_id: str
    ok: bool
    message: str
    temporal_workflow_id: str | None = None


# One record's outcome in a fan-out: the outcome, or the exception that stopped it.
Outcome = EnrollOutcome | Exception


class Enroller(Protocol):
    async def start(
        self,
        definition: WorkflowDefinition,
        version: int,
        record_id: str,
        *,
        source: str,
        origin: str | None = None,
    ) -> EnrollOutcome: ...

    async def unenroll(self, workflow_ids: Iterable[str], reason: str) -> int: ...

    async def enroll_selected(
        self,
        definition: WorkflowDefinition,
        version: int,
        selection: Select[Any],
        *,
        source: str,
        on_outcome: Callable[[str, Outcome], None],
        after: str | None = None,
        on_page: Callable[[str], Awaitable[None] | None] | None = None,
    ) -> None: ...
