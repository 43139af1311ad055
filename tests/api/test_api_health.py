"""/healthz, /readyz (store and Temporal), and the documentation served without the internet."""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

from api_demo import all_routers
from api_problems import assert_problem
from api_servers import UNREACHABLE_PORT, Api, free_port
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from crmflow.api import PROBLEM_MEDIA_TYPE, ApiSettings
from crmflow.store import create_store_engine


def test_healthz_needs_no_key(start_api: Callable[..., Api]) -> None:
    response = start_api().client().get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_is_200_when_the_store_and_temporal_answer(
    start_api: Callable[..., Api], time_skipping_env: WorkflowEnvironment
) -> None:
    target = time_skipping_env.client.service_client.config.target_host

    async def temporal() -> Client:
        return await Client.connect(target)

    response = start_api(temporal=temporal).client().get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready", "checks": {"store": "ok", "temporal": "ok"}}


def test_readyz_is_503_when_temporal_is_unreachable(start_api: Callable[..., Api]) -> None:
    response = start_api().client().get("/readyz")
    body = assert_problem(response, 503, "not-ready", extra={"checks"})
    assert body["checks"] == {"store": "ok", "temporal": "unreachable"}
    assert body["errors"] == [{"loc": ["temporal"], "msg": "unreachable"}]
    assert body["detail"] == "temporal unreachable"
    assert str(UNREACHABLE_PORT) not in response.text  # the page is public: no address shown


def test_readyz_is_503_when_the_store_is_unreachable(start_api: Callable[..., Api]) -> None:
    nowhere = create_store_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/crmflow")
    try:
        response = start_api(engine=nowhere).client().get("/readyz")
    finally:
        nowhere.dispose()
    body = assert_problem(response, 503, "not-ready", extra={"checks"})
    assert body["checks"] == {"store": "unreachable", "temporal": "unreachable"}
    assert [error["loc"] for error in body["errors"]] == [["store"], ["temporal"]]
    assert "127.0.0.1" not in response.text  # the page is public: no address shown


def test_requests_get_503_while_the_store_is_unreachable(start_api: Callable[..., Api]) -> None:
    nowhere = create_store_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/crmflow")
    try:
        api = start_api(engine=nowhere, routers=all_routers())
        key = api.store.key("admin")  # in the test's store: the API cannot read it
        response = api.client(key).get("/demo/records/contact/ann")
    finally:
        nowhere.dispose()
    body = assert_problem(response, 503, "unavailable")
    assert body["detail"] == "the store did not answer; retry later"
    assert response.headers["retry-after"] == "1"
    assert "127.0.0.1" not in response.text


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


def test_the_docs_page_loads_everything_from_the_api_itself(
    start_api: Callable[..., Api],
) -> None:
    api = start_api(routers=all_routers())
    client = api.client()
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert not re.search(r"https?://|//[a-z]", page.text, re.IGNORECASE), page.text
    # Swagger UI's default online validator would fetch a badge from the internet.
    assert '"validatorUrl": null' in page.text
    links = _Links()
    links.feed(page.text)
    assert len(links.urls) == 3, links.urls
    for url in [*links.urls, "/openapi.json"]:
        assert url.startswith("/"), url
        response = client.get(url)
        assert response.status_code == 200, url
        assert len(response.content) > 1000, url
    script = client.get("/docs/assets/swagger-ui-bundle.js")
    assert "SwaggerUIBundle" in script.text
    assert script.headers["content-type"].startswith(("text/javascript", "application/javascript"))


def test_the_openapi_document_describes_errors_and_keys(start_api: Callable[..., Api]) -> None:
    document = start_api(routers=all_routers()).client().get("/openapi.json").json()
    operation = document["paths"]["/demo/batch"]["post"]
    assert operation["security"] == [{"HTTPBearer": []}]
    for status in ("401", "403", "422", "429"):
        content = operation["responses"][status]["content"]
        assert list(content) == [PROBLEM_MEDIA_TYPE], (status, content)
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "security" not in document["paths"]["/healthz"]["get"]


def test_the_docs_can_be_turned_off(start_api: Callable[..., Api]) -> None:
    client = start_api(settings=ApiSettings(docs=False)).client()
    for path in ("/docs", "/openapi.json", "/docs/assets/swagger-ui.css"):
        assert_problem(client.get(path), 404, "not-found")
    assert client.get("/healthz").status_code == 200


def test_the_readme_states_the_default_settings() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## HTTP API", 1)[1].split("\n## ", 1)[0]
    settings = ApiSettings()
    assert settings.key_last_used_every_seconds == 60
    stated = [
        "(written at most once a minute)",
        f"Bodies over {settings.max_body_bytes // 1024 // 1024} MiB get 413",
        f"{settings.rate_limit_per_second:g} requests/s with bursts of {settings.rate_limit_burst}",
        f"within {settings.key_cache_seconds:g} s",
        f"for {settings.key_cache_seconds:g} s (`key_cache_seconds`)",
        f"for {settings.idempotency_ttl_seconds / 3600:g} hours",
        f"runs over {settings.idempotency_hold_seconds:g} s",
    ]
    flat = " ".join(section.split())
    for phrase in stated:
        assert phrase in flat, phrase
