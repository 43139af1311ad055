"""API keys over HTTP: 401 without a valid key, 403 without the scope, revokes reaching every
process, and keys never logged."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from api_demo import Gate, all_routers
from api_problems import assert_problem
from api_servers import Api, Store
from fastapi import APIRouter
from sqlalchemy import select

from crmflow.api import ApiScope, ApiSettings, create_app, scoped_router
from crmflow.store import ApiKey, generate_key


@pytest.fixture
def api(start_api: Callable[..., Api]) -> Api:
    return start_api(routers=all_routers(), services=Gate())


def test_no_key_is_401_with_a_bearer_challenge(api: Api) -> None:
    response = api.client().get("/demo/records/contact/ann")
    body = assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == 'Bearer realm="crmflow"'
    assert "Authorization: Bearer" in body["detail"]


@pytest.mark.parametrize(
    ("header", "error", "detail"),
    [
        ("Basic dXNlcjpwYXNz", "invalid_request", "must be 'Bearer <key>'"),
        ("Bearer", "invalid_request", "must be 'Bearer <key>'"),
        ("Bearer not-a-key", "invalid_token", "not a crmflow API key"),
        ("Bearer crmflow_" + "x" * 39, "invalid_token", "not a crmflow API key"),
    ],
)
def test_a_malformed_authorization_is_401(api: Api, header: str, error: str, detail: str) -> None:
    response = api.client().get("/demo/records/contact/ann", headers={"Authorization": header})
    body = assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == f'Bearer realm="crmflow", error="{error}"'
    assert detail in body["detail"]


def test_an_unknown_or_revoked_key_is_401(api: Api) -> None:
    response = api.client(generate_key()).get("/demo/records/contact/ann")
    assert assert_problem(response, 401, "unauthorized")["detail"] == "unknown API key"
    assert "invalid_token" in response.headers["www-authenticate"]
    key = api.store.key("read", "soon-revoked")
    api.store.revoke("soon-revoked")
    response = api.client(key).get("/demo/records/contact/ann")
    assert assert_problem(response, 401, "unauthorized")["detail"] == "this API key was revoked"


def test_the_scheme_name_is_case_insensitive(api: Api) -> None:
    key = api.store.key("read")
    response = api.client().get(
        "/demo/records/contact/ann", headers={"Authorization": f"bearer {key}"}
    )
    assert_problem(response, 404, "not-found")


# Each demo endpoint, with the scope it needs.
ENDPOINTS: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "ingest": ("PUT", "/demo/records/contact/ann", {"properties": {"a": 1}}),
    "read": ("GET", "/demo/records/contact/nobody", None),
    "admin": ("DELETE", "/demo/admin/records/contact/nobody", None),
}
# What each scope may do (SPEC §7): ingest writes, read reads, admin does everything.
ALLOWED = {
    "ingest": {"ingest"},
    "read": {"read"},
    "admin": {"ingest", "read", "admin"},
}


@pytest.mark.parametrize("scope", ["ingest", "read", "admin"])
def test_each_scope_reaches_what_it_may_and_gets_403_elsewhere(api: Api, scope: str) -> None:
    client = api.as_scope(scope)
    for needed, (method, path, body) in ENDPOINTS.items():
        response = client.request(method, path, json=body)
        if needed in ALLOWED[scope]:
            # Past the scope check: the endpoint answered (404: the record does not exist).
            assert response.status_code in (200, 404), (scope, needed, response.text)
            if response.status_code == 404:
                assert_problem(response, 404, "not-found")
        else:
            problem = assert_problem(response, 403, "forbidden")
            assert f"has the scope '{scope}'" in problem["detail"]
            assert f"needs '{needed}'" in problem["detail"]
            assert "www-authenticate" not in response.headers


def test_a_forbidden_request_writes_nothing(api: Api) -> None:
    response = api.as_scope("read").put("/demo/records/contact/ann", json={"properties": {"a": 1}})
    assert_problem(response, 403, "forbidden")
    admin = api.as_scope("admin")
    assert_problem(admin.get("/demo/records/contact/ann"), 404, "not-found")


def test_every_route_but_health_needs_a_key(api: Api) -> None:
    """Walks the OpenAPI document: each operation without a key is refused before it runs."""
    anonymous = api.client()
    document = anonymous.get("/openapi.json").json()
    public = {"/healthz", "/readyz"}
    checked = 0
    for path, operations in document["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        for method in operations:
            response = anonymous.request(method.upper(), concrete, json={})
            if path in public:
                assert response.status_code in (200, 503), (method, path)
            else:
                assert_problem(response, 401, "unauthorized")
                checked += 1
    assert checked >= 10, f"only {checked} operations found: {sorted(document['paths'])}"


def test_a_router_without_a_scope_is_refused(store: Store) -> None:
    with pytest.raises(TypeError, match="has no API key scope"):
        create_app(
            engine=store.engine,
            temporal=_never,
            routers=[APIRouter()],
        )


async def _never() -> Any:
    raise AssertionError("Temporal is not needed here")


def test_a_route_slipped_in_without_a_scope_never_runs(start_api: Callable[..., Api]) -> None:
    ran: list[bool] = []
    plain = APIRouter()

    @plain.get("/unguarded")
    def unguarded() -> dict[str, bool]:
        ran.append(True)
        return {"ran": True}

    scoped = scoped_router(ApiScope.INGEST)
    scoped.include_router(plain)
    api = start_api(routers=[scoped])
    for client in (api.client(), api.as_scope("admin")):
        response = client.get("/unguarded")
        assert_problem(response, 500, "internal-error")
    assert ran == []


def test_a_revoke_reaches_every_api_process_within_the_cache_time(
    start_api: Callable[..., Api],
) -> None:
    settings = ApiSettings(key_cache_seconds=0.5)
    first = start_api(routers=all_routers(), settings=settings)
    second = start_api(routers=all_routers(), settings=settings)
    key = first.store.key("read", "leaving")
    clients = [first.client(key), second.client(key)]
    for client in clients:
        assert client.get("/demo/records/contact/ann").status_code == 404
    first.store.revoke("leaving")
    deadline = time.monotonic() + 15
    refused: set[int] = set()
    while len(refused) < len(clients):
        assert time.monotonic() < deadline, "a revoked key was still accepted after 15 s"
        for index, client in enumerate(clients):
            if client.get("/demo/records/contact/ann").status_code == 401:
                refused.add(index)
        time.sleep(0.05)
    for client in clients:
        assert_problem(client.get("/demo/records/contact/ann"), 401, "unauthorized")


def test_each_process_caches_what_it_read_about_a_key(start_api: Callable[..., Api]) -> None:
    settings = ApiSettings(key_cache_seconds=3600)
    warm = start_api(routers=all_routers(), settings=settings)
    key = warm.store.key("read", "cached")
    assert warm.client(key).get("/demo/records/contact/ann").status_code == 404
    warm.store.revoke("cached")
    # The process that read the key a moment ago trusts its answer for key_cache_seconds; a
    # process that had not read it sees the revoke at once.
    assert warm.client(key).get("/demo/records/contact/ann").status_code == 404
    cold = start_api(routers=all_routers(), settings=settings)
    assert_problem(cold.client(key).get("/demo/records/contact/ann"), 401, "unauthorized")


def test_a_key_in_use_records_its_last_use(api: Api) -> None:
    key = api.store.key("read", "used")
    with api.store.sessions() as session:
        row = session.scalars(select(ApiKey).where(ApiKey.name == "used")).one()
        assert row.last_used_at is None
    api.client(key).get("/demo/records/contact/ann")
    with api.store.sessions() as session:
        row = session.scalars(select(ApiKey).where(ApiKey.name == "used")).one()
        assert row.last_used_at is not None


def test_keys_never_reach_the_log(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key = api.store.key("ingest", "secretive")
    client = api.client(key)
    client.put("/demo/records/contact/ann", json={"properties": {"a": 1}})
    client.post("/demo/fail-after-write", json={"id": "zed"})
    client.get("/demo/records/contact/ann")  # 403
    httpx.get(f"{api.url}/demo/records/contact/ann", headers={"Authorization": f"Basic {key}"})
    server = ("crmflow", "uvicorn", "fastapi", "starlette")
    handler = logging.Formatter()
    logged = "\n".join(
        handler.format(record) for record in caplog.records if record.name.startswith(server)
    )
    assert "boom: a bug after a write" in logged  # the traceback of the 500 is there
    assert "secretive" in logged  # the key's name is logged ...
    assert key not in logged  # ... never the key
    assert key[len("crmflow_") :] not in logged
    assert "Bearer" not in logged
