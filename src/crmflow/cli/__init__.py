"""The `crmflow` command line: thin click commands over `crmflow.services`.

Exit codes (SPEC §4): 0 ok, 1 the operation failed, 2 bad input. Every error a user can cause
is reported on stderr as `crmflow: <message>`, never as a traceback (`CRMFLOW_DEBUG=1` shows
the traceback of unexpected errors).
"""

from __future__ import annotations

import contextlib
import os
import sys

import click

from crmflow.services import Settings

from . import _api, _enrollments, _insights, _records, _running, _workflows
from ._common import CrmflowGroup, State

# ---------------------------------------------------------------- the group


@click.group(
    cls=CrmflowGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--db",
    "db_url",
    metavar="URL",
    help="Store URL (sqlite:///… or postgresql://…). [env: CRMFLOW_DB; default: "
    "sqlite:///.crmflow/crmflow.db]",
)
@click.option(
    "--temporal",
    "temporal_address",
    metavar="HOST:PORT",
    help="Temporal frontend address. [env: CRMFLOW_TEMPORAL; default: localhost:7233]",
)
@click.option(
    "--namespace",
    metavar="NS",
    help="Temporal namespace. [env: CRMFLOW_NAMESPACE; default: default]",
)
@click.version_option(package_name="crmflow", prog_name="crmflow")
@click.pass_context
def cli(
    ctx: click.Context, db_url: str | None, temporal_address: str | None, namespace: str | None
) -> None:
    """CRM automation workflows, run as durable Temporal workflows."""
    settings = Settings.from_env(
        db_url=db_url, temporal_address=temporal_address, namespace=namespace
    )
    ctx.obj = ctx.with_resource(State(settings))


for _command in (
    _running.up,
    _running.worker,
    _running.simulate,
    _workflows.validate,
    _workflows.schema,
    _workflows.publish,
    _workflows.workflows,
    _workflows.show,
    _workflows.schedule,
    _workflows.review,
    _workflows.activate,
    _workflows.deactivate,
    _workflows.remove,
    _records.records,
    _records.lists,
    _records.events,
    _enrollments.enroll,
    _enrollments.unenroll,
    _enrollments.enrollments,
    _enrollments.history,
    _enrollments.changes,
    _enrollments.outbox,
    _enrollments.tasks,
    _api.serve,
    _api.api_keys,
    _insights.graph,
    _insights.stats,
):
    cli.add_command(_command)


def main() -> None:
    try:
        cli.main(prog_name="crmflow")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    else:  # pragma: no cover - click's standalone mode always exits
        code = 0
    # The Temporal SDK's Rust threads can abort interpreter teardown ("PyGILState_Release: thread
    # state must be current", temporalio/sdk-python#300; measured here: about 1 exit in 4 after
    # any RPC). Everything is closed by now (click closed the store), so skip the teardown.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):  # e.g. `crmflow outbox | head`: a closed pipe
            stream.flush()
    os._exit(code)
