"""Repository of workflow definitions: immutable versions and activation state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crmflow.definitions import WorkflowDefinition

from ._records import StoreError
from ._tables import Workflow, WorkflowVersion


class WorkflowNotFound(StoreError):
    def __init__(self, key: str, version: int | None = None) -> None:
        what = f"workflow '{key}'" + (f" version {version}" if version is not None else "")
        super().__init__(f"no {what}")
        self.key = key
        self.version = version


class BrokenVersion(StoreError):
    """A stored version whose definition no longer loads (stored before a validation rule
    that now refuses it): nothing can run it; a new version must be published."""

    def __init__(self, key: str, version: int, reason: str) -> None:
        super().__init__(
            f"workflow '{key}' version {version} is broken: its stored definition no longer "
            f"loads ({reason}); publish a corrected version"
        )
        self.key = key
        self.version = version
        self.reason = reason


def _first_problem(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False)
        if errors:
            first = errors[0]
            where = ".".join(str(part) for part in first["loc"]) or "definition"
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            return f"{where}: {first['msg']}{more}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def stored_definition(row: WorkflowVersion) -> WorkflowDefinition:
    """The definition of a stored version; BrokenVersion when it no longer loads."""
    try:
        return WorkflowDefinition.model_validate(row.definition)
    except (ValidationError, ValueError, TypeError, RecursionError) as exc:
        raise BrokenVersion(row.key, row.version, _first_problem(exc)) from None


class WorkflowRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def publish(
        self,
        *,
        key: str,
        name: str,
        object_type: str,
        trigger: str,
        definition: dict[str, Any],
        source: str,
        source_name: str,
        now: datetime,
    ) -> WorkflowVersion:
        """Store a new immutable version (1, 2, …) of the workflow `key`."""
        workflow = self.session.get(Workflow, key, with_for_update=True)
        if workflow is None:
            workflow = Workflow(key=key, latest_version=0, active=False)
            self.session.add(workflow)
        else:
            previous = self.version(key)
            if previous.object_type != object_type:
                raise StoreError(
                    f"workflow '{key}' enrolls {previous.object_type} records; "
                    "a new version cannot "
                    f"change object_type to {object_type} (publish it under another key)"
                )
        workflow.latest_version += 1
        version = WorkflowVersion(
            key=key,
            version=workflow.latest_version,
            name=name,
            object_type=object_type,
            trigger=trigger,
            definition=definition,
            source=source,
            source_name=source_name,
            published_at=now,
        )
        self.session.add(version)
        self.session.flush()
        return version

    def get(self, key: str, *, for_update: bool = False) -> Workflow | None:
        return self.session.get(Workflow, key, with_for_update=for_update)

    def require(self, key: str, *, for_update: bool = False) -> Workflow:
        workflow = self.get(key, for_update=for_update)
        if workflow is None:
            raise WorkflowNotFound(key)
        return workflow

    def version(self, key: str, version: int | None = None) -> WorkflowVersion:
        """A version, or the latest one."""
        if version is None:
            version = self.require(key).latest_version
        found = self.session.get(WorkflowVersion, (key, version))
        if found is None:
            raise WorkflowNotFound(key, version)
        return found

    def definition(self, key: str, version: int | None = None) -> WorkflowDefinition:
        """The definition of a version (the latest by default). Raises WorkflowNotFound, or
        BrokenVersion when its stored definition no longer loads."""
        return stored_definition(self.version(key, version))

    def all(self) -> list[tuple[Workflow, WorkflowVersion]]:
        stmt = (
            select(Workflow, WorkflowVersion)
            .join(
                WorkflowVersion,
                (WorkflowVersion.key == Workflow.key)
                & (WorkflowVersion.version == Workflow.latest_version),
            )
            .order_by(Workflow.key)
        )
        return [(w, v) for w, v in self.session.execute(stmt)]

    def versions(self, key: str) -> list[WorkflowVersion]:
        return list(
            self.session.scalars(
                select(WorkflowVersion)
                .where(WorkflowVersion.key == key)
                .order_by(WorkflowVersion.version)
            )
        )

    def set_active(self, key: str, active: bool, *, now: datetime) -> Workflow:
        workflow = self.require(key, for_update=True)
        workflow.active = active
        if active:
            workflow.activated_at = now
        else:
            workflow.deactivated_at = now
        self.session.flush()
        return workflow

    def remove(self, key: str) -> None:
        """Delete the workflow with its versions, enrollments, steps and runs (the emails and
        tasks it produced stay, detached)."""
        self.session.delete(self.require(key, for_update=True))
        self.session.flush()

    def generation(self) -> tuple[object, ...]:
        """A value that changes whenever a publish, activation or deactivation happens."""
        versions = select(func.count()).select_from(WorkflowVersion).scalar_subquery()
        return tuple(
            self.session.execute(
                select(versions, func.max(Workflow.activated_at), func.max(Workflow.deactivated_at))
            ).one()
        )
