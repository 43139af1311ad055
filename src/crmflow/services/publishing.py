"""Publishing a definition given as text (`POST /v1/workflows`), and the App of an API process."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from temporalio.client import Client

from crmflow.definitions import DefinitionError, load_definition_data, load_definition_text
from crmflow.store import StoreError, WorkflowRepository

from ._app import App
from ._base import OperationFailed, UserError, utcnow
from .schedules import sync_schedule
from .workflows import Published, definition_json


class TemporalUnreachable(OperationFailed):
    """Temporal did not answer (the API answers 503)."""


class ServiceApp(App):
    """The App of an API process: a failed connection to Temporal is `TemporalUnreachable`."""

    async def client(self) -> Client:
        try:
            return await super().client()
        except RuntimeError as exc:  # how the SDK reports a failed connection
            raise TemporalUnreachable(
                f"cannot reach Temporal at {self.settings.temporal_address}"
            ) from exc


async def publish_source(
    app: App, source: str, *, source_name: str, fmt: Literal["yaml", "json"]
) -> Published:
    """Validate a definition given as text (`fmt`: 'yaml' or 'json') and store a new version,
    as `crmflow publish` does a file: what the version stores is read back and validated
    before the transaction commits; an active scheduled workflow's Schedule follows."""
    definition = load_definition_text(source, source_name=source_name, fmt=fmt)
    with app.sessions() as session:
        before = {w.key: v.trigger for w, v in WorkflowRepository(session).all() if w.active}
    with app.sessions.begin() as session:
        workflows = WorkflowRepository(session)
        try:
            version = workflows.publish(
                key=definition.key,
                name=definition.name,
                object_type=definition.object_type,
                trigger=definition.enrollment.trigger,
                definition=definition_json(definition),
                source=source,
                source_name=source_name,
                now=utcnow(),
            )
        except StoreError as exc:
            raise UserError(f"{source_name}: {exc}") from None
        session.refresh(version, ["definition"])
        try:
            load_definition_data(version.definition, source_name=source_name)
        except DefinitionError as exc:
            raise DefinitionError(
                [replace(p, message=f"{p.message} (as stored)") for p in exc.problems]
            ) from None
        published = Published(definition.key, version.version, source_name)
    if definition.key in before and "schedule" in (
        before[definition.key],
        definition.enrollment.trigger,
    ):
        await sync_schedule(app, published.key, active=True)
    return published
