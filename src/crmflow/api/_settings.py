"""Settings of the HTTP API. Plain data: whoever starts the API reads them (from the environment
or the command line) and hands them to `create_app`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MIB = 1024 * 1024


class ApiSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_body_bytes: int = Field(
        default=2 * MIB,
        gt=0,
        description="Largest request body accepted; a larger one is answered 413.",
    )
    rate_limit_per_second: float = Field(
        default=200.0,
        ge=0,
        description=(
            "Requests per second allowed to one API key, in each API process (a token bucket); "
            "0 turns the limit off."
        ),
    )
    rate_limit_burst: int = Field(
        default=400,
        ge=1,
        description="How many requests one key may make at once before the rate applies.",
    )
    key_cache_seconds: float = Field(
        default=2.0,
        ge=0,
        description=(
            "How long a process trusts what it last read about a key: a revoked key is "
            "refused by every process at most this long after the revoke."
        ),
    )
    key_last_used_every_seconds: float = Field(
        default=60.0,
        ge=0,
        description="A key's `last_used_at` is written at most this often.",
    )
    idempotency_ttl_seconds: float = Field(
        default=24 * 3600.0,
        gt=0,
        description="How long the response to a POST with an Idempotency-Key is kept.",
    )
    idempotency_hold_seconds: float = Field(
        default=60.0,
        gt=0,
        description=(
            "How long a request holds its Idempotency-Key while it runs; a retry after that "
            "runs the request again (the first one can then no longer commit)."
        ),
    )
    readiness_timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How long /readyz waits for the store and for Temporal.",
    )
    docs: bool = Field(default=True, description="Serve /docs and /openapi.json.")
    group_commit: bool = Field(
        default=True,
        description=(
            "Single-record upserts that arrive together share one store transaction (see "
            "`crmflow.api._group_commit`); off: one transaction per request."
        ),
    )
