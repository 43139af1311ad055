"""The web dashboard (read-only): workflows with their graph and live counts, enrollments,
records and why they are (not) enrolled. Server-rendered from Jinja2 templates; every asset
ships in this package; no script.

    mount_dashboard(api_app, engine=engine, settings=DashboardSettings(...))

serves it under `/ui` of the API app (and redirects `/` there). Viewers log in with an API key
of scope read or admin; see `_sessions` for the cookie.
"""

from ._app import PREFIX, DashboardSettings, create_dashboard, mount_dashboard

__all__ = ["PREFIX", "DashboardSettings", "create_dashboard", "mount_dashboard"]
