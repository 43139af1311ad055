"""The dashboard in a real browser (the system Chromium, headless, driven by Playwright) over
enrollments that a real worker ran on the Temporal dev server in the test: pages load with no
console error, the graph shows the counts, a filter narrows the enrollments, the record page
explains a suppressed record, and a phone-width screen needs no sideways scrolling.

Screenshots go to test-artifacts/screenshots/ (not committed)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from crmflow import services

Site = Any  # conftest.Site
Tab = Any  # conftest.Tab


def definition(key: str) -> dict[str, Any]:
    return {
        "key": key,
        "name": "Welcome then wait",
        "enrollment": {"trigger": "manual"},
        "settings": {"suppression_lists": ["do-not-contact"]},
        "actions": [
            {"id": "welcome", "type": "send_email", "subject": "Hi", "body": "Hello"},
            {"id": "wait", "type": "delay", "duration": "1h"},
            {"id": "task", "type": "create_task", "title": "Call"},
        ],
    }


def run_enrollments(site: Site, tmp_path: Path, eventually: Any) -> str:
    """ann and bob reach the 1-hour delay (bob's welcome fails: no address); bob is then
    unenrolled; carl, on the suppression list, is refused."""
    key = f"welcome-{uuid.uuid4().hex[:6]}"
    path = tmp_path / f"{key}.yaml"
    with path.open("w") as handle:
        YAML().dump(definition(key), handle)
    app = site.app
    services.publish_files(app, [path])
    site.run(services.activate(app, key))
    services.set_record(app, "contact", "ann", {"email": "ann@example.com", "firstname": "Ann"})
    services.set_record(app, "contact", "bob", {"firstname": "Bob"})
    services.set_record(app, "contact", "carl", {"email": "carl@example.com"})
    services.change_list(app, "do-not-contact", ["carl"], object_type="contact", add=True)
    outcomes = site.run(services.enroll(app, key, ["ann", "bob", "carl"]))
    assert [o.ok for o in outcomes] == [True, True, False]

    def at_wait() -> bool:
        found = services.list_enrollments(app, key)
        return len(found) == 2 and all(
            any(s["action_id"] == "wait" for s in e["steps"]) for e in found
        )

    eventually(at_wait, what="ann and bob to reach the delay")
    site.run(services.unenroll(app, key, ["bob"]))
    return key


def log_in(tab: Tab, site: Site, path: str = "/ui/") -> None:
    page = tab.page
    page.goto(site.url + path)
    assert page.url.startswith(site.url + "/ui/login")
    tab.screenshot("login")
    page.fill("#key", site.key("read"))
    page.click("button[type=submit]")
    page.wait_for_url(site.url + path)


def test_dashboard_in_a_browser(live_site: Site, tab: Tab, tmp_path: Path, eventually: Any) -> None:
    site, page = live_site, tab.page
    key = run_enrollments(site, tmp_path, eventually)
    log_in(tab, site)

    # The workflows list.
    row = page.locator(f"#workflows tr[data-key='{key}']")
    assert "active" in row.inner_text()
    assert "1 running, 1 unenrolled" in row.inner_text()
    tab.screenshot("workflows")

    # The workflow page: the graph with the counts of what ran.
    row.locator("a").first.click()
    page.wait_for_url(f"{site.url}/ui/workflows/{key}")
    graph = page.locator("#graph svg")
    assert graph.is_visible()
    welcome = graph.locator("g[data-action='welcome']").text_content()
    wait = graph.locator("g[data-action='wait']").text_content()
    task = graph.locator("g[data-action='task']").text_content()
    assert "2 reached · 0 waiting · 1 failed" in welcome, welcome
    assert "2 reached · 1 waiting · 0 failed" in wait, wait
    assert "0 reached · 0 waiting · 0 failed" in task, task
    counts = page.locator("#counts tr[data-action='wait'] td").all_inner_texts()
    assert counts == ["wait", "delay", "2", "0", "1", "0"]  # bob's wait was interrupted
    temporal = page.locator("#enrollments a.temporal").first.get_attribute("href")
    assert temporal.startswith("http://localhost:8233/namespaces/default/workflows/")
    tab.screenshot("workflow")

    # Filters narrow the enrollments: by status, then by record.
    assert page.locator("#enrollments tbody tr").count() == 2
    page.select_option("select[name=status]", "unenrolled")
    page.click("#filters button")
    page.wait_for_url(f"{site.url}/ui/workflows/{key}?status=unenrolled&record=")
    rows = page.locator("#enrollments tbody tr")
    assert rows.count() == 1 and rows.first.get_attribute("data-record") == "bob"
    page.select_option("select[name=status]", "")
    page.fill("input[name=record]", "ann")
    page.click("#filters button")
    page.wait_for_url(f"{site.url}/ui/workflows/{key}?status=&record=ann")
    rows = page.locator("#enrollments tbody tr")
    assert rows.count() == 1 and rows.first.get_attribute("data-status") == "running"
    page.select_option("select[name=status]", "completed")
    page.click("#filters button")
    assert page.locator("#no-enrollments").is_visible()
    tab.screenshot("workflow-filtered")

    # The record page of ann: properties, enrollments with their steps.
    page.goto(f"{site.url}/ui/workflows/{key}?record=ann")
    page.locator("#enrollments a").first.click()
    page.wait_for_url(f"{site.url}/ui/records/contact/ann")
    assert "ann@example.com" in page.locator("#properties").inner_text()
    assert page.locator(f"article.enrollment[data-workflow='{key}']").count() == 1
    tab.screenshot("record-enrolled")

    # The record page of carl explains why he is not enrolled.
    page.goto(f"{site.url}/ui/records/contact/carl")
    why = page.locator(f"#explanations li[data-workflow='{key}']")
    assert why.get_attribute("data-state") == "suppressed"
    assert "suppressed: member of do-not-contact" in why.inner_text()
    assert "do-not-contact" in page.locator("#lists").inner_text()
    tab.screenshot("record-suppressed")

    # A phone-width screen: every page fits without scrolling sideways.
    page.set_viewport_size({"width": 360, "height": 780})
    for path, name in [
        ("/ui/", "phone-workflows"),
        (f"/ui/workflows/{key}", "phone-workflow"),
        ("/ui/records/contact/ann", "phone-record"),
    ]:
        page.goto(site.url + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 360, (path, width)
        tab.screenshot(name)

    assert tab.errors == []
