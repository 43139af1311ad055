"""The dashboard: a read-only Starlette app, server-rendered with Jinja2, mounted on the API.

Every page but the login needs the session cookie of `_sessions`; a request without one is
sent to the login page. Pages set a Content-Security-Policy that allows only the app's own
stylesheet and forms (no script at all, nothing from elsewhere), and forbid framing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from crmflow.definitions import (
    EnrollmentStatus,
    InvalidInput,
    check_object_type,
    check_record_id,
    check_workflow_key,
)
from crmflow.store import create_session_factory

from . import _sessions, _views

STATUSES: tuple[str, ...] = tuple(status.value for status in EnrollmentStatus)
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class DashboardSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    temporal_ui_url: str = Field(
        default="http://localhost:8233",
        description="Base URL of the Temporal Web UI: each enrollment links to its execution.",
    )
    namespace: str = Field(default="default", description="The Temporal namespace of the links.")
    session_seconds: int = Field(
        default=12 * 3600, gt=0, description="How long a login lasts (the cookie's lifetime)."
    )


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none"


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("crmflow.dashboard", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["counts"] = _counts
    env.filters["q"] = lambda value: quote(str(value), safe="")
    return env


class Dashboard:
    def __init__(self, sessions: sessionmaker[Session], settings: DashboardSettings) -> None:
        self.sessions = sessions
        self.settings = settings
        self.templates = _environment()

    # ------------------------------------------------------------ plumbing

    def page(self, request: Request, name: str, http_status: int = 200, **context: Any) -> Response:
        root = request.scope.get("root_path", "")
        html = self.templates.get_template(name).render(
            root=root, statuses=STATUSES, settings=self.settings, **context
        )
        return HTMLResponse(html, status_code=http_status, headers=SECURITY_HEADERS)

    def error(self, request: Request, status: int, message: str) -> Response:
        viewer = getattr(request.state, "viewer", None)
        return self.page(request, "error.html", status, viewer=viewer, message=message)

    def guarded(
        self, handler: Callable[[Request], Response]
    ) -> Callable[[Request], Awaitable[Response]]:
        """A page for logged-in viewers: others are sent to the login page."""

        async def endpoint(request: Request) -> Response:
            return await _threaded(self._guarded, handler, request)

        return endpoint

    def _guarded(self, handler: Callable[[Request], Response], request: Request) -> Response:
        with self.sessions() as session:
            viewer = _sessions.viewer(session, request.cookies.get(_sessions.COOKIE))
        if viewer is None:
            root = request.scope.get("root_path", "")
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"{root}/login?{urlencode({'next': target})}", status_code=303)
        request.state.viewer = viewer
        try:
            return handler(request)
        except _views.NotFound as exc:
            return self.error(request, 404, str(exc))
        except _BadInput as exc:
            return self.error(request, 400, str(exc))

    # ------------------------------------------------------------ pages

    def login_form(self, request: Request) -> Response:
        return self.page(request, "login.html", next=_safe_next(request, request.query_params))

    async def login(self, request: Request) -> Response:
        form = await _form(request)
        target = _safe_next(request, form)
        return await _threaded(self._login, request, form.get("key", ""), target)

    def _login(self, request: Request, key: str, target: str) -> Response:
        with self.sessions() as session:
            found = _sessions.login(session, key)
        if isinstance(found, str):
            return self.page(request, "login.html", 401, next=target, problem=found)
        _, row = found
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            _sessions.COOKIE,
            _sessions.cookie_value(row, self.settings.session_seconds),
            max_age=self.settings.session_seconds,
            path=request.scope.get("root_path", "") or "/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    def logout(self, request: Request) -> Response:
        root = request.scope.get("root_path", "")
        response = RedirectResponse(f"{root}/login", status_code=303)
        response.delete_cookie(_sessions.COOKIE, path=root or "/", httponly=True, samesite="strict")
        return response

    def workflows(self, request: Request) -> Response:
        return self.page(
            request,
            "workflows.html",
            viewer=request.state.viewer,
            workflows=_views.workflows(self.sessions),
        )

    def workflow(self, request: Request) -> Response:
        key = _checked(check_workflow_key, request.path_params["key"], "workflow key")
        query = request.query_params
        version = _version(query.get("version"))
        status = query.get("status") or None
        if status is not None and status not in STATUSES:
            raise _BadInput(f"status: expected one of {', '.join(STATUSES)}")
        record_id = (query.get("record") or "").strip() or None
        if record_id is not None:
            record_id = _checked(check_record_id, record_id, "record")
        found = _views.workflow_page(
            self.sessions, key, version=version, status=status, record_id=record_id
        )
        for enrollment in found["enrollments"]:
            enrollment["temporal_url"] = _views.temporal_link(
                self.settings.temporal_ui_url,
                self.settings.namespace,
                enrollment["temporal_workflow_id"],
            )
        return self.page(
            request,
            "workflow.html",
            viewer=request.state.viewer,
            w=found,
            svg=Markup(found["svg"]) if found["svg"] else None,  # noqa: S704 - XML-serialized
            status=status,
            record=record_id or "",
        )

    def record(self, request: Request) -> Response:
        object_type = _checked(check_object_type, request.path_params["object_type"], "object type")
        record_id = _checked(check_record_id, request.path_params["record_id"], "record id")
        found = _views.record_page(self.sessions, object_type, record_id)
        for enrollment in found["enrollments"]:
            enrollment["temporal_url"] = _views.temporal_link(
                self.settings.temporal_ui_url,
                self.settings.namespace,
                enrollment["temporal_workflow_id"],
            )
        return self.page(request, "record.html", viewer=request.state.viewer, r=found)


class _BadInput(Exception):
    pass


def _checked(check: Callable[[str], str], value: str, what: str) -> str:
    try:
        return check(value)
    except InvalidInput as exc:
        raise _BadInput(f"{what}: {exc}") from None


LOGIN_BODY_BYTES = 4096


async def _form(request: Request) -> dict[str, str]:
    """The login form's fields (URL-encoded, as a browser posts it; at most 4 KiB: a key is 48
    characters). Anything else reads as an empty form, which the login refuses."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > LOGIN_BODY_BYTES:
            return {}
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=8)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {name: values[0] for name, values in fields.items() if values}


