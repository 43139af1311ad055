"""`/v1/workflows`: definitions, activation, enrollments and history (read: scope `read`;
changes: scope `admin`), over the same services as the CLI.

These endpoints talk to Temporal (start, signal, Schedules), so they work as the CLI does, in
the services' own transactions, not in the request's one: an enrollment's store row must be
committed before its workflow starts and reads it. A failure reaches the client as the CLI
reports it: bad input 422, an unknown workflow 404, an operation that could not be carried out
409, Temporal unreachable 503.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from temporalio.service import RPCError, RPCStatusCode

from crmflow import services
from crmflow.definitions import (
    DefinitionError,
    EnrollmentStatus,
    check_record_id,
    check_workflow_key,
)
from crmflow.services import App
from crmflow.services import publishing as _publishing
from crmflow.services import review as _review
from crmflow.services import schedules as _schedules
from crmflow.store import ApiScope, WorkflowRepository

from ._checks import Problems, path_checks
from ._problems import (
    CONFLICT,
    INVALID_REQUEST,
    NOT_FOUND,
    UNAVAILABLE,
    ApiProblem,
    Problem,
)
from ._routing import scoped_router
from ._routing import services as services_dependency

Services = Annotated[App, Depends(services_dependency)]
BATCH_MAX = 1000
DEFINITION_MEDIA_TYPES = ("application/json", "application/yaml")
# What a problem's path in a definition becomes in `loc`: `actions[2].next` -> actions, 2, next.
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")

WORKFLOW_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such workflow.", "model": Problem}
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ActivateBody(_Body):
    enroll_existing: bool = Field(
        default=False, description="Also enroll the records that match now (criteria)."
    )


class DeactivateBody(_Body):
    unenroll_all: bool = Field(default=False, description="End enrollments instead of pausing.")


class EnrollBody(_Body):
    record_ids: list[str] = Field(min_length=1, max_length=BATCH_MAX)


def _key(key: str) -> None:
    path_checks(("key", check_workflow_key, key))


def _require_workflow(app: App, key: str) -> None:
    """404 for an unknown workflow. Read in a session of the services, not the request's: on
    SQLite the request's (writing) transaction would hold the lock the services then need."""
    _key(key)
    with app.sessions() as session:
        found = WorkflowRepository(session).get(key)
    if found is None:
        raise ApiProblem(
            NOT_FOUND, f"no workflow '{key}'", errors=[(["path", "key"], "no such workflow")]
        )


@contextmanager
def service_errors(loc: list[str | int]) -> Iterator[None]:
    """The CLI's errors as problems: bad input (exit 2) 422 at `loc`, a failed operation
    (exit 1) 409, Temporal unreachable 503."""
    try:
        yield
    except DefinitionError as exc:
        raise _definition_problem(exc) from None
    except _publishing.TemporalUnreachable as exc:
        raise ApiProblem(UNAVAILABLE, str(exc), headers={"Retry-After": "5"}) from None
    except services.UserError as exc:
        raise ApiProblem(INVALID_REQUEST, str(exc), errors=[(loc, str(exc))]) from None
    except services.OperationFailed as exc:
        if temporal_down(exc):
            raise _temporal_unavailable(exc) from None
        raise ApiProblem(CONFLICT, str(exc)) from None
    except RPCError as exc:
        if temporal_down(exc):
            raise _temporal_unavailable(exc) from None
        raise


# How the SDK reports a server that does not answer (connection refused or lost, no answer in
# time), on a client connected earlier (as `crmflow up` hands the API its dev server's).
_DOWN = {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED}


