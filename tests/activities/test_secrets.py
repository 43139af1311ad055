"""Secrets stay secret: `${env:NAME}` reads only what the operator allows, also in webhook URLs,
and neither those values nor credentials written in a URL reach a step outcome (the store), an
activity failure (the Temporal history), or the worker's log."""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest
from tests_support import Crash, crashing_worker, enroll_one, result_of, steps_of

from crmflow import services
from crmflow.activities._secrets import Secrets, redact_url_credentials
from crmflow.activities.config import ConfigError, OutwardSettings

ALLOW = OutwardSettings(allow_private_webhooks=True)
PASSWORD = "pa55-in-the-url"
PATH_SECRET = "path-s3cret-value"
QUERY_SECRET = "query-s3cret+value"


def manual(actions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "key": "secrets",
        "name": "Secrets",
        "enrollment": {"trigger": "manual"},
        "actions": [
            *actions,
            {"id": "after", "type": "set_property", "property": "done", "value": "yes"},
        ],
    }


def hook(action_id: str, url: str, **fields: Any) -> dict[str, Any]:
    return {"id": action_id, "type": "webhook", "url": url, **fields}


async def history_of(env, app) -> Any:
    [enrollment] = services.list_enrollments(app, "secrets")
    return await env.client.get_workflow_handle(enrollment["temporal_workflow_id"]).fetch_history()


async def history_text(env, app) -> str:
    return "".join(str(event) for event in (await history_of(env, app)).events)


async def failures_text(env, app) -> str:
    """What the history keeps of the activities' failures (messages, stack traces)."""
    return "".join(
        str(event.activity_task_failed_event_attributes.failure)
        for event in (await history_of(env, app)).events
        if event.HasField("activity_task_failed_event_attributes")
    )


async def run(app, env, new_worker, publish, actions, *, outward=ALLOW) -> dict[str, str]:
    await publish(manual(actions))
    services.set_record(app, "contact", "ann", {"email": "ann@example.com"})
    async with new_worker(outward=outward):
        result = await result_of(env, await enroll_one(app, "secrets", "ann"))
    assert result.status == "completed"
    steps = steps_of(app, "secrets")
    assert steps["after"] == 'done = "yes"'
    return steps


