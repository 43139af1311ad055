"""The ingestion endpoints of SPEC §7 (records, batches, events, lists) on a real uvicorn, over
SQLite and PostgreSQL: shapes, located refusals with nothing written, batches all or nothing,
event ids deduplicated (also under concurrency), scopes, Idempotency-Key replays."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from api_servers import UNREACHABLE_PORT, Api
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from crmflow.api import ApiSettings
from crmflow.api.routers import v1_routers
from crmflow.services import App, Settings
from crmflow.services.devserver import temporal_cli_path
from crmflow.services.publishing import ServiceApp
from crmflow.store import ChangeRepository, EventRepository, ListRepository, RecordRepository

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

StartApi = Callable[..., Api]


@pytest.fixture
def services(store_url: str) -> Iterator[App]:
    """The services' App of the API (its control endpoints): the test's store, no Temporal."""
    app = ServiceApp(Settings(db_url=store_url, temporal_address=f"127.0.0.1:{UNREACHABLE_PORT}"))
    yield app
    app.close()


@pytest.fixture
def api(start_api: StartApi, services: App) -> Api:
    return start_api(routers=v1_routers(), services=services)


@pytest.fixture
def ingest(api: Api) -> httpx.Client:
    return api.as_scope("ingest")


@pytest.fixture
def admin(api: Api) -> httpx.Client:
    return api.as_scope("admin")


def record_of(api: Api, record_id: str, object_type: str = "contact") -> dict[str, Any] | None:
    with api.store.sessions() as session:
        found = RecordRepository(session).get(object_type, record_id)
        return None if found is None else dict(found.properties)


def events_of(api: Api, record_id: str) -> list[str]:
    with api.store.sessions() as session:
        return [e.name for e in EventRepository(session).for_record("contact", record_id)]


def feed_size(api: Api) -> int:
    with api.store.sessions() as session:
        return ChangeRepository(session).last_id()


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def locs(body: dict[str, Any]) -> list[list[Any]]:
    return [error["loc"] for error in body["errors"]]


# ---------------------------------------------------------------- records


def test_put_get_patch_delete_a_record(api: Api, ingest: httpx.Client, admin: httpx.Client) -> None:
    put = ingest.put(
        "/v1/records/contact/ann@example.com",
        json={"properties": {"email": "ann@example.com", "seats": 12, "vip": True}},
    )
    assert put.status_code == 200, put.text
    assert put.json() == {
        "object_type": "contact",
        "id": "ann@example.com",
        "properties": {"email": "ann@example.com", "seats": 12, "vip": True},
        "lists": [],
        "associations": [],
    }
    merged = ingest.patch(
        "/v1/records/contact/ann@example.com", json={"properties": {"vip": None, "seats": 13}}
    )
    assert merged.status_code == 200, merged.text
    assert merged.json()["properties"] == {"email": "ann@example.com", "seats": 13}
    got = admin.get("/v1/records/contact/ann@example.com")
    assert got.status_code == 200
    assert got.json()["properties"] == {"email": "ann@example.com", "seats": 13}
    assert got.json()["enrollments"] == []
    # Ids with a slash or any printable character are a path's last segment.
    assert ingest.put("/v1/records/contact/urn:crm/7", json={"properties": {}}).status_code == 200
    assert record_of(api, "urn:crm/7") == {}
    assert ingest.delete("/v1/records/contact/ann@example.com").status_code == 204
    assert record_of(api, "ann@example.com") is None
    problem(ingest.delete("/v1/records/contact/ann@example.com"), 404)
    body = problem(admin.get("/v1/records/contact/ann@example.com"), 404)
    assert locs(body) == [["path", "id"]]


@pytest.mark.parametrize(
    ("raw", "loc", "message"),
    [
        ('{"properties": {"score": NaN}}', ["body", "properties", "score"], "NaN"),
        ('{"properties": {"score": Infinity}}', ["body", "properties", "score"], "Infinity"),
        ('{"properties": {"score": 1e999}}', ["body", "properties", "score"], "out of range"),
        (
            '{"properties": {"n": 92233720368547758070}}',
            ["body", "properties", "n"],
            "out of range",
        ),
        ('{"properties": {"a": "x\\u0000y"}}', ["body", "properties", "a"], "NUL"),
        ('{"properties": {"a": "\\ud800"}}', ["body", "properties", "a"], "surrogate"),
        ('{"properties": {"First Name": "a"}}', ["body", "properties", "First Name"], "name"),
        ('{"properties": {"a": {"b": 1}}}', ["body", "properties", "a"], "not a list or object"),
        ('{"properties": {"a": 1, "a": 2}}', ["body"], "twice"),
        ('{"properties": {}, "extra": 1}', ["body", "extra"], "Extra"),
        ('{"props": {}}', ["body", "properties"], "required"),
        ('{"properties": ', ["body"], "invalid JSON"),
    ],
)
def test_bad_values_are_refused_where_they_are(
    api: Api, ingest: httpx.Client, raw: str, loc: list[Any], message: str
) -> None:
    before = feed_size(api)
    response = ingest.put(
        "/v1/records/contact/ann", content=raw, headers={"content-type": "application/json"}
    )
    body = problem(response, 422)
    assert loc in locs(body), body
    assert message.lower() in " ".join(e["msg"] for e in body["errors"]).lower(), body
    assert record_of(api, "ann") is None
    assert feed_size(api) == before


@pytest.mark.parametrize(
    ("path", "loc"),
    [
        ("/v1/records/Contact/ann", ["path", "object_type"]),
        ("/v1/records/contact/%20ann", ["path", "id"]),
        ("/v1/records/contact/a%00b", ["path", "id"]),
        ("/v1/records/contact/" + "x" * 256, ["path", "id"]),
    ],
)
def test_bad_path_parameters(api: Api, ingest: httpx.Client, path: str, loc: list[Any]) -> None:
    body = problem(ingest.put(path, json={"properties": {"a": 1}}), 422)
    assert locs(body) == [loc]
    assert feed_size(api) == 0


def test_a_record_over_the_store_limit_is_refused(api: Api, ingest: httpx.Client) -> None:
    big = {f"p{i}": "x" * 60_000 for i in range(20)}  # 1.2 MB, over the 1 MiB of a record
    response = ingest.put("/v1/records/contact/ann", json={"properties": big})
    body = problem(response, 422)
    assert locs(body) == [["body", "properties"]]
    assert record_of(api, "ann") is None


def test_415_for_another_media_type(api: Api, ingest: httpx.Client) -> None:
    response = ingest.put(
        "/v1/records/contact/ann",
        content="properties: {}",
        headers={"content-type": "application/yaml"},
    )
    problem(response, 415)


def test_413_over_the_body_limit(start_api: StartApi) -> None:
    api = start_api(routers=v1_routers(), settings=ApiSettings(max_body_bytes=1000))
    client = api.as_scope("ingest")
    body = problem(
        client.put("/v1/records/contact/ann", json={"properties": {"a": "x" * 2000}}), 413
    )
    assert "1,000 bytes" in body["detail"]
    assert record_of(api, "ann") is None


def test_concurrent_upserts_each_get_their_own_answer(api: Api) -> None:
    """Concurrent PUTs share transactions (group commit): each request still gets its record
    as its write left it, one refused record fails alone, and writes of one record merge."""
    clients = [api.as_scope("ingest") for _ in range(16)]
    big = {f"p{i}": "x" * 60_000 for i in range(20)}

    def put(n: int) -> httpx.Response:
        client = clients[n]
        if n == 5:
            return client.put("/v1/records/contact/big", json={"properties": big})
        if n % 2:
            return client.put("/v1/records/contact/shared", json={"properties": {f"p{n}": n}})
        return client.put(f"/v1/records/contact/r{n}", json={"properties": {"n": n}})

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(put, range(16)))
    for n, answer in enumerate(answers):
        if n == 5:
            assert locs(problem(answer, 422)) == [["body", "properties"]]
        elif n % 2:
            assert answer.status_code == 200, answer.text
            assert answer.json()["properties"][f"p{n}"] == n
        else:
            assert answer.json() == {
                "object_type": "contact",
                "id": f"r{n}",
                "properties": {"n": n},
                "lists": [],
                "associations": [],
            }
    assert record_of(api, "big") is None
    assert record_of(api, "shared") == {f"p{n}": n for n in range(1, 16, 2) if n != 5}
    for n in range(0, 16, 2):
        assert record_of(api, f"r{n}") == {"n": n}


def test_without_group_commit(start_api: StartApi, services: App) -> None:
    api = start_api(
        routers=v1_routers(), services=services, settings=ApiSettings(group_commit=False)
    )
    client = api.as_scope("ingest")
    assert client.put("/v1/records/contact/a", json={"properties": {"n": 1}}).status_code == 200
    again = client.put("/v1/records/contact/a", json={"properties": {"m": 2}})
    assert again.json()["properties"] == {"n": 1, "m": 2}


# ---------------------------------------------------------------- batches


def test_batch_upsert(api: Api, ingest: httpx.Client) -> None:
    ingest.put("/v1/records/contact/r0", json={"properties": {"old": 1}})
    records = [{"id": f"r{i}", "properties": {"n": i}} for i in range(1000)]
    response = ingest.post("/v1/records/contact/batch", json={"records": records})
    assert response.status_code == 200, response.text
    assert response.json() == {"upserted": 1000, "created": 999, "updated": 1}
    assert record_of(api, "r0") == {"old": 1, "n": 0}
    assert record_of(api, "r999") == {"n": 999}


def test_batch_is_all_or_nothing_with_each_problem_located(api: Api, ingest: httpx.Client) -> None:
    items = [f'{{"id": "r{i}", "properties": {{"n": {i}}}}}' for i in range(10)]
    items[3] = '{"id": "bad\\nid", "properties": {}}'
    items[7] = '{"id": "r7", "properties": {"score": NaN}}'
    raw = '{"records": [' + ", ".join(items) + "]}"
    before = feed_size(api)
    response = ingest.post(
        "/v1/records/contact/batch", content=raw, headers={"content-type": "application/json"}
    )
    body = problem(response, 422)
    assert locs(body) == [
        ["body", "records", 3, "id"],
        ["body", "records", 7, "properties", "score"],
    ]
    assert record_of(api, "r0") is None
    assert feed_size(api) == before


def test_batch_over_1000_items(api: Api, ingest: httpx.Client) -> None:
    records = [{"id": f"r{i}"} for i in range(1001)]
    body = problem(ingest.post("/v1/records/contact/batch", json={"records": records}), 422)
    assert locs(body) == [["body", "records"]]
    assert record_of(api, "r0") is None


def test_batch_with_a_record_over_the_store_limit_writes_nothing(
    api: Api, ingest: httpx.Client
) -> None:
    records = [{"id": "small", "properties": {"a": 1}}]
    records.append({"id": "big", "properties": {f"p{i}": "x" * 60_000 for i in range(20)}})
    body = problem(ingest.post("/v1/records/contact/batch", json={"records": records}), 422)
    assert locs(body) == [["body", "records"]]
    assert "big" in body["detail"]
    assert record_of(api, "small") is None


def test_batch_retry_with_an_idempotency_key(api: Api, ingest: httpx.Client) -> None:
    payload = {"records": [{"id": "a", "properties": {"n": 1}}]}
    headers = {"Idempotency-Key": "batch-1"}
    first = ingest.post("/v1/records/contact/batch", json=payload, headers=headers)
    assert first.status_code == 200
    assert first.json()["created"] == 1
    # Changed meanwhile by someone else: the retry must not write again.
    ingest.put("/v1/records/contact/a", json={"properties": {"n": 2}})
    again = ingest.post("/v1/records/contact/batch", json=payload, headers=headers)
    assert again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert record_of(api, "a") == {"n": 2}
    other = ingest.post(
        "/v1/records/contact/batch", json={"records": [{"id": "b"}]}, headers=headers
    )
    problem(other, 422)
    assert record_of(api, "b") is None


# ---------------------------------------------------------------- events


def test_track_an_event_once_per_event_id(api: Api, ingest: httpx.Client) -> None:
    ingest.put("/v1/records/contact/ann", json={"properties": {}})
    before = feed_size(api)
    event = {"record_id": "ann", "name": "form_submitted", "event_id": "evt-1"}
    first = ingest.post("/v1/events", json={**event, "properties": {"form": "demo"}})
    assert first.status_code == 202, first.text
    assert first.json() == {"event_id": "evt-1", "duplicate": False}
    again = ingest.post("/v1/events", json={**event, "properties": {"form": "demo"}})
    assert again.status_code == 202
    assert again.json() == {"event_id": "evt-1", "duplicate": True}
    assert events_of(api, "ann") == ["form_submitted"]
    assert feed_size(api) == before + 1  # one change, so one trigger
    anonymous = ingest.post("/v1/events", json={"record_id": "ann", "name": "email_opened"})
    assert anonymous.status_code == 202
    assert len(anonymous.json()["event_id"]) == 32
    assert events_of(api, "ann") == ["form_submitted", "email_opened"]


def test_concurrent_posts_of_one_event_id_store_it_once(api: Api) -> None:
    api.as_scope("ingest").put("/v1/records/contact/ann", json={"properties": {}})
    clients = [api.as_scope("ingest") for _ in range(8)]
    event = {"record_id": "ann", "name": "clicked", "event_id": "same"}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda c: c.post("/v1/events", json=event), clients))
    assert [a.status_code for a in answers] == [202] * 8
    assert sorted(a.json()["duplicate"] for a in answers) == [False] + [True] * 7
    assert events_of(api, "ann") == ["clicked"]


@pytest.mark.parametrize(
    ("event", "loc"),
    [
        ({"record_id": "nobody", "name": "x"}, ["body", "record_id"]),
        ({"record_id": "ann", "name": " x"}, ["body", "name"]),
        ({"record_id": "ann", "name": "x", "object_type": "A"}, ["body", "object_type"]),
        ({"record_id": "ann", "name": "x", "event_id": ""}, ["body", "event_id"]),
        ({"record_id": "ann", "name": "x", "properties": {"a": [1]}}, ["body", "properties", "a"]),
        ({"record_id": "ann", "name": "x", "occurred_at": "2999-01-01T00:00:00Z"}, None),
        ({"record_id": "ann", "name": "x", "occurred_at": "yesterday"}, None),
        ({"name": "x"}, ["body", "record_id"]),
    ],
)
def test_bad_events_are_refused(
    api: Api, ingest: httpx.Client, event: dict[str, Any], loc: list[Any] | None
) -> None:
    ingest.put("/v1/records/contact/ann", json={"properties": {}})
    body = problem(ingest.post("/v1/events", json=event), 422)
    assert (loc or ["body", "occurred_at"]) in locs(body)
    assert events_of(api, "ann") == []


def test_event_properties_over_the_event_limit(api: Api, ingest: httpx.Client) -> None:
    ingest.put("/v1/records/contact/ann", json={"properties": {}})
    big = {f"p{i}": "x" * 60_000 for i in range(5)}  # 300 KB, over the 256 KiB of an event
    event = {"record_id": "ann", "name": "x", "properties": big}
    body = problem(ingest.post("/v1/events", json=event), 422)
    assert locs(body) == [["body", "properties"]]
    assert events_of(api, "ann") == []


def test_event_batch_all_or_nothing(api: Api, ingest: httpx.Client) -> None:
    ingest.put("/v1/records/contact/ann", json={"properties": {}})
    events = [{"record_id": "ann", "name": f"e{i}", "event_id": f"id-{i}"} for i in range(5)]
    bad = [*events, {"record_id": "nobody", "name": "e5"}]
    body = problem(ingest.post("/v1/events/batch", json={"events": bad}), 422)
    assert locs(body) == [["body", "events", 5, "record_id"]]
    assert events_of(api, "ann") == []
    ok = ingest.post("/v1/events/batch", json={"events": [*events, events[0]]})
    assert ok.status_code == 202, ok.text
    assert ok.json()["accepted"] == 6
    assert ok.json()["duplicates"] == 1
    again = ingest.post("/v1/events/batch", json={"events": events})
    assert again.json()["duplicates"] == 5
    assert events_of(api, "ann") == [f"e{i}" for i in range(5)]
    over = [{"record_id": "ann", "name": "x"}] * 1001
    problem(ingest.post("/v1/events/batch", json={"events": over}), 422)


# ---------------------------------------------------------------- lists


def test_list_members(api: Api, ingest: httpx.Client, admin: httpx.Client) -> None:
    for record_id in ("ann", "bob"):
        ingest.put(f"/v1/records/contact/{record_id}", json={"properties": {}})
    added = ingest.post("/v1/lists/vip/members", json={"ids": ["ann", "bob"]})
    assert added.status_code == 200, added.text
    assert added.json() == {"added": 2}
    assert ingest.post("/v1/lists/vip/members", json={"ids": ["ann"]}).json() == {"added": 0}
    assert admin.get("/v1/records/contact/ann").json()["lists"] == ["vip"]
    missing = ingest.post("/v1/lists/vip/members", json={"ids": ["carl", "nobody"]})
    assert locs(problem(missing, 422)) == [["body", "ids", 0]]
    other_type = ingest.post("/v1/lists/vip/members", json={"object_type": "company", "ids": []})
    assert other_type.status_code == 200  # nothing to add: nothing checked against the list
    ingest.put("/v1/records/company/acme", json={"properties": {}})
    wrong = ingest.post("/v1/lists/vip/members", json={"object_type": "company", "ids": ["acme"]})
    assert locs(problem(wrong, 422)) == [["body", "object_type"]]
    assert ingest.delete("/v1/lists/vip/members/contact/ann").status_code == 204
    assert ingest.delete("/v1/lists/vip/members/contact/ann").status_code == 204
    with api.store.sessions() as session:
        assert ListRepository(session).members("vip") == ["bob"]
    bad_name = ingest.post("/v1/lists/%20vip/members", json={"ids": ["bob"]})
    assert locs(problem(bad_name, 422)) == [["path", "name"]]


# ---------------------------------------------------------------- scopes


def test_scopes(api: Api) -> None:
    ingest, read, admin = (api.as_scope(s) for s in ("ingest", "read", "admin"))
    nobody = api.client()
    record = {"properties": {"a": 1}}
    problem(nobody.put("/v1/records/contact/ann", json=record), 401)
    problem(api.client("crmflow_" + "x" * 40).get("/v1/records/contact/ann"), 401)
    problem(read.put("/v1/records/contact/ann", json=record), 403)
    problem(read.post("/v1/events", json={"record_id": "ann", "name": "x"}), 403)
    assert ingest.put("/v1/records/contact/ann", json=record).status_code == 200
    problem(ingest.get("/v1/records/contact/ann"), 403)
    problem(ingest.get("/v1/workflows"), 403)
    assert read.get("/v1/records/contact/ann").status_code == 200
    assert read.get("/v1/workflows").json() == []
    problem(read.post("/v1/workflows/x/activate"), 403)
    problem(
        read.post("/v1/workflows", content="key: x", headers={"content-type": "application/yaml"}),
        403,
    )
    assert admin.put("/v1/records/contact/bob", json=record).status_code == 200
    assert admin.get("/v1/records/contact/bob").status_code == 200


# ---------------------------------------------------------------- other statuses


MANUAL = "key: by-hand\nname: By hand\nenrollment:\n  trigger: manual\nactions:\n" + (
    "  - id: mark\n    type: set_property\n    property: seen\n    value: true\n"
)


def test_temporal_unreachable_is_503_and_changes_nothing(api: Api, admin: httpx.Client) -> None:
    published = admin.post(
        "/v1/workflows", content=MANUAL, headers={"content-type": "application/yaml"}
    )
    assert published.status_code == 201, published.text
    assert admin.post("/v1/workflows/by-hand/activate").status_code == 200
    admin.put("/v1/records/contact/ann", json={"properties": {}})
    answer = admin.post("/v1/workflows/by-hand/enrollments", json={"record_ids": ["ann"]})
    body = problem(answer, 503)
    assert answer.headers["retry-after"]
    assert "cannot reach Temporal" in body["detail"]
    assert admin.get("/v1/workflows/by-hand/enrollments").json() == []


def test_429_over_the_rate_of_a_key(start_api: StartApi, services: App) -> None:
    api = start_api(
        routers=v1_routers(),
        services=services,
        settings=ApiSettings(rate_limit_per_second=0.01, rate_limit_burst=2),
    )
    client = api.as_scope("ingest")
    for n in range(2):
        assert client.put(f"/v1/records/contact/r{n}", json={"properties": {}}).status_code == 200
    refused = client.put("/v1/records/contact/r2", json={"properties": {}})
    problem(refused, 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert record_of(api, "r2") is None
    # Another key has its own bucket.
    assert api.as_scope("ingest").put("/v1/records/contact/r3", json={"properties": {}}).is_success


def test_405_and_unknown_paths(api: Api, admin: httpx.Client) -> None:
    problem(admin.post("/v1/records/contact/ann", json={}), 405)
    problem(admin.get("/v1/nothing"), 404)


def test_a_temporal_that_stops_answering_is_503_not_409(
    api: Api, admin: httpx.Client, services: App
) -> None:
    """As under `crmflow up`, the API was handed a client connected earlier; its server is gone
    now: a control endpoint answers 503 with Retry-After (retry later), not 409 (refused)."""
    published = admin.post(
        "/v1/workflows", content=MANUAL, headers={"content-type": "application/yaml"}
    )
    assert published.status_code == 201, published.text
    assert admin.post("/v1/workflows/by-hand/activate").status_code == 200
    admin.put("/v1/records/contact/ann", json={"properties": {}})

    async def connected_then_gone() -> Client:
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_cli_path(),
            data_converter=pydantic_data_converter,
            ui=False,
        )
        await env.shutdown()  # the client stays, its server is gone
        return env.client

    gone = asyncio.run(connected_then_gone())
    services.use_client(gone)
    answer = admin.post("/v1/workflows/by-hand/enrollments", json={"record_ids": ["ann"]})
    body = problem(answer, 503)
    assert answer.headers["retry-after"]
    assert "Temporal did not answer" in body["detail"]
