"""What every command shares: checked argument types, options, the wiring of one
invocation (its `App`), and how errors become one line and an exit code."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import click
from sqlalchemy.exc import DBAPIError
from temporalio.client import Client
from temporalio.service import RPCError

from crmflow.activities.config import ConfigError
from crmflow.definitions import (
    DefinitionError,
    InvalidInput,
    check_event_name,
    check_list_name,
    check_object_type,
    check_record_id,
    check_workflow_key,
    shown,
)
from crmflow.services import App, OperationFailed, Settings, UserError
from crmflow.services import up as long_running
from crmflow.services.devserver import DevServerError
from crmflow.store import StoreError, ensure_postgres_database


class Checked(click.ParamType):
    """An argument checked by a rule of `crmflow.definitions` (README: "Limits and
    refusals"); a refusal is a usage error naming the argument."""

    def __init__(self, name: str, check: Callable[[str], str]) -> None:
        self.name = name
        self.check = check

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return self.check(value)
        except InvalidInput as exc:
            self.fail(str(exc), param, ctx)


RECORD_ID = Checked("record id", check_record_id)
OBJECT_TYPE = Checked("object type", check_object_type)
WORKFLOW_KEY = Checked("workflow key", check_workflow_key)
LIST_NAME = Checked("list name", check_list_name)
EVENT_NAME = Checked("event name", check_event_name)
VERSION = click.IntRange(1, 2**31 - 1)  # the store's version column is a 32-bit integer

FILE = click.Path(exists=True, dir_okay=False, readable=True, path_type=Path)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
object_option = click.option(
    "--object",
    "object_type",
    default="contact",
    show_default=True,
    metavar="TYPE",
    type=OBJECT_TYPE,
    help="Object type of the record ids.",
)
key_argument = click.argument("key", type=WORKFLOW_KEY)


def debugging() -> bool:
    return os.environ.get("CRMFLOW_DEBUG") == "1"


def first_line(exc: BaseException) -> str:
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig  # the driver's own message, without SQLAlchemy's SQL and links
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---------------------------------------------------------------- wiring

_HOST = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?$")


def check_temporal_address(address: str) -> str:
    """HOST:PORT (a host name, an IPv4 address or a bracketed IPv6 address, and a port)."""
    host, _, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            host = ""
    elif not _HOST.fullmatch(host):
        host = ""
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UserError(
            f"--temporal (or CRMFLOW_TEMPORAL) {shown(address)}: "
            "expected HOST:PORT, e.g. localhost:7233"
        )
    return address


class CliApp(App):
    async def client(self) -> Client:
        check_temporal_address(self.settings.temporal_address)
        try:
            return await super().client()
        except RuntimeError as exc:  # how the SDK reports a failed connection
            raise OperationFailed(
                f"cannot reach Temporal at {self.settings.temporal_address}: "
                "is `crmflow up` running?"
            ) from exc


def open_app(settings: Settings, *, create_database: bool = False) -> App:
    """The store (migrated) and a lazy Temporal client; an unusable database URL is bad input."""
    try:
        if create_database:
            # A role without access to the maintenance database may still use its own:
            # opening the store below reports the real problem, if there is one.
            with contextlib.suppress(Exception):
                ensure_postgres_database(settings.db_url)
        return CliApp(settings)
    except Exception as exc:
        if debugging():
            raise
        try:
            shown = long_running.shown_url(settings.db_url)
        except Exception:
            shown = settings.db_url
        raise UserError(f"cannot open the database {shown}: {first_line(exc)}") from None


class State:
    """What the global options configure; the App is opened on first use (`validate` and
    `schema` need no store)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._app: App | None = None

    def app(self) -> App:
        if self._app is None:
            self._app = open_app(self.settings)
        return self._app

    def __enter__(self) -> State:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._app is not None:
            self._app.close()


def state() -> State:
    return click.get_current_context().find_object(State)  # type: ignore[return-value]


def app() -> App:
    return state().app()


def report(exc: Exception) -> int:
    """Print an error the way a user should see it; return the exit code."""
    if isinstance(exc, DefinitionError):
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        return 2
    if isinstance(exc, UserError | StoreError | ConfigError):
        message, code = str(exc), 2
    elif isinstance(exc, OperationFailed | DevServerError):
        message, code = str(exc), 1
    elif isinstance(exc, OSError):
        message = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
        code = 2
    elif isinstance(exc, RPCError):
        message, code = f"Temporal refused: {exc.message}", 1
    else:
        message = (
            f"unexpected error: {type(exc).__name__}: {first_line(exc)} "
            "(CRMFLOW_DEBUG=1 shows the traceback)"
        )
        code = 1
    click.echo(f"crmflow: {message}", err=True)
    return code


class UsageError(click.UsageError):
    """A usage error on one line, as every other error: `crmflow: <message> (see `... --help`)`."""

    def __init__(self, error: click.UsageError) -> None:
        super().__init__(error.format_message(), error.ctx)

    def show(self, file: Any = None) -> None:
        message = " ".join(self.format_message().split())
        hint = f" (see `{self.ctx.command_path} --help`)" if self.ctx is not None else ""
        click.echo(f"crmflow: {message}{hint}", err=True)


def one_line(error: click.UsageError) -> click.UsageError:
    # A group called without a command prints its help, as click does.
    if isinstance(error, UsageError | click.exceptions.NoArgsIsHelpError):
        return error
    return UsageError(error)


class CrmflowGroup(click.Group):
    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise one_line(exc) from None
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            if debugging():
                raise
            ctx.exit(report(exc))


def fail(code: int) -> NoReturn:
    click.get_current_context().exit(code)
