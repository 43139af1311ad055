"""Who may see the dashboard, over HTTP against a real uvicorn and store: the login with an API
key, the session cookie and what it refuses, and bad input on every page."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from crmflow import services
from crmflow.services import schedules as _schedules

Site = Any  # conftest.Site


def client(site: Site) -> httpx.Client:
    return httpx.Client(base_url=site.url, follow_redirects=False)


def login(site: Site, key: str, next_page: str = "/ui/") -> httpx.Client:
    browser = client(site)
    answer = browser.post("/ui/login", data={"key": key, "next": next_page})
    assert answer.status_code == 303, answer.text
    return browser


def test_root_and_pages_send_a_visitor_to_the_login(site: Site) -> None:
    visitor = client(site)
    assert visitor.get("/").headers["location"] == "/ui/"
    answer = visitor.get("/ui/workflows/onboarding?status=running")
    assert answer.status_code == 303
    assert answer.headers["location"] == (
        "/ui/login?next=%2Fui%2Fworkflows%2Fonboarding%3Fstatus%3Drunning"
    )
    page = visitor.get("/ui/login")
    assert page.status_code == 200 and 'name="key"' in page.text
    # The API itself keeps answering problem+json.
    assert visitor.get("/v1/nothing").headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("scope", ["read", "admin"])
def test_a_read_or_admin_key_logs_in_with_a_strict_http_only_cookie(site: Site, scope: str) -> None:
    key = site.key(scope)
    answer = client(site).post("/ui/login", data={"key": key, "next": "/ui/workflows/onboarding"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/workflows/onboarding"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("crmflow_dashboard=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert key not in cookie and key[8:20] not in cookie  # the key itself is never in it
    browser = login(site, key)
    page = browser.get("/ui/")
    assert page.status_code == 200 and "No workflow yet" in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "script-src" not in csp  # no script at all
    # Logging out ends the session in the browser.
    out = browser.post("/ui/logout")
    assert out.status_code == 303 and 'crmflow_dashboard=""' in out.headers["set-cookie"]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "not a crmflow API key"),
        ("hello", "not a crmflow API key"),
        ("crmflow_" + "A" * 40, "unknown or revoked API key"),
        ("ingest", "has scope ingest: the dashboard needs read or admin"),
    ],
)
def test_refused_logins(site: Site, key: str, message: str) -> None:
    if key == "ingest":
        key = site.key("ingest")
    answer = client(site).post("/ui/login", data={"key": key})
    assert answer.status_code == 401
    assert message in answer.text
    assert "set-cookie" not in answer.headers


def test_a_login_from_json_or_an_oversized_form_is_refused(site: Site) -> None:
    key = site.key("read")
    answer = client(site).post("/ui/login", json={"key": key})
    assert answer.status_code == 401
    answer = client(site).post("/ui/login", data={"key": key, "pad": "x" * 5000})
    assert answer.status_code == 401


def test_next_never_leaves_the_dashboard(site: Site) -> None:
    key = site.key("read")
    for target in [
        "https://evil.example/",
        "//evil.example/",
        "/v1/workflows",
        "/ui\\\\x",
        "",
        "/ui/../v1/workflows",
    ]:
        answer = client(site).post("/ui/login", data={"key": key, "next": target})
        assert answer.headers["location"] == "/ui/", target


def test_forged_expired_or_revoked_sessions_are_refused(site: Site) -> None:
    key = site.key("read")
    browser = login(site, key)
    cookie = browser.cookies["crmflow_dashboard"]
    key_id, expires, signature = cookie.split(".")
    assert browser.get("/ui/").status_code == 200
    for forged in [
        f"{key_id}.{int(expires) + 1}.{signature}",  # a longer life
        f"{int(key_id) + 1}.{expires}.{signature}",  # another key
        f"{key_id}.1.{signature}",  # expired
        "garbage",
    ]:
        other = client(site)
        other.cookies.set("crmflow_dashboard", forged)
        assert other.get("/ui/").status_code == 303, forged
    site.revoke(key)
    assert browser.get("/ui/").status_code == 303


def test_bad_input_on_pages(site: Site, tmp_path: Any) -> None:
    services.publish_files(site.app, [_example("onboarding.yaml")])
    browser = login(site, site.key("read"))
    cases = {
        "/ui/workflows/nope": (404, "no workflow &#39;nope&#39;"),
        "/ui/workflows/onboarding?version=7": (404, "no workflow &#39;onboarding&#39; version 7"),
        "/ui/workflows/onboarding?version=x": (400, "version: expected a version number"),
        "/ui/workflows/onboarding?status=sleeping": (400, "status: expected one of"),
        "/ui/workflows/Bad%20Key": (400, "workflow key"),
        "/ui/workflows/onboarding?record=" + "x" * 300: (400, "record"),
        "/ui/records/contact/nobody": (404, "no contact with id &#39;nobody&#39;"),
        "/ui/records/Bad%20Type/ann": (400, "object type"),
    }
    for path, (status, text) in cases.items():
        answer = browser.get(path)
        assert answer.status_code == status, path
        assert text in answer.text, (path, answer.text)
        assert "Traceback" not in answer.text
    assert browser.get("/ui/workflows/onboarding").status_code == 200


def test_every_asset_comes_from_the_dashboard(site: Site) -> None:
    services.publish_files(site.app, [_example("onboarding.yaml")])
    browser = login(site, site.key("read"))
    page = browser.get("/ui/workflows/onboarding").text
    for url in re.findall(r'(?:href|src)="([^"]+)"', page):
        assert not re.match(r"(?i)(https?:)?//", url) or "localhost:8233" in url, url
    assert browser.get("/ui/static/dashboard.css").status_code == 200


def _example(name: str) -> Path:
    return Path(__file__).resolve().parents[2] / "examples" / name


def test_a_scheduled_workflow_shows_its_schedule_and_next_runs(site: Site) -> None:
    services.publish_files(site.app, [_example("weekly-digest.yaml")])
    browser = login(site, site.key("admin"))
    listing = browser.get("/ui/").text
    assert "scheduled" in listing and "weekly-digest" in listing
    page = browser.get("/ui/workflows/weekly-digest").text
    runs = re.findall(r"<li>(\w{3} \d{4}-\d\d-\d\d \d\d:\d\d \w+)</li>", page)
    expected = [
        t.strftime("%a %Y-%m-%d %H:%M %Z")
        for t in _schedules.next_runs(site.app, "weekly-digest", 5)
    ]
    assert runs == expected and len(runs) == 5
    assert "inactive" in page and "once activated" in page
