"""Commands that run things: `up`, `worker`, `simulate`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import click

from crmflow import services
from crmflow.services import simulate as _simulate
from crmflow.services import up as long_running

from . import _output as output
from . import _up
from ._common import (
    json_option,
    open_app,
    state,
)


@click.command()
@click.option("--temporal-port", default=7233, show_default=True, type=click.IntRange(1, 65535))
@click.option("--ui-port", default=8233, show_default=True, type=click.IntRange(1, 65535))
@click.option("--api-port", default=8080, show_default=True, type=click.IntRange(1, 65535))
def up(temporal_port: int, ui_port: int, api_port: int) -> None:
    """Run everything locally: a Temporal dev server (state in .crmflow/), the store, a
    worker and the HTTP API with the dashboard. Ctrl-C stops them all."""
    asyncio.run(
        _up.run_up(
            state().settings,
            open_app=partial(open_app, create_database=True),
            temporal_port=temporal_port,
            ui_port=ui_port,
            api_port=api_port,
            echo=click.echo,
        )
    )


@click.command()
def worker() -> None:
    """Run a worker against the Temporal server (until SIGINT/SIGTERM)."""
    worker_app = open_app(state().settings, create_database=True)
    try:
        asyncio.run(long_running.run_worker(worker_app, echo=click.echo))
    finally:
        worker_app.close()


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--set",
    "assignments",
    metavar="PROP=VALUE|PROP:=JSON",
    multiple=True,
    help="A property of the simulated record (repeatable).",
)
@click.option("--start", metavar="ISO", help="When the enrollment begins (default now).")
@click.option(
    "--event",
    "event_specs",
    metavar="OFFSET:NAME[:PROP=VALUE,...]",
    multiple=True,
    help="An event that many hours/days after the start, e.g. 2h:email_opened (repeatable).",
)
@json_option
def simulate(
    file: Path,
    assignments: Sequence[str],
    start: str | None,
    event_specs: Sequence[str],
    as_json: bool,
) -> None:
    """Run FILE for one made-up record on a private time-skipping server; nothing is sent."""
    properties = services.parse_assignments(assignments)
    events = [_simulate.parse_event(spec) for spec in event_specs]
    result = asyncio.run(
        _simulate.simulate(file, properties=properties, start=start, events=events)
    )
    if as_json:
        output.print_json([step.as_json() for step in result.steps])
    else:
        output.print_simulation(result)
