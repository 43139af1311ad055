"""Retry and timeout policies of the activities (the interpreter's action table, `ACTIONS`,
says which action uses which)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.common import RetryPolicy

# Store actions: transient failures (database restarting, lock timeouts) retry with backoff for a
# day; after that the step is recorded as failed and the enrollment goes on (SPEC §3).
STORE_ACTION: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=60),
    "schedule_to_close_timeout": timedelta(days=1),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(minutes=5),
    ),
}

# Bookkeeping (steps, final status): local activities, cheap, retried until they succeed.
BOOKKEEPING: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(minutes=1),
    ),
}

# Outward actions (webhooks, custom handlers): retried with backoff (1 s, 2 s, 4 s, ... at most
# 5 min apart) for at most an hour, then recorded as failed. A 429's Retry-After sets the next
# delay instead. A webhook attempt may take its own `timeout` plus a minute (DNS, rate limit).
OUTWARD_RETRY_PERIOD = timedelta(hours=1)
OUTWARD: dict[str, Any] = {
    "start_to_close_timeout": timedelta(minutes=5),
    "schedule_to_close_timeout": OUTWARD_RETRY_PERIOD,
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(minutes=5),
    ),
}


# A run of the enrollment workflow continues as new once its history has this many events
# (or earlier, when Temporal suggests it: about 4,000 events or 4 MB by default), well below
# Temporal's hard limit of 51,200 events. Read at run time, so tests can lower it.
HISTORY_LIMIT = 10_000