def temporal_down(exc: BaseException) -> bool:
    """Whether `exc` is, or was caused by, Temporal not answering."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, RPCError) and seen.status in _DOWN:
            return True
        seen = seen.__cause__
    return False


def _temporal_unavailable(exc: BaseException) -> ApiProblem:
    return ApiProblem(
        UNAVAILABLE, f"Temporal did not answer; retry later ({exc})", headers={"Retry-After": "5"}
    )


def _definition_problem(exc: DefinitionError) -> ApiProblem:
    """The problems `crmflow validate` prints, each at `["body", <path in the document>]`."""
    errors: list[tuple[list[str | int], str]] = []
    for problem in exc.problems:
        loc: list[str | int] = ["body"]
        for name, index in _PATH_PART.findall(problem.path):
            loc.append(int(index) if index else name)
        errors.append((loc, str(problem)))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return ApiProblem(
        INVALID_REQUEST,
        f"the definition is not valid: {exc.problems[0]}{more}",
        errors=errors,
        extra={"problems": [str(p) for p in exc.problems]},
    )


def _definition_format(request: Request) -> Literal["yaml", "json"]:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return "yaml" if media_type == "application/yaml" else "json"


def read_router() -> APIRouter:
    router = scoped_router(ApiScope.READ, prefix="/v1/workflows", tags=["workflows"])

    @router.get("", summary="Every workflow at its latest version (as `workflows --json`)")
    async def list_workflows(app: Services) -> list[dict[str, Any]]:
        with service_errors([]):
            return [summary.as_json() for summary in await services.list_workflows(app)]

    @router.get(
        "/{key}",
        summary="A version of a workflow (as `show KEY --json`)",
        responses=WORKFLOW_NOT_FOUND,
    )
    async def show_workflow(
        key: str,
        app: Services,
        version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    ) -> dict[str, Any]:
        _require_workflow(app, key)
        with service_errors(["query", "version"]):
            return (await services.show_workflow(app, key, version)).as_json()

    @router.get(
        "/{key}/enrollments",
        summary="Enrollments with status and steps (as `enrollments --json`)",
        responses=WORKFLOW_NOT_FOUND,
    )
    def list_enrollments(
        key: str,
        app: Services,
        record_id: str | None = None,
        status: EnrollmentStatus | None = None,
    ) -> list[dict[str, Any]]:
        _require_workflow(app, key)
        if record_id is not None:
            path_checks(("record_id", check_record_id, record_id))
        with service_errors([]):
            found = services.list_enrollments(app, key, record_id=record_id, status=status)
            return [enrollment.as_json() for enrollment in found]

    @router.get(
        "/{key}/records/{record_id}/history",
        summary="One record in a workflow: each enrollment's steps, and why it is (not) "
        "enrolled now",
        responses=WORKFLOW_NOT_FOUND,
    )
    def history(key: str, record_id: str, app: Services) -> dict[str, Any]:
        _require_workflow(app, key)
        path_checks(("record_id", check_record_id, record_id))
        with service_errors(["path", "record_id"]):
            found = services.history(app, key, record_id).as_json()
        why = found["explanation"]
        found["explanation"] = "; ".join([why["message"], *why["details"]])
        found["why"] = why
        return found

    @router.get(
        "/{key}/review",
        summary="How many records match now, and what activation would do (as `review`)",
        responses=WORKFLOW_NOT_FOUND,
    )
    def review(key: str, app: Services) -> dict[str, Any]:
        _require_workflow(app, key)
        with service_errors(["path", "key"]):
            return _review.review(app, key, list_records=False, save_list=None).as_json()

    @router.get(
        "/{key}/schedule",
        summary="The next run times of a scheduled workflow (as `schedule KEY --json`)",
        responses=WORKFLOW_NOT_FOUND,
    )
    def schedule(
        key: str,
        app: Services,
        next: Annotated[int, Query(ge=1, le=100)] = 5,
    ) -> list[str]:
        _require_workflow(app, key)
        with service_errors(["path", "key"]):
            return [t.isoformat() for t in _schedules.next_runs(app, key, next)]

    return router


def admin_router() -> APIRouter:
    router = scoped_router(ApiScope.ADMIN, prefix="/v1/workflows", tags=["workflows"])

    @router.post(
        "/{key}/activate",
        summary="Activate a workflow; resume its paused enrollments",
        responses=WORKFLOW_NOT_FOUND,
    )
    async def activate(key: str, app: Services, body: ActivateBody | None = None) -> dict[str, Any]:
        _require_workflow(app, key)
        body = body or ActivateBody()
        with service_errors(["body", "enroll_existing"]):
            result = await services.activate(app, key, enroll_existing=body.enroll_existing)
        return {
            "key": key,
            "active": True,
            "resumed": result.resumed,
            "existing": result.existing.as_json() if result.existing else None,
        }

    @router.post(
        "/{key}/deactivate",
        summary="Deactivate a workflow: pause (or end) its running enrollments",
        responses=WORKFLOW_NOT_FOUND,
    )
    async def deactivate(
        key: str, app: Services, body: DeactivateBody | None = None
    ) -> dict[str, Any]:
        _require_workflow(app, key)
        body = body or DeactivateBody()
        with service_errors(["path", "key"]):
            result = await services.deactivate(app, key, unenroll_all=body.unenroll_all)
        return {
            "key": key,
            "active": False,
            "paused": result.paused,
            "unenrolled": result.unenrolled,
        }

    @router.post(
        "/{key}/enrollments",
        summary="Enroll records now (manual enrollment)",
        responses=WORKFLOW_NOT_FOUND,
    )
    async def enroll(key: str, body: EnrollBody, app: Services) -> list[dict[str, Any]]:
        _require_workflow(app, key)
        problems = Problems()
        for index, record_id in enumerate(body.record_ids):
            problems.check(["body", "record_ids", index], check_record_id, record_id)
        problems.raise_any()
        with service_errors(["body", "record_ids"]):
            outcomes = await services.enroll(app, key, body.record_ids)
        return [
            {
                "record_id": o.record_id,
                "enrolled": o.ok,
                "reason": None if o.ok else o.message,
                "temporal_workflow_id": o.temporal_workflow_id,
            }
            for o in outcomes
        ]

    @router.delete(
        "/{key}/enrollments/{record_id}",
        summary="Unenroll a record (200), or 404 when it is not enrolled",
        responses=WORKFLOW_NOT_FOUND,
    )
    async def unenroll(key: str, record_id: str, app: Services) -> dict[str, Any]:
        _require_workflow(app, key)
        path_checks(("record_id", check_record_id, record_id))
        with service_errors(["path", "record_id"]):
            (outcome,) = await services.unenroll(app, key, [record_id])
        if outcome.temporal_workflow_id is None and not outcome.ok:
            raise ApiProblem(
                NOT_FOUND,
                outcome.message,
                errors=[(["path", "record_id"], "not enrolled")],
            )
        if not outcome.ok:
            raise ApiProblem(CONFLICT, outcome.message)
        return {
            "record_id": record_id,
            "unenrolled": True,
            "message": outcome.message,
            "temporal_workflow_id": outcome.temporal_workflow_id,
        }

    return router


def publish_router() -> APIRouter:
    router = scoped_router(
        ApiScope.ADMIN,
        prefix="/v1/workflows",
        tags=["workflows"],
        media_types=DEFINITION_MEDIA_TYPES,
    )

    @router.post(
        "",
        status_code=201,
        summary="Publish a definition (YAML or JSON): a new version",
        description="The body is a definition file's text, `application/yaml` or "
        "`application/json`. 422 lists the problems `crmflow validate` prints, each with "
        "its line and path (the file is named `body`).",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/yaml": {"schema": {"type": "string"}},
                    "application/json": {"schema": {"type": "object"}},
                },
            }
        },
    )
    async def publish(request: Request, app: Services) -> JSONResponse:
        raw = await request.body()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ApiProblem(
                INVALID_REQUEST,
                f"the body is not UTF-8 (byte {exc.start})",
                errors=[(["body"], "not UTF-8")],
            ) from None
        with service_errors(["body"]):
            published = await _publishing.publish_source(
                app, text, source_name="body", fmt=_definition_format(request)
            )
        return JSONResponse(
            {"key": published.key, "version": published.version},
            status_code=201,
            headers={"Location": f"/v1/workflows/{published.key}"},
        )

    return router
