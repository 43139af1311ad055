"""Custom action handlers the tests register through CRMFLOW_ACTIONS."""

from __future__ import annotations

import threading
from typing import Any

calls: list[dict[str, Any]] = []
failures_left = {"flaky": 0}


def score(ctx: Any) -> dict[str, Any]:
    calls.append(
        {
            "record_id": ctx.record_id,
            "params": dict(ctx.params),
            "workflow": ctx.enrollment.workflow_key,
            "key": ctx.idempotency_key,
        }
    )
    points = int(ctx.params.get("points", 1))
    return {"score": int(ctx.record.get("score", 0)) + points, "scored_by": "custom"}


def nothing(ctx: Any) -> None:
    calls.append({"record_id": ctx.record_id, "params": dict(ctx.params), "key": ""})


def flaky(ctx: Any) -> dict[str, Any]:
    if failures_left["flaky"] > 0:
        failures_left["flaky"] -= 1
        raise ConnectionError("CRM API unavailable")
    return {"synced": True}


def broken(ctx: Any) -> dict[str, Any]:
    raise ValueError("always broken")


def bad_return(ctx: Any) -> Any:
    return ["not", "a", "mapping"]


slow_started = threading.Event()
slow_release = threading.Event()
slow_calls: list[dict[str, Any]] = []


def slow(ctx: Any) -> dict[str, Any]:
    """Runs until the test releases it (at most 45 s: longer than SQLite's 30 s busy timeout)."""
    slow_calls.append(dict(ctx.record))
    slow_started.set()
    if not slow_release.wait(45):
        raise TimeoutError("the test never released the slow handler")
    return {"synced": "slow"}
