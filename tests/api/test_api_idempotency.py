"""`Idempotency-Key` on POST: a retry gets the first response and writes nothing; another request
with the same key is refused; a retry during the first is 409; errors release the key."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from api_demo import Gate, all_routers, events_of, record_of
from api_problems import assert_problem
from api_servers import Api

from crmflow.api import ApiSettings


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
def api(start_api: Callable[..., Api], gate: Gate) -> Api:
    return start_api(routers=all_routers(), services=gate)


def post(client: httpx.Client, path: str, body: dict[str, Any], key: str) -> httpx.Response:
    return client.post(path, json=body, headers={"Idempotency-Key": key})


def test_a_retry_gets_the_first_response_and_writes_nothing(api: Api) -> None:
    client = api.as_scope("ingest")
    event = {"record_id": "ann", "name": "signed_up"}
    first = post(client, "/demo/events", event, "signup-ann-1")
    assert first.status_code == 202
    assert "idempotent-replayed" not in first.headers
    for _ in range(3):
        again = post(client, "/demo/events", event, "signup-ann-1")
        assert again.status_code == 202
        assert again.content == first.content
        assert again.headers["content-type"] == first.headers["content-type"]
        assert again.headers["idempotent-replayed"] == "true"
    assert events_of(api.store, "ann") == 1
    # Without the key, the same POST is a new request.
    assert client.post("/demo/events", json=event).json() != first.json()
    assert events_of(api.store, "ann") == 2


def test_the_first_response_is_returned_whole(api: Api) -> None:
    client = api.as_scope("ingest")
    body = {"id": "bob", "properties": {"plan": "pro"}}
    first = post(client, "/demo/records", body, "create-bob")
    assert first.status_code == 201 and first.json()["created"] is True
    again = post(client, "/demo/records", body, "create-bob")
    assert again.status_code == 201
    assert again.json() == first.json()  # "created": true, as the first time
    assert again.headers["location"] == first.headers["location"] == "/demo/records/contact/bob"


def test_the_same_key_for_another_request_is_422(api: Api) -> None:
    client = api.as_scope("ingest")
    post(client, "/demo/events", {"record_id": "ann", "name": "a"}, "reused")
    for path, body in [
        ("/demo/events", {"record_id": "ann", "name": "b"}),
        ("/demo/slow", {"record_id": "ann", "name": "a"}),
    ]:
        response = post(client, path, body, "reused")
        problem = assert_problem(response, 422, "idempotency-key-reused")
        assert problem["errors"] == [
            {"loc": ["header", "Idempotency-Key"], "msg": "used for a different request"}
        ]
    assert events_of(api.store, "ann") == 1


def test_keys_belong_to_the_api_key_that_sent_them(api: Api) -> None:
    event = {"record_id": "ann", "name": "signed_up"}
    first = post(api.as_scope("ingest"), "/demo/events", event, "shared")
    other = post(api.as_scope("ingest"), "/demo/events", event, "shared")
    assert "idempotent-replayed" not in other.headers
    assert other.json() != first.json()
    assert events_of(api.store, "ann") == 2


def test_a_retry_while_the_first_runs_is_409_then_replays(api: Api, gate: Gate) -> None:
    client = api.as_scope("ingest")
    event = {"record_id": "ann", "name": "signed_up"}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(post, client, "/demo/slow", event, "slow-1")
        assert gate.entered.wait(30)
        response = post(client, "/demo/slow", event, "slow-1")
        problem = assert_problem(response, 409, "idempotency-key-in-use")
        assert response.headers["retry-after"] == "1"
        assert "in progress" in problem["detail"]
        # Another body with the key in flight is the client's error, whatever the first does.
        other = post(client, "/demo/slow", {**event, "name": "other"}, "slow-1")
        assert_problem(other, 422, "idempotency-key-reused")
        gate.release.set()
        first = running.result(timeout=30)
    assert first.status_code == 202
    again = post(client, "/demo/slow", event, "slow-1")
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert gate.calls == 1
    assert events_of(api.store, "ann") == 1


def test_an_error_releases_the_key(api: Api) -> None:
    client = api.as_scope("ingest")
    # Refused by the endpoint after it wrote: nothing kept, and a retry runs again.
    for _ in range(2):
        response = post(client, "/demo/conflict-after-write", {"id": "ann"}, "k-conflict")
        assert_problem(response, 409, "conflict")
        assert "idempotent-replayed" not in response.headers
    assert record_of(api.store, "ann") is None
    # An invalid request does not take the key: the corrected request may use it.
    response = post(client, "/demo/events", {"record_id": "ann"}, "k-fixed")
    assert_problem(response, 422, "invalid-request")
    response = post(client, "/demo/events", {"record_id": "ann", "name": "ok"}, "k-fixed")
    assert response.status_code == 202
    # An unexpected error neither.
    response = post(client, "/demo/fail-after-write", {"id": "zed"}, "k-fail")
    assert_problem(response, 500, "internal-error")
    response = post(client, "/demo/fail-after-write", {"id": "zed"}, "k-fail")
    assert_problem(response, 500, "internal-error")
    assert record_of(api.store, "zed") is None


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9"])
def test_a_malformed_key_is_422(api: Api, key: str) -> None:
    response = api.as_scope("ingest").post(
        "/demo/events",
        json={"record_id": "ann", "name": "a"},
        headers={"Idempotency-Key": key.encode("utf-8")},
    )
    body = assert_problem(response, 422, "invalid-request")
    assert body["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    assert events_of(api.store, "ann") == 0


def until(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_stored_responses_expire(start_api: Callable[..., Api]) -> None:
    api = start_api(routers=all_routers(), settings=ApiSettings(idempotency_ttl_seconds=0.3))
    client = api.as_scope("ingest")
    event = {"record_id": "ann", "name": "signed_up"}
    first = post(client, "/demo/events", event, "short-lived")

    def forgotten() -> bool:
        response = post(client, "/demo/events", event, "short-lived")
        return "idempotent-replayed" not in response.headers

    until(forgotten, "the stored response to expire")
    assert events_of(api.store, "ann") == 2
    assert first.status_code == 202


def test_a_request_that_outlives_its_hold_cannot_commit(
    start_api: Callable[..., Api], gate: Gate
) -> None:
    api = start_api(
        routers=all_routers(), services=gate, settings=ApiSettings(idempotency_hold_seconds=0.3)
    )
    client = api.as_scope("ingest")
    event = {"record_id": "ann", "name": "signed_up"}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(post, client, "/demo/slow", event, "held")
        assert gate.entered.wait(30)
        retried: list[httpx.Response] = []

        def taken_over() -> bool:
            response = post(client, "/demo/slow", event, "held")
            retried.append(response)
            return response.status_code != 409

        # The first request holds the key for 0.3 s, then a retry takes it over and runs.
        until(taken_over, "a retry to take the key over")
        assert retried[-1].status_code == 202
        gate.release.set()
        first = stuck.result(timeout=30)
    body = assert_problem(first, 409, "idempotency-key-in-use")
    assert "nothing it did was kept" in body["detail"]
    assert events_of(api.store, "ann") == 1
    again = post(client, "/demo/slow", event, "held")
    assert again.json() == retried[-1].json()
    assert again.headers["idempotent-replayed"] == "true"


def test_other_methods_ignore_the_header(api: Api) -> None:
    client = api.as_scope("ingest")
    for value in (1, 2):
        response = client.put(
            "/demo/records/contact/ann",
            json={"properties": {"v": value}},
            headers={"Idempotency-Key": "same"},
        )
        assert response.json()["properties"] == {"v": value}