async def test_only_allowed_variables_are_read(
    app, env, new_worker, publish, receiver, monkeypatch
):
    values = {
        "CRMFLOW_DB": "postgresql://crm:db-password@db/crm",
        "CRMFLOW_SMTP_PASSWORD": "smtp-password",
        "CRM_TOKEN": "unlisted-token",
        "PARTNER_TOKEN": "listed-token",
        "CRMFLOW_SECRET_API": "secret-token",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    url = receiver.url("/ok")
    steps = await run(
        app,
        env,
        new_worker,
        publish,
        [
            hook(f"h-{index}", url, headers={"X-Value": f"${{env:{name}}}"})
            for index, name in enumerate(values)
        ],
        outward=OutwardSettings(
            allow_private_webhooks=True, webhook_env=frozenset({"PARTNER_TOKEN"})
        ),
    )
    assert steps["h-0"] == (
        "failed: ${env:CRMFLOW_DB} is refused: crmflow's own settings are never sent "
        "(name the variable CRMFLOW_SECRET_...)"
    )
    assert steps["h-1"].startswith("failed: ${env:CRMFLOW_SMTP_PASSWORD} is refused")
    assert steps["h-2"] == (
        "failed: ${env:CRM_TOKEN} is refused: only CRMFLOW_SECRET_* variables and those "
        "listed in CRMFLOW_WEBHOOK_ENV are read"
    )
    assert steps["h-3"] == f"POST {url}: 200"
    assert steps["h-4"] == f"POST {url}: 200"
    assert sorted(r.headers["x-value"] for r in receiver.requests) == [
        "listed-token",
        "secret-token",
    ]
    everything = " ".join(steps.values()) + await history_text(env, app)
    for value in values.values():
        assert value not in everything


@pytest.mark.parametrize(
    "listed", ["CRMFLOW_DB", "CRMFLOW_SMTP_PASSWORD", "CRMFLOW_TEMPORAL_API_KEY", "not a name"]
)
def test_the_allow_list_cannot_open_crmflow_settings(listed):
    with pytest.raises(ConfigError, match="^CRMFLOW_WEBHOOK_ENV: "):
        OutwardSettings.from_env({"CRMFLOW_WEBHOOK_ENV": f"PARTNER_TOKEN,{listed}"})


def test_the_allow_list_is_read():
    settings = OutwardSettings.from_env({"CRMFLOW_WEBHOOK_ENV": " A_TOKEN, CRMFLOW_SECRET_B ,"})
    assert settings.webhook_env == {"A_TOKEN", "CRMFLOW_SECRET_B"}
    assert OutwardSettings.from_env({}).webhook_env == frozenset()


async def test_secrets_in_the_url_are_resolved_in_the_worker_and_never_shown(
    app, env, new_worker, publish, receiver, monkeypatch
):
    monkeypatch.setenv("CRMFLOW_SECRET_PATH", PATH_SECRET)
    monkeypatch.setenv("CRMFLOW_SECRET_QUERY", QUERY_SECRET)
    base = f"http://hook-user:{PASSWORD}@127.0.0.1:{receiver.port}"
    query = "?key=${env:CRMFLOW_SECRET_QUERY}"
    steps = await run(
        app,
        env,
        new_worker,
        publish,
        [
            hook("ok", base + "/ok/${env:CRMFLOW_SECRET_PATH}" + query),
            hook("missing", base + "/missing" + query),
            hook("whole", "${env:CRMFLOW_SECRET_URL}"),
        ],
    )
    # The secrets reached the receiver, in the path, the query and as Basic credentials.
    [request] = receiver.to(f"/ok/{PATH_SECRET}")
    assert request.target.endswith(f"?key={QUERY_SECRET}")
    credentials = base64.b64decode(request.headers["authorization"].split()[1]).decode()
    assert credentials == f"hook-user:{PASSWORD}"
    # Steps show the placeholders, never the values nor the URL's credentials.
    assert steps["ok"] == (
        f"POST http://127.0.0.1:{receiver.port}/ok/${{env:CRMFLOW_SECRET_PATH}}: 200"
    )
    assert (
        steps["missing"] == f"failed: POST http://127.0.0.1:{receiver.port}/missing: 404 Not Found"
    )
    assert (
        steps["whole"] == "failed: environment variable CRMFLOW_SECRET_URL is not set on the worker"
    )
    # The definition and the history keep the placeholders. (A password written in the
    # definition's URL is in the history as part of the definition: secrets go in `${env:...}`.)
    history = await history_text(env, app)
    assert "${env:CRMFLOW_SECRET_PATH}" in history
    for secret in (PATH_SECRET, QUERY_SECRET):
        assert secret not in history
    for secret in (PATH_SECRET, QUERY_SECRET, PASSWORD):
        assert secret not in " ".join(steps.values())


async def test_retried_failures_reach_temporal_and_the_log_masked(
    app, env, new_worker, publish, receiver, monkeypatch, caplog
):
    """A 5xx is retried: each attempt's error lands in the history and the worker's log."""
    monkeypatch.setenv("CRMFLOW_SECRET_URL", receiver.url(f"/down?token={PATH_SECRET}"))
    monkeypatch.setenv("CRMFLOW_SECRET_QUERY", QUERY_SECRET)
    base = f"http://hook-user:{PASSWORD}@127.0.0.1:{receiver.port}"
    caplog.set_level(logging.WARNING)
    steps = await run(
        app,
        env,
        new_worker,
        publish,
        [
            hook("flaky", base + "/flaky?key=${env:CRMFLOW_SECRET_QUERY}"),
            hook("down", "${env:CRMFLOW_SECRET_URL}"),
            # A connection refused (nothing listens on port 9) names the URL too.
            hook("refused", f"http://u:{PASSWORD}@127.0.0.1:9/x?key=${{env:CRMFLOW_SECRET_QUERY}}"),
        ],
    )
    assert steps["flaky"] == f"POST http://127.0.0.1:{receiver.port}/flaky: 200"
    assert steps["down"] == (
        "failed after retries: WebhookServerError: POST ${env:CRMFLOW_SECRET_URL}: 503"
    )
    assert steps["refused"].startswith(
        "failed after retries: WebhookConnection: POST http://127.0.0.1:9/x: "
    )
    history, failures = await history_text(env, app), await failures_text(env, app)
    assert "WebhookServerError" in failures and "WebhookConnection" in failures
    # The worker logs each failed attempt, with its exception.
    assert f"POST http://127.0.0.1:{receiver.port}/flaky: 500" in caplog.text
    assert "POST ${env:CRMFLOW_SECRET_URL}: 503" in failures
    for secret in (PATH_SECRET, QUERY_SECRET):
        assert secret not in history
    for secret in (PATH_SECRET, QUERY_SECRET, PASSWORD):
        assert secret not in failures
        assert secret not in caplog.text
        assert secret not in " ".join(steps.values())


class LeakyCrash(Crash):
    """A worker that dies at every attempt with the secret in its exception's message."""

    def checkpoint(self, point, input):
        if point == self.point:
            self.crashed.add(input.action.id)
            raise RuntimeError(f"died sending {PATH_SECRET} to http://hook-user:{PASSWORD}@h/")


async def test_an_unexpected_error_reaches_temporal_and_the_log_masked(
    app, env, publish, receiver, monkeypatch, caplog
):
    monkeypatch.setenv("CRMFLOW_SECRET_PATH", PATH_SECRET)
    await publish(manual([hook("hook", receiver.url("/ok") + "?t=${env:CRMFLOW_SECRET_PATH}")]))
    services.set_record(app, "contact", "ann", {"email": "ann@example.com"})
    caplog.set_level(logging.WARNING)
    crash = LeakyCrash("before_effect")
    async with crashing_worker(env, app, crash):
        await result_of(env, await enroll_one(app, "secrets", "ann"))
    assert crash.crashed == {"hook"}
    masked = "died sending ${env:CRMFLOW_SECRET_PATH} to http://***@h/"
    assert steps_of(app, "secrets")["hook"] == f"failed after retries: RuntimeError: {masked}"
    failures = await failures_text(env, app)
    assert masked in failures and masked in caplog.text
    for text in (failures, caplog.text, await history_text(env, app)):
        assert PATH_SECRET not in text and PASSWORD not in text


def test_redaction_masks_values_raw_and_percent_encoded():
    secrets = Secrets({"CRMFLOW_SECRET_A": "a b/c?d", "CRMFLOW_SECRET_S": "xyz"})
    resolved = secrets.resolve("https://h/${env:CRMFLOW_SECRET_A}/${env:CRMFLOW_SECRET_S}", str)
    assert resolved == "https://h/a b/c?d/xyz"
    shown = secrets.redact("a b/c?d, a%20b%2Fc%3Fd, a%20b/c%3Fd, a+b%2Fc%3Fd")
    assert shown == ", ".join(["${env:CRMFLOW_SECRET_A}"] * 4)
    # Values shorter than 4 characters are no secret worth garbling every message for.
    assert secrets.redact("xyz") == "xyz"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("POST https://user:pass@h.example/x: 500", "POST https://***@h.example/x: 500"),
        ("GET http://token@h.example", "GET http://***@h.example"),
        (
            "redirect to HTTPS://a:b@c/d and ftp://e:f@g/",
            "redirect to HTTPS://***@c/d and ftp://***@g/",
        ),
        ("https://h.example/path?x=a@b", "https://h.example/path?x=a@b"),
        ("mail ann@example.com", "mail ann@example.com"),
    ],
)
def test_url_credentials_are_masked_anywhere_in_a_message(text, expected):
    assert redact_url_credentials(text) == expected
