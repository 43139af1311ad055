"""`crmflow serve` and `crmflow api-keys create|list|revoke` (SPEC §4, §7)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import click

from crmflow.api import ApiSettings
from crmflow.api.serving import api_settings, build_api, serve_api, url_of
from crmflow.services import App, Settings, UserError
from crmflow.services import api_keys as _api_keys
from crmflow.services.publishing import ServiceApp
from crmflow.services.up import shown_url, stop_on_signals
from crmflow.store import ApiScope

from . import _output as output

SCOPES = click.Choice([scope.value for scope in ApiScope])


def _state() -> Any:
    """The CLI's State (its global options), from the root context."""
    return click.get_current_context().find_root().obj


def open_service_app(settings: Settings) -> App:
    try:
        return ServiceApp(settings)
    except Exception as exc:
        raise UserError(f"cannot open the database {shown_url(settings.db_url)}: {exc}") from None


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
def serve(host: str, port: int) -> None:
    """Run the HTTP API (docs at /docs) until Ctrl-C."""
    settings = api_settings(os.environ)
    app = open_service_app(_state().settings)
    try:
        asyncio.run(_serve(app, settings, host, port))
    finally:
        app.close()


async def _serve(app: App, settings: ApiSettings, host: str, port: int) -> None:
    url = url_of(host, port)
    with stop_on_signals() as stop:
        await serve_api(
            build_api(app, settings),
            stop,
            host=host,
            port=port,
            on_ready=lambda: click.echo(
                f"crmflow API on {url} (docs {url}/docs; store "
                f"{shown_url(app.settings.db_url)}); Ctrl-C to stop"
            ),
        )
    click.echo("stopped")


@click.group("api-keys")
def api_keys() -> None:
    """API keys of the HTTP API: create, list, revoke."""


@api_keys.command("create")
@click.argument("name")
@click.option("--scope", required=True, type=SCOPES, help="What the key may do.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def create(name: str, scope: str, as_json: bool) -> None:
    """Make a key and print it (only now: the store keeps a hash of it)."""
    created = _api_keys.create_api_key(_state().app(), name, scope)
    if as_json:
        output.print_json(created.as_json())
    else:
        click.echo(created.key)


@api_keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def list_keys(as_json: bool) -> None:
    """Every key (revoked ones too), without the keys themselves."""
    found = _api_keys.list_api_keys(_state().app())
    if as_json:
        output.print_json(found)
        return
    if not found:
        click.echo("no API key: make one with `crmflow api-keys create NAME --scope admin`")
        return
    rows = [
        [
            k["name"],
            k["scope"],
            f"{k['hint']}…",
            output.when(k["created_at"]),
            output.when(k["last_used_at"]),
            output.when(k["revoked_at"]) if k["revoked_at"] else "active",
        ]
        for k in found
    ]
    output.out().print(
        output.table(["name", "scope", "key", "created", "last used", "revoked"], rows)
    )


@api_keys.command("revoke")
@click.argument("name")
def revoke(name: str) -> None:
    """Revoke a key: every API process refuses it within 2 s."""
    _api_keys.revoke_api_key(_state().app(), name)
    click.echo(f"revoked {name}")
