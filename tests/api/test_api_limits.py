"""413 over the body-size limit (with and without Content-Length), 429 over a key's rate."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from api_demo import Gate, all_routers, record_of
from api_problems import assert_problem
from api_servers import Api

from crmflow.api import ApiSettings

LIMIT = 64 * 1024


@pytest.fixture
def api(start_api: Callable[..., Api]) -> Api:
    return start_api(
        routers=all_routers(), services=Gate(), settings=ApiSettings(max_body_bytes=LIMIT)
    )


def record_body(size: int) -> bytes:
    """A JSON body for POST /demo/records of exactly `size` bytes."""
    empty = json.dumps({"id": "ann", "properties": {"pad": ""}}).encode()
    body = json.dumps({"id": "ann", "properties": {"pad": "x" * (size - len(empty))}}).encode()
    assert len(body) == size
    return body


def chunks(body: bytes, size: int = 8192) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


JSON_TYPE = {"Content-Type": "application/json"}


def test_a_body_at_the_limit_is_accepted(api: Api) -> None:
    client = api.as_scope("ingest")
    response = client.post("/demo/records", content=record_body(LIMIT), headers=JSON_TYPE)
    assert response.status_code == 201, response.text
    response = client.post("/demo/records", content=chunks(record_body(LIMIT)), headers=JSON_TYPE)
    assert response.status_code == 201, response.text


def test_413_when_content_length_is_over_the_limit(api: Api) -> None:
    body = record_body(LIMIT + 1)
    response = api.as_scope("ingest").post("/demo/records", content=body, headers=JSON_TYPE)
    assert response.request.headers["content-length"] == str(LIMIT + 1)
    problem = assert_problem(response, 413, "content-too-large")
    assert problem["detail"] == (
        f"the request body is {LIMIT + 1:,} bytes: at most {LIMIT:,} bytes are accepted"
    )
    assert record_of(api.store, "ann") is None


def test_413_when_a_chunked_body_grows_over_the_limit(api: Api) -> None:
    body = record_body(2 * LIMIT)
    response = api.as_scope("ingest").post("/demo/records", content=chunks(body), headers=JSON_TYPE)
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    problem = assert_problem(response, 413, "content-too-large")
    assert problem["detail"] == (
        f"the request body is over {LIMIT:,} bytes: at most {LIMIT:,} bytes are accepted"
    )
    assert record_of(api.store, "ann") is None


def test_413_comes_before_authentication(api: Api) -> None:
    response = api.client().post("/demo/records", content=record_body(LIMIT + 1))
    assert_problem(response, 413, "content-too-large")


def test_429_with_retry_after_over_a_keys_rate(start_api: Callable[..., Api]) -> None:
    # One request per 100 s after a burst of 2: the third request is over, whatever the pace.
    settings = ApiSettings(rate_limit_per_second=0.01, rate_limit_burst=2)
    api = start_api(routers=all_routers(), settings=settings)
    client = api.as_scope("ingest")
    path, body = "/demo/records/contact/ann", {"properties": {"a": 1}}
    assert [client.put(path, json=body).status_code for _ in range(2)] == [200, 200]
    response = client.put(path, json={"properties": {"a": 2}})
    problem = assert_problem(response, 429, "rate-limited")
    assert response.headers["retry-after"] == "100"
    assert "retry in 100 s" in problem["detail"]
    assert record_of(api.store, "ann") == {
        "object_type": "contact",
        "id": "ann",
        "properties": {"a": 1},
    }
    # The limit is per key.
    assert api.as_scope("ingest").put(path, json=body).status_code == 200


def test_no_rate_limit_when_turned_off(start_api: Callable[..., Api]) -> None:
    settings = ApiSettings(rate_limit_per_second=0, rate_limit_burst=1)
    api = start_api(routers=all_routers(), settings=settings)
    client = api.as_scope("read")
    assert {client.get("/demo/records/contact/x").status_code for _ in range(5)} == {404}
