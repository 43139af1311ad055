"""`crmflow api-keys create|list|revoke`, `crmflow serve` (a real process on a random port,
stopped with SIGINT) and the local admin key of `crmflow up`."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
from api_servers import free_port
from click.testing import CliRunner, Result

from crmflow.api import ApiSettings
from crmflow.api.serving import api_settings
from crmflow.cli import cli
from crmflow.services import App, Settings
from crmflow.services.api_keys import LOCAL_ADMIN_KEY_NAME, list_api_keys, local_admin_key
from crmflow.store import KEY_PATTERN


def run(db_url: str, *args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(cli, ["--db", db_url, *args], env={"CRMFLOW_DEBUG": None})
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result


def test_api_keys_create_list_revoke(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'crmflow.db'}"
    key = run(db, "api-keys", "create", "forms", "--scope", "ingest").stdout.strip()
    assert KEY_PATTERN.fullmatch(key), key
    made = json.loads(run(db, "api-keys", "create", "ops", "--scope", "admin", "--json").stdout)
    assert made["name"] == "ops"
    assert made["scope"] == "admin"
    assert KEY_PATTERN.fullmatch(made["key"])
    listed = json.loads(run(db, "api-keys", "list", "--json").stdout)
    assert [(k["name"], k["scope"], k["revoked_at"]) for k in listed] == [
        ("forms", "ingest", None),
        ("ops", "admin", None),
    ]
    assert all(key not in json.dumps(k) for k in listed)  # the key itself is never shown again
    assert "forms" in run(db, "api-keys", "list").stdout
    run(db, "api-keys", "revoke", "forms")
    listed = json.loads(run(db, "api-keys", "list", "--json").stdout)
    assert listed[0]["revoked_at"] is not None
    assert "no active API key" in run(db, "api-keys", "revoke", "forms", code=2).stderr
    assert (
        "exists already" in run(db, "api-keys", "create", "ops", "--scope", "read", code=2).stderr
    )
    bad = run(db, "api-keys", "create", "a b", "--scope", "read", code=2).stderr
    assert bad.startswith("crmflow: API key name")
    assert len(bad.strip().splitlines()) == 1
    assert "--scope" in run(db, "api-keys", "create", "x", "--scope", "root", code=2).stderr


def test_serve_answers_and_stops_on_sigint(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'crmflow.db'}"
    key = run(db, "api-keys", "create", "ops", "--scope", "admin").stdout.strip()
    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "crmflow"), "--db", db, "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "CRMFLOW_TEMPORAL": f"127.0.0.1:{free_port()}"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "serve did not answer within 30 s"
            time.sleep(0.1)
        headers = {"Authorization": f"Bearer {key}"}
        put = httpx.put(
            f"{url}/v1/records/contact/ann", json={"properties": {"a": 1}}, headers=headers
        )
        assert put.status_code == 200, put.text
        assert httpx.get(f"{url}/v1/records/contact/ann").status_code == 401
        assert httpx.get(f"{url}/docs").status_code == 200
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503  # no Temporal there
        assert ready.json()["checks"] == {"store": "ok", "temporal": "unreachable"}
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert f"crmflow API on http://localhost:{port}" in out
    assert "Traceback" not in err


def test_serve_on_a_port_in_use_says_so(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'crmflow.db'}"
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        result = run(db, "serve", "--port", str(port), code=1)
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_local_admin_key_of_up(tmp_path: Path) -> None:
    app = App(Settings(db_url=f"sqlite:///{tmp_path / 'crmflow.db'}"))
    try:
        path = tmp_path / ".crmflow" / "admin-key"
        found, made = local_admin_key(app, path)
        assert (found, made) == (path, True)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        key = path.read_text().strip()
        assert KEY_PATTERN.fullmatch(key)
        assert local_admin_key(app, path) == (path, False)
        assert path.read_text().strip() == key
        path.unlink()  # lost: a new key, and the old one revoked
        assert local_admin_key(app, path) == (path, True)
        assert path.read_text().strip() != key
        keys = list_api_keys(app)
        assert [(k["name"], k["scope"], k["revoked_at"] is None) for k in keys] == [
            (LOCAL_ADMIN_KEY_NAME, "admin", False),
            (LOCAL_ADMIN_KEY_NAME, "admin", True),
        ]
    finally:
        app.close()


def test_serve_refuses_a_bad_setting_from_the_environment(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'crmflow.db'}"
    result = CliRunner().invoke(
        cli, ["--db", db, "serve"], env={"CRMFLOW_API_RATE_LIMIT": "lots", "CRMFLOW_DEBUG": None}
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("crmflow: CRMFLOW_API_RATE_LIMIT='lots': ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_api_settings_from_the_environment() -> None:
    settings = api_settings({"CRMFLOW_API_RATE_LIMIT": "0", "CRMFLOW_API_MAX_BODY_BYTES": "4096"})
    assert settings.rate_limit_per_second == 0
    assert settings.max_body_bytes == 4096
    assert settings.rate_limit_burst == ApiSettings().rate_limit_burst
