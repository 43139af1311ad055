"""The dashboard served by `crmflow serve` / `up` links to the Temporal Web UI the settings name
(CRMFLOW_TEMPORAL_UI_URL; `up` uses its own dev server's UI) in the settings' namespace."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.routing import Mount, Route

from crmflow.api.serving import build_api
from crmflow.services import App, Settings


def dashboard_settings(app: App) -> object:
    api = build_api(app)
    [mount] = [r for r in api.routes if isinstance(r, Mount) and r.path == "/ui"]
    login = next(r for r in mount.routes if isinstance(r, Route) and r.path == "/login")
    return login.endpoint.__self__.settings  # type: ignore[attr-defined]


def test_the_links_follow_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMFLOW_TEMPORAL_UI_URL", "https://temporal.example.com")
    app = App(Settings(db_url=f"sqlite:///{tmp_path / 's.db'}", namespace="sales"))
    try:
        settings = dashboard_settings(app)
        assert settings.temporal_ui_url == "https://temporal.example.com"  # type: ignore[attr-defined]
        assert settings.namespace == "sales"  # type: ignore[attr-defined]
    finally:
        app.close()


def test_the_default_is_the_local_web_ui(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRMFLOW_TEMPORAL_UI_URL", raising=False)
    app = App(Settings(db_url=f"sqlite:///{tmp_path / 's.db'}"))
    try:
        assert dashboard_settings(app).temporal_ui_url == "http://localhost:8233"  # type: ignore[attr-defined]
    finally:
        app.close()
