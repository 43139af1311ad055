"""The endpoints of SPEC §7, as routers for `create_app(routers=v1_routers(), services=app)`
(`services`: the `crmflow.services` App whose store and Temporal client the control endpoints
use)."""

from __future__ import annotations

from fastapi import APIRouter

from . import _records, _workflows


def v1_routers() -> list[APIRouter]:
    return [
        _records.ingest_router(),
        _records.records_read_router(),
        _workflows.publish_router(),
        _workflows.read_router(),
        _workflows.admin_router(),
    ]


__all__ = ["v1_routers"]
