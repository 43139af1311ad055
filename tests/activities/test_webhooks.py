"""The webhook action in real enrollments, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from temporalio.exceptions import ApplicationError
from tests_support import enroll_one, result_of, steps_of

from crmflow import services
from crmflow.activities._secrets import Secrets
from crmflow.activities.config import OutwardSettings
from crmflow.activities.webhooks import (
    RateLimiter,
    Refused,
    checked_address,
    classify,
    forbidden_address,
    retry_after,
)
from crmflow.store import Enrollment, EnrollmentRepository

ALLOW = OutwardSettings(allow_private_webhooks=True)


def hook(path_url: str, **fields: Any) -> dict[str, Any]:
    return {
        "key": "hooks",
        "name": "Hooks",
        "enrollment": {"trigger": "manual"},
        "actions": [
            {"id": "call", "type": "webhook", "url": path_url, **fields},
            {"id": "after", "type": "set_property", "property": "called", "value": "yes"},
        ],
    }


async def run_hook(app, env, new_worker, publish, definition, *, outward=ALLOW):
    await publish(definition)
    services.set_record(app, "contact", "ann", {"firstname": "Ann", "email": "ann@example.com"})
    async with new_worker(outward=outward):
        result = await result_of(env, await enroll_one(app, "hooks", "ann"))
    assert result.status == "completed"
    steps = steps_of(app, "hooks")
    # The enrollment always goes on after the webhook, whatever its outcome.
    assert services.show_record(app, "contact", "ann")["properties"]["called"] == "yes"
    return steps["call"]


async def test_delivers_method_headers_templated_body_and_an_idempotency_key(
    app, env, new_worker, publish, receiver, monkeypatch
):
    monkeypatch.setenv("CRMFLOW_SECRET_TEST_TOKEN", "s3cret")
    definition = hook(
        receiver.url("/ok"),
        method="PUT",
        headers={
            "Authorization": "Bearer ${env:CRMFLOW_SECRET_TEST_TOKEN}",
            "X-Who": "{{ record.firstname }}",
        },
        body={"name": "{{ record.firstname }}", "workflow": "{{ workflow.key }}", "n": 3},
    )
    outcome = await run_hook(app, env, new_worker, publish, definition)
    assert outcome == f"PUT {receiver.url('/ok')}: 200"
    [request] = receiver.requests
    assert request.method == "PUT"
    assert request.headers["authorization"] == "Bearer s3cret"
    assert request.headers["x-who"] == "Ann"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"].startswith("crmflow-")
    assert request.json() == {"name": "Ann", "workflow": "hooks", "n": 3}
    # The secret stays in the worker: not in the stored definition nor the Temporal history.
    [enrollment] = services.list_enrollments(app, "hooks")
    history = await env.client.get_workflow_handle(
        enrollment["temporal_workflow_id"]
    ).fetch_history()
    events = "".join(str(event) for event in history.events)  # payloads as (escaped) text
    assert "${env:CRMFLOW_SECRET_TEST_TOKEN}" in events
    assert "s3cret" not in events


async def test_5xx_is_retried_with_the_same_idempotency_key(
    app, env, new_worker, publish, receiver
):
    outcome = await run_hook(app, env, new_worker, publish, hook(receiver.url("/flaky")))
    assert outcome.endswith(": 200")
    assert len(receiver.requests) == 3
    with app.sessions() as session:
        [enrollment] = session.scalars(select(Enrollment)).all()
        step = EnrollmentRepository(session).step(enrollment.id, "call")
        assert step.detail == {"status": 200, "attempt": 3}
    assert len({r.headers["idempotency-key"] for r in receiver.requests}) == 1


async def test_429_is_retried_after_retry_after(app, env, new_worker, publish, receiver):
    outcome = await run_hook(app, env, new_worker, publish, hook(receiver.url("/throttle")))
    assert outcome.endswith(": 200")
    assert len(receiver.requests) == 2
    assert len({r.headers["idempotency-key"] for r in receiver.requests}) == 1


async def test_404_is_recorded_as_the_step_failure_without_retry(
    app, env, new_worker, publish, receiver
):
    outcome = await run_hook(app, env, new_worker, publish, hook(receiver.url("/missing")))
    assert outcome == f"failed: POST {receiver.url('/missing')}: 404 Not Found"
    assert len(receiver.requests) == 1


async def test_a_hanging_server_times_out_and_is_retried(app, env, new_worker, publish, receiver):
    outcome = await run_hook(
        app, env, new_worker, publish, hook(receiver.url("/hang"), timeout="1s")
    )
    assert outcome.endswith(": 200")
    assert len(receiver.requests) == 2
    assert len({r.headers["idempotency-key"] for r in receiver.requests}) == 1


async def test_a_server_down_for_the_whole_retry_period_is_recorded_as_failed(
    app, env, new_worker, publish, receiver
):
    outcome = await run_hook(app, env, new_worker, publish, hook(receiver.url("/down")))
    assert outcome.startswith("failed after retries:")
    assert "503" in outcome
    assert len(receiver.requests) > 3


async def test_loopback_is_refused_without_the_setting(app, env, new_worker, publish, receiver):
    outcome = await run_hook(
        app, env, new_worker, publish, hook(receiver.url("/ok")), outward=OutwardSettings()
    )
    assert outcome.startswith("failed: 127.0.0.1 is a private, loopback or link-local address")
    assert "CRMFLOW_ALLOW_PRIVATE_WEBHOOKS=1" in outcome
    assert receiver.requests == []


async def test_a_missing_env_variable_is_a_permanent_failure(
    app, env, new_worker, publish, receiver, monkeypatch
):
    monkeypatch.delenv("CRMFLOW_SECRET_UNSET", raising=False)
    definition = hook(receiver.url("/ok"), headers={"X-Key": "${env:CRMFLOW_SECRET_UNSET}"})
    outcome = await run_hook(app, env, new_worker, publish, definition)
    assert outcome == "failed: environment variable CRMFLOW_SECRET_UNSET is not set on the worker"
    assert receiver.requests == []


async def test_rate_limited_requests_all_arrive(app, env, new_worker, publish, receiver):
    await publish(hook(receiver.url("/ok")))
    for name in ("a", "b", "c", "d"):
        services.set_record(app, "contact", name, {"email": f"{name}@example.com"})
    async with new_worker(outward=OutwardSettings(allow_private_webhooks=True, webhook_rate=5)):
        ids = [await enroll_one(app, "hooks", name) for name in ("a", "b", "c", "d")]
        for workflow_id in ids:
            assert (await result_of(env, workflow_id)).status == "completed"
    assert len(receiver.requests) == 4
    assert len({r.headers["idempotency-key"] for r in receiver.requests}) == 4


async def test_a_queue_longer_than_an_attempt_waits_in_the_workflow_and_drops_nothing(
    app, env, new_worker, publish, receiver, monkeypatch
):
    """Past `max_wait` of queue, an attempt stores nothing and tells the workflow when to come
    back; the workflow waits on a timer (no retry used up) and every request still arrives."""
    from functools import partial

    from crmflow.activities import webhooks

    monkeypatch.setattr(webhooks, "RateLimiter", partial(RateLimiter, max_wait=0.2))
    await publish(hook(receiver.url("/ok")))
    names = [f"r{i}" for i in range(5)]
    for name in names:
        services.set_record(app, "contact", name, {"email": f"{name}@example.com"})
    async with new_worker(outward=OutwardSettings(allow_private_webhooks=True, webhook_rate=4)):
        ids = [await enroll_one(app, "hooks", name) for name in names]
        results = [await result_of(env, workflow_id) for workflow_id in ids]
        histories = [await env.client.get_workflow_handle(i).fetch_history() for i in ids]
    assert {r.status for r in results} == {"completed"}
    assert len(receiver.to("/ok")) == 5
    assert len({r.headers["idempotency-key"] for r in receiver.to("/ok")}) == 5
    queued = [
        e
        for h in histories
        for e in h.events
        if e.HasField("timer_started_event_attributes")
        and "requests queued" in e.user_metadata.summary.data.decode()
    ]
    assert queued, "no enrollment waited for its turn in the workflow"
    for index in range(5):
        assert steps_of(app, "hooks", index)["call"].endswith(": 200")


# ------------------------------------------------------------------------------ units


def test_addresses_that_are_not_public_are_forbidden():
    for address in (
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "172.16.0.1",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "fc00::1",
        "0.0.0.0",
        "100.64.0.1",
        "::ffff:127.0.0.1",
        "224.0.0.1",
    ):
        assert forbidden_address(address), address
    for address in ("93.184.216.34", "8.8.8.8", "2606:4700::1111"):
        assert not forbidden_address(address), address


# (address, why it is refused): IPv6 forms that embed a non-public IPv4 address.
EMBEDDED_PRIVATE = [
    ("64:ff9b::7f00:1", "NAT64 well-known prefix to 127.0.0.1"),
    ("64:ff9b::a9fe:a9fe", "NAT64 to 169.254.169.254 (cloud metadata)"),
    ("64:ff9b::c0a8:1", "NAT64 to 192.168.0.1"),
    ("64:ff9b:1::808:808", "local-use NAT64 prefix, refused whole"),
    ("64:ff9b:1:7f00:1::", "local-use NAT64 /48 with 127.0.0.1 in it"),
    ("2002:7f00:1::", "6to4 of 127.0.0.1"),
    ("2002:a00:1::1", "6to4 of 10.0.0.1"),
    ("2002:a9fe:a9fe::", "6to4 of 169.254.169.254"),
    ("::7f00:1", "IPv4-compatible 127.0.0.1"),
    ("::a00:1", "IPv4-compatible 10.0.0.1"),
    ("::ffff:0:7f00:1", "IPv4-translated (SIIT) 127.0.0.1"),
    ("::ffff:0:a9fe:a9fe", "IPv4-translated (SIIT) 169.254.169.254"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo, client 127.0.0.1"),
    ("2001:0:a00:1::", "Teredo, server 10.0.0.1"),
    ("2606:4700::5efe:a00:1", "ISATAP interface id with 10.0.0.1"),
    ("2606:4700::200:5efe:7f00:1", "ISATAP (universal bit) with 127.0.0.1"),
    ("::ffff:10.1.2.3", "IPv4-mapped 10.1.2.3"),
]
EMBEDDED_PUBLIC = [
    ("64:ff9b::808:808", "NAT64 to 8.8.8.8"),
    ("::ffff:8.8.8.8", "IPv4-mapped 8.8.8.8"),
    ("2606:4700::1111", "plain public IPv6"),
]


@pytest.mark.parametrize(("address", "why"), EMBEDDED_PRIVATE)
def test_ipv6_forms_embedding_a_private_ipv4_address_are_forbidden(address, why):
    assert forbidden_address(address), why


@pytest.mark.parametrize(("address", "why"), EMBEDDED_PUBLIC)
def test_ipv6_forms_embedding_a_public_ipv4_address_are_allowed(address, why):
    assert not forbidden_address(address), why


async def test_a_nat64_literal_is_refused_before_any_connection():
    with pytest.raises(Refused, match="64:ff9b::7f00:1 is a private"):
        await checked_address("64:ff9b::7f00:1", 80)


async def test_a_name_is_checked_after_resolution():
    with pytest.raises(Refused, match="localhost resolves to .*, a private"):
        await checked_address("localhost", 80)


def test_env_references_are_resolved_but_never_from_a_rendered_property():
    def render(text: str) -> str:
        return text.replace("{{ record.x }}", "${env:CRMFLOW_SECRET_X}")

    env = {"CRMFLOW_SECRET_TOKEN": "t0k", "CRMFLOW_SECRET_X": "leak"}
    secrets = Secrets(env)
    assert secrets.resolve("Bearer ${env:CRMFLOW_SECRET_TOKEN}", render) == "Bearer t0k"
    assert secrets.resolve("{{ record.x }}", render) == "${env:CRMFLOW_SECRET_X}"


def test_retry_after_in_seconds_or_as_a_date_is_capped():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after("7", now=now) == timedelta(seconds=7)
    assert retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now=now) == timedelta(seconds=30)
    assert retry_after("99999", now=now) == timedelta(minutes=10)
    assert retry_after("soon", now=now) is None


def test_classification_of_responses():
    def response(status: int, **headers: str) -> httpx.Response:
        return httpx.Response(status, headers=headers)

    assert not classify(response(204), label="x").failed
    assert classify(response(410), label="x").failed
    assert classify(response(302, location="/y"), label="x").failed
    with pytest.raises(ApplicationError) as throttled:
        classify(response(429, **{"retry-after": "3"}), label="x")
    assert throttled.value.next_retry_delay == timedelta(seconds=3)
    assert not throttled.value.non_retryable
    with pytest.raises(ApplicationError) as server:
        classify(response(502), label="x")
    assert not server.value.non_retryable


def test_rate_limiter_spaces_requests_per_key_without_dropping():
    limiter = RateLimiter(4)
    delays = [limiter.delay("a") for _ in range(4)]
    assert delays[0] == 0
    assert all(later > earlier for earlier, later in zip(delays, delays[1:], strict=False))
    assert delays[3] == pytest.approx(0.75, abs=0.05)
    assert limiter.delay("b") == 0
    assert RateLimiter(None).delay("a") == 0


async def test_a_long_rate_limit_queue_is_waited_for_by_the_workflow():
    limiter = RateLimiter(1, max_wait=2)
    booked = [limiter.delay("a") for _ in range(3)]
    assert booked[0] == 0 and booked[2] > booked[1] > 0
    later = await limiter.turn("a")  # not booked: ask again in about three seconds
    assert later is not None and later > 2
    assert await RateLimiter(None).turn("a") is None


async def test_the_request_goes_to_the_checked_address_with_the_name_as_host(
    app, env, new_worker, publish, receiver, monkeypatch
):
    """With the address check on, the worker connects to the address it checked, never to a
    second DNS answer: a name that does not resolve at all reaches the receiver, because the
    (patched) check answered 127.0.0.1. The name stays in the Host header."""
    from crmflow.activities import webhooks

    checked: list[tuple[str, int]] = []

    async def check(host: str, port: int) -> str:
        checked.append((host, port))
        return "127.0.0.1"

    monkeypatch.setattr(webhooks, "checked_address", check)
    url = f"http://crmflow-test.invalid:{receiver.port}/ok"
    outcome = await run_hook(app, env, new_worker, publish, hook(url), outward=OutwardSettings())
    assert outcome == f"POST {url}: 200"
    assert checked == [("crmflow-test.invalid", receiver.port)]
    [request] = receiver.requests
    assert request.headers["host"] == f"crmflow-test.invalid:{receiver.port}"


async def test_a_line_break_in_a_header_is_a_permanent_failure_and_utf8_is_sent(
    app, env, new_worker, publish, receiver
):
    await publish(
        {
            "key": "hooks",
            "name": "Hooks",
            "enrollment": {"trigger": "manual"},
            "actions": [
                {
                    "id": "inject",
                    "type": "webhook",
                    "url": receiver.url("/inject"),
                    "headers": {"X-Who": "{{ record.firstname }}"},
                },
                {
                    "id": "utf8",
                    "type": "webhook",
                    "url": receiver.url("/utf8"),
                    "headers": {"X-Who": "{{ record.lastname }}"},
                },
            ],
        }
    )
    services.set_record(
        app, "contact", "ann", {"firstname": "Ann\r\nX-Injected: 1", "lastname": "Müller"}
    )
    async with new_worker(outward=ALLOW):
        result = await result_of(env, await enroll_one(app, "hooks", "ann"))
    assert result.status == "completed"
    steps = steps_of(app, "hooks")
    assert steps["inject"] == "failed: header X-Who: the value contains a line break"
    assert steps["utf8"] == f"POST {receiver.url('/utf8')}: 200"
    assert receiver.to("/inject") == []
    [request] = receiver.to("/utf8")
    assert request.headers["x-who"].encode("latin-1").decode() == "Müller"
