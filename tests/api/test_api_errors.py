"""Every error is `application/problem+json` with a stable type and located problems, and no
error leaves anything written."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from api_demo import Gate, all_routers, record_of
from api_problems import assert_problem
from api_servers import Api

from crmflow.api import KINDS


@pytest.fixture
def api(start_api: Callable[..., Api]) -> Api:
    return start_api(routers=all_routers(), services=Gate())


def test_each_kind_of_error_has_its_own_type() -> None:
    types = [kind.type for kind in KINDS]
    assert len(set(types)) == len(types)
    assert all(kind.type.startswith("urn:crmflow:problem:") for kind in KINDS)


def test_422_locates_each_problem_in_the_body(api: Api) -> None:
    records = [{"id": "a"}, {"id": "b"}, {"id": "c"}, {"properties": {}}, {"id": 5}]
    response = api.as_scope("ingest").post("/demo/batch", json={"records": records})
    body = assert_problem(response, 422, "invalid-request")
    assert body["errors"] == [
        {"loc": ["body", "records", 3, "id"], "msg": "Field required"},
        {"loc": ["body", "records", 4, "id"], "msg": "Input should be a valid string"},
    ]
    assert body["detail"] == "body.records[3].id: Field required (and 1 more)"
    assert record_of(api.store, "a") is None  # all or nothing


def test_422_for_json_that_does_not_parse(api: Api) -> None:
    response = api.as_scope("ingest").post(
        "/demo/batch", content=b'{"records": [', headers={"Content-Type": "application/json"}
    )
    body = assert_problem(response, 422, "invalid-request")
    assert body["errors"][0]["loc"] == ["body"]
    assert body["errors"][0]["msg"].startswith("invalid JSON at character 13")


def test_422_does_not_echo_the_input(api: Api) -> None:
    secret = "s3cr3t-value-that-must-not-come-back"
    response = api.as_scope("ingest").post("/demo/batch", json={"records": secret})
    assert_problem(response, 422, "invalid-request")
    assert secret not in response.text


def test_404_for_an_unknown_path_and_from_an_endpoint(api: Api) -> None:
    response = api.as_scope("read").get("/v1/nothing-here")
    assert assert_problem(response, 404, "not-found")["detail"] == "no such path: /v1/nothing-here"
    response = api.as_scope("read").get("/demo/records/contact/nobody")
    body = assert_problem(response, 404, "not-found")
    assert body["errors"] == [{"loc": ["path", "record_id"], "msg": "no such record"}]


def test_405_names_the_allowed_methods(api: Api) -> None:
    response = api.as_scope("admin").get("/demo/batch")
    body = assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "POST"
    assert body["detail"] == "GET is not allowed on /demo/batch"


def test_409_raised_after_a_write_keeps_nothing(api: Api) -> None:
    response = api.as_scope("ingest").post("/demo/conflict-after-write", json={"id": "ann"})
    body = assert_problem(response, 409, "conflict")
    assert body["errors"] == [{"loc": ["body", "id"], "msg": "taken"}]
    assert record_of(api.store, "ann") is None


def test_an_error_status_returned_after_a_write_keeps_nothing(api: Api) -> None:
    response = api.as_scope("ingest").post("/demo/refuse-after-write", json={"id": "ann"})
    assert response.status_code == 409
    assert record_of(api.store, "ann") is None


def test_415_for_a_body_of_another_media_type(api: Api) -> None:
    client = api.as_scope("ingest")
    body = b'{"records": []}'
    for headers in ({"Content-Type": "text/plain"}, {}):
        response = client.post("/demo/batch", content=body, headers=headers)
        problem = assert_problem(response, 415, "unsupported-media-type")
        assert problem["errors"] == [
            {"loc": ["header", "Content-Type"], "msg": "use application/json"}
        ]
    # JSON with a charset or a +json type is JSON.
    for media_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = client.post("/demo/batch", content=body, headers={"Content-Type": media_type})
        assert response.status_code == 200, response.text


def test_a_router_may_accept_other_media_types(api: Api) -> None:
    client = api.as_scope("admin")
    response = client.post(
        "/demo/admin/documents", content=b"key: x\n", headers={"Content-Type": "application/yaml"}
    )
    assert response.json() == {"bytes": 7, "media_type": "application/yaml"}
    response = client.post(
        "/demo/admin/documents", content=b"key: x\n", headers={"Content-Type": "text/yaml"}
    )
    detail = assert_problem(response, 415, "unsupported-media-type")["detail"]
    assert detail == "send the body as application/json or application/yaml (not text/yaml)"


def test_500_shows_no_internals_logs_the_traceback_and_keeps_nothing(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="crmflow.api")
    response = api.as_scope("ingest").post("/demo/fail-after-write", json={"id": "ann"})
    body = assert_problem(response, 500, "internal-error")
    assert "boom" not in response.text
    request_id = response.headers["x-request-id"]
    assert request_id in body["detail"]
    assert record_of(api.store, "ann") is None
    (failure,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert request_id in failure.getMessage()
    assert failure.exc_info is not None and "boom" in str(failure.exc_info[1])
    line = [r.getMessage() for r in caplog.records if "-> 500" in r.getMessage()]
    assert line and "POST /demo/fail-after-write -> 500" in line[0]


def test_a_request_id_is_kept_when_it_is_a_plain_token(api: Api) -> None:
    client = api.as_scope("read")
    response = client.get("/demo/records/contact/x", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    response = client.get("/demo/records/contact/x", headers={"X-Request-ID": "a b\tc"})
    assert response.headers["x-request-id"] != "a b\tc"


def test_sessions_opened_by_service_code_join_the_requests_transaction(api: Api) -> None:
    client = api.as_scope("ingest")
    response = client.post("/demo/service-style?fail=true", json={"id": "ann"})
    assert_problem(response, 409, "conflict")
    assert record_of(api.store, "ann") is None  # its own commit only released a savepoint
    response = client.post("/demo/service-style", json={"id": "ann", "properties": {"a": 1}})
    assert response.json()["properties"] == {"a": 1}
    assert record_of(api.store, "ann") == response.json()


def test_an_endpoint_cannot_commit_the_requests_transaction(api: Api) -> None:
    response = api.as_scope("ingest").post("/demo/commit-early", json={"id": "ann"})
    assert_problem(response, 500, "internal-error")
    assert record_of(api.store, "ann") is None
