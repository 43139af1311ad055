"""Retry and timeout policies of every activity, in one table."""

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