def _version(raw: str | None) -> int | None:
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 2**31 - 1:
        raise _BadInput("version: expected a version number (1, 2, ...)")
    return int(raw)


def _safe_next(request: Request, source: Any) -> str:
    """Where to go after the login: a page of the dashboard only (never another site)."""
    root = request.scope.get("root_path", "")
    target = source.get("next")
    if (
        isinstance(target, str)
        and target.startswith(f"{root}/")
        and not target.startswith("//")
        and "\\" not in target
        and ".." not in target.split("?")[0].split("/")
        and all(ch.isprintable() for ch in target)
    ):
        return target
    return f"{root}/"


async def _threaded(fn: Callable[..., Response], *args: Any) -> Response:
    """Store reads off the event loop."""
    return await run_in_threadpool(fn, *args)


def create_dashboard(engine: Engine, settings: DashboardSettings | None = None) -> Starlette:
    """The dashboard as an ASGI app over a (migrated) store, to mount on the API."""
    dashboard = Dashboard(
        create_session_factory(engine, read_only=True), settings or DashboardSettings()
    )
    static = files("crmflow.dashboard") / "static"
    return Starlette(
        routes=[
            Route("/login", dashboard.login_form, methods=["GET"]),
            Route("/login", dashboard.login, methods=["POST"]),
            Route("/logout", dashboard.logout, methods=["POST"]),
            Route("/", dashboard.guarded(dashboard.workflows), methods=["GET"]),
            Route("/workflows/{key}", dashboard.guarded(dashboard.workflow), methods=["GET"]),
            Route(
                "/records/{object_type}/{record_id}",
                dashboard.guarded(dashboard.record),
                methods=["GET"],
            ),
            Mount("/static", StaticFiles(directory=str(static)), name="static"),
        ]
    )


PREFIX = "/ui"


def mount_dashboard(
    api: Any, *, engine: Engine, settings: DashboardSettings | None = None, prefix: str = PREFIX
) -> None:
    """Serve the dashboard under `prefix` of the API app, and send `/` there."""
    api.mount(prefix, create_dashboard(engine, settings))

    async def home(request: Request) -> Response:
        return RedirectResponse(f"{request.scope.get('root_path', '')}{prefix}/", status_code=307)

    api.add_route("/", home, include_in_schema=False)
