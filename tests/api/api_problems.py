"""What every error answer of the API must look like (RFC 9457 problem details)."""

from __future__ import annotations

from typing import Any

import httpx

from crmflow.api import PROBLEM_MEDIA_TYPE


def assert_problem(
    response: httpx.Response, status: int, code: str, *, extra: set[str] = frozenset()
) -> dict[str, Any]:
    """The response is a problem of this status and code, shaped as SPEC §7 says, with no
    trace of the server's internals; returns its body."""
    shown = f"{response.request.method} {response.request.url} -> {response.status_code}"
    assert response.status_code == status, f"{shown}: {response.text}"
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE, shown
    body = response.json()
    assert set(body) == {"type", "title", "status", "detail", "errors"} | extra, body
    assert body["type"] == f"urn:crmflow:problem:{code}", body
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    assert isinstance(body["errors"], list)
    for error in body["errors"]:
        assert set(error) == {"loc", "msg"}, error
        assert isinstance(error["loc"], list) and error["loc"], error
        assert all(isinstance(part, str | int) for part in error["loc"]), error
        assert isinstance(error["msg"], str) and error["msg"], error
    for leak in ("Traceback", 'File "', "sqlalchemy", "psycopg", "Exception"):
        assert leak not in response.text, response.text
    return body
