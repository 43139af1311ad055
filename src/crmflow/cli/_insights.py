"""`crmflow graph` and `crmflow stats`: a workflow as a picture, and its numbers."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click

from crmflow.graphs import FORMATS
from crmflow.services import App
from crmflow.services import insights as _insights

from . import _output as output

VERSION = click.IntRange(1, 2**31 - 1)


def _app() -> App:
    # The CLI's State (opened on first use, so a FILE needs no store).
    state: Any = click.get_current_context().find_root().obj
    return state.app()  # type: ignore[no-any-return]


@click.command()
@click.argument("target", metavar="KEY|FILE")
@click.option("--version", type=VERSION, help="A published version (default: the latest).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="mermaid",
    show_default=True,
    help="Mermaid text, Graphviz DOT, or an SVG picture.",
)
@click.option(
    "--counts", is_flag=True, help="Show per action: reached, waiting now, failed (KEY only)."
)
@click.option(
    "-o",
    "--output",
    "output_path",
    metavar="FILE",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write to FILE instead of stdout.",
)
def graph(
    target: str, version: int | None, fmt: str, counts: bool, output_path: Path | None
) -> None:
    """Draw the action graph of a published workflow (KEY) or of a definition FILE."""
    needs_store = not _insights.is_definition_file(target)
    source = _insights.graph_source(
        _app() if needs_store else None, target, version=version, counts=counts
    )
    text = source.render(fmt)  # type: ignore[arg-type]
    if not text.endswith("\n"):
        text += "\n"
    if output_path is None:
        click.echo(text, nl=False)
    else:
        _insights.write_output(output_path, text)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def print_stats(found: dict[str, Any]) -> None:
    since = f" since {output.when(found['since'])}" if found["since"] else ""
    if not found["versions"]:
        click.echo(f"{found['workflow']}: no enrollments{since}")
        return
    console = output.out()
    for v in found["versions"]:
        console.print(
            f"{found['workflow']} version {v['version']}: "
            f"{v['enrollments']} enrollments{since} ({output.counts(v['statuses'])})",
            highlight=False,
        )
        rows = []
        for a in v["actions"]:
            waited = a.get("time_waited")
            rows.append(
                [
                    a["action_id"],
                    a["type"],
                    a["reached"],
                    a["completed"],
                    a["failed"],
                    a["waiting"],
                    _duration(waited["median_seconds"]) if waited else None,
                    _duration(waited["p90_seconds"]) if waited else None,
                ]
            )
        console.print(
            output.table(
                ["action", "type", "reached", "completed", "failed", "waiting", "median", "p90"],
                rows,
            )
        )
        goal = v["goal"]
        if goal["defined"] is not False or goal["met"]:
            console.print(
                f"goal: {goal['met']} met ({_percent(goal['conversion_rate'])}), median time "
                f"to goal {_duration(goal['median_seconds_to_goal'])}",
                highlight=False,
            )
        if v["failures"]:
            console.print("failures:", highlight=False)
            for f in v["failures"]:
                where = f["action_id"] or "enrollment"
                console.print(f"  {f['count']} × {where}: {f['cause']}", highlight=False)
        console.print()


@click.command()
@click.argument("key")
@click.option(
    "--since",
    metavar="DURATION",
    help="Only enrollments that began this long ago or later (30d, 12h, 1w).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def stats(key: str, since: str | None, as_json: bool) -> None:
    """Per version: statuses, per-action funnel, time at waiting steps, goal, failures."""
    moment: datetime | None = _insights.parse_since(since) if since is not None else None
    found = _insights.workflow_stats(_app(), key, since=moment)
    if as_json:
        output.print_json(found)
    else:
        print_stats(found)
