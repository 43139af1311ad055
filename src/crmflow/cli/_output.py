"""How the CLI prints: JSON for machines, rich tables and timelines for people.

Consoles are made per call, not at import: they then write to whatever `sys.stdout` is at that
moment (click's test runner swaps it).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import click
from pydantic import BaseModel
from rich.console import Console
from rich.padding import Padding
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text


def out() -> Console:
    # Values come from users (record properties, subjects): never read them as rich markup.
    console = Console(markup=False, highlight=False, soft_wrap=True)
    if not console.is_terminal:
        # Piped or captured: rich would wrap tables at 80 columns; a line per row greps better.
        console.width = 200
    return console


def err() -> Console:
    return Console(stderr=True, markup=False, highlight=False, soft_wrap=True)


def progress_bar() -> Progress:
    """A progress bar on stderr: stdout stays clean for the result."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err(),
    )


_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(data: Any, *, strict: bool = True) -> Any:
    """Data that UTF-8 (and, `strict`, strict JSON) can carry, whatever an older version
    stored: a lone surrogate becomes U+FFFD, and with `strict` NaN and ±Infinity become null.
    Values this version accepts are unchanged. A service's view is taken in its JSON shape."""
    if isinstance(data, BaseModel):
        data = data.model_dump()
    if strict and isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, str):
        return _SURROGATE.sub("\ufffd", data)
    if isinstance(data, dict):
        return {
            printable(key, strict=strict): printable(value, strict=strict)
            for key, value in data.items()
        }
    if isinstance(data, list | tuple):
        return [printable(item, strict=strict) for item in data]
    return data


def print_json(data: Any) -> None:
    """Machine-clean, strict JSON on stdout (no NaN or Infinity token): no colour, no
    wrapping."""
    click.echo(
        json.dumps(printable(data), indent=2, ensure_ascii=False, default=str, allow_nan=False)
    )


def emit(data: Any, as_json: bool, human: Callable[[Any], None]) -> None:
    """`--json`: the data as JSON; otherwise the command's human rendering."""
    if as_json:
        print_json(data)
    else:
        human(printable(data, strict=False))  # NaN shows as NaN to a person


def when(value: str | None) -> str:
    """An ISO timestamp from the store, shown in the local time zone, to the second."""
    if not value:
        return "-"
    return datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def scalar(value: Any) -> str:
    """A property value as the user would type it back: text bare, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    grid = Table(*columns, box=None, header_style="bold", pad_edge=False)
    for row in rows:
        grid.add_row(*(Text("-" if cell is None else str(cell)) for cell in row))
    return grid


def counts(enrollments: dict[str, int]) -> str:
    return ", ".join(f"{n} {status}" for status, n in sorted(enrollments.items())) or "none"


def run_tally(run: dict[str, Any]) -> str:
    """ "2 matched, 2 enrolled, 0 skipped, 0 failed" """
    return (
        f"{run['matched']} matched, {run['enrolled']} enrolled, "
        f"{run['skipped']} skipped, {run['failed']} failed"
    )


def run_counts(run: dict[str, Any]) -> str:
    """A scheduled run's result: "2026-11-20 08:00:01 (schedule, completed): 2 matched, …"."""
    return f"{when(run['started_at'])} ({run['trigger']}, {run['status']}): {run_tally(run)}"


def print_run(run: dict[str, Any]) -> None:
    """The result of `schedule --run-now`."""
    note = f" ({run['note']})" if run.get("note") else ""
    click.echo(f"{run['workflow_key']}: run done: {run_tally(run)}{note}")


def print_schedule(schedule: dict[str, Any]) -> None:
    """`schedule KEY`: the next run times, then the recent runs."""
    for line in schedule["next_runs"]:
        click.echo(line)
    if schedule["recent_runs"]:
        click.echo("recent runs:")
        for run in schedule["recent_runs"]:
            click.echo(f"  {run_counts(run)}")


def run_time(value: str, timezone: str) -> str:
    """A planned run in the workflow's own zone, as its schedule reads: "Fri 2026-11-27 08:00
    CET"."""
    return (
        datetime.fromisoformat(value)
        .astimezone(ZoneInfo(timezone))
        .strftime("%a %Y-%m-%d %H:%M %Z")
    )


def schedule_state(schedule: dict[str, Any], *, active: bool, key: str) -> str:
    """The Temporal Schedule's state in words, with what to do when it disagrees with the
    workflow's activation (an activation or deactivation that could not reach Temporal)."""
    state = schedule["state"]
    if state == "unknown":
        return f"schedule state unknown ({schedule['state_error']})"
    if state == "missing":
        if active:
            return f"no Temporal Schedule although active: run `crmflow activate {key}`"
        return f"no Temporal Schedule yet (created by `crmflow activate {key}`)"
    if state == "paused" and active:
        return f"paused in Temporal although active: run `crmflow activate {key}`"
    if state == "active" and not active:
        return f"running in Temporal although inactive: run `crmflow deactivate {key}`"
    return str(state)


def print_workflows(workflows: list[dict[str, Any]]) -> None:
    if not workflows:
        out().print("no workflows published yet: `crmflow publish FILE`")
        return
    console = out()
    console.print(
        table(
            ["key", "name", "object", "trigger", "version", "active", "enrollments"],
            (
                [
                    w["key"],
                    w["name"],
                    w["object_type"],
                    w["trigger"],
                    w["version"],
                    "yes" if w["active"] else "no",
                    counts(w["enrollments"]),
                ]
                for w in workflows
            ),
        )
    )
    for w in workflows:
        if w.get("broken"):
            console.print(f"{w['key']} version {w['version']} is broken: {w['broken']}")
    scheduled = [w for w in workflows if w.get("schedule")]
    if not scheduled:
        return
    console.print()
    rows = []
    for w in scheduled:
        schedule = w["schedule"]
        upcoming = schedule["next_runs"]
        rows.append(
            [
                w["key"],
                schedule["description"],
                schedule_state(schedule, active=w["active"], key=w["key"]),
                run_time(upcoming[0], schedule["timezone"]) if upcoming else None,
                run_counts(schedule["last_run"]) if schedule["last_run"] else None,
            ]
        )
    console.print(table(["key", "schedule", "state", "next run", "last run"], rows))


def print_workflow(found: dict[str, Any]) -> None:
    console = out()
    versions = ", ".join(str(v) for v in found["versions"])
    console.print(f"{found['key']}: {found['definition'].get('name', '')}")
    console.print(
        f"  version    {found['version']} of {versions} (latest {found['latest_version']})"
    )
    console.print(f"  published  {when(found['published_at'])} from {found['source_name']}")
    console.print(f"  active     {'yes' if found['active'] else 'no'}")
    if found.get("broken"):
        console.print(f"  BROKEN     its stored definition no longer loads: {found['broken']}")
    schedule = found.get("schedule")
    if schedule:
        state = schedule_state(schedule, active=found["active"], key=found["key"])
        if schedule["next_runs"]:
            upcoming = ", ".join(run_time(t, schedule["timezone"]) for t in schedule["next_runs"])
            state += f"; next runs {upcoming}"
        last = run_counts(schedule["last_run"]) if schedule["last_run"] else "none yet"
        console.print(f"  schedule   {schedule['description']}")
        console.print(f"  state      {state}")
        console.print(f"  last run   {last}")
    console.print(f"  enrolled   {counts(found['enrollments'])}")
    console.print()
    console.print(found["source"].rstrip("\n"))


def change_state(change: dict[str, Any]) -> str:
    """A change's place in the feed, in words."""
    if change["status"] == "parked":
        return f"parked {when(change['parked_at'])}"
    if change["waiting_behind"] is not None:
        return f"waits behind change {change['waiting_behind']}"
    if change["next_attempt_at"] is not None:
        return f"retried at {when(change['next_attempt_at'])}"
    return "pending"


def change_what(change: dict[str, Any]) -> str:
    what = change["changed"]
    if "properties" in what:
        return ", ".join(what["properties"]) or "-"
    return str(what.get("list") or what.get("event") or "-")


def print_changes(counts: dict[str, int], changes: list[dict[str, Any]]) -> None:
    """`changes`: the feed's totals, then its oldest changes not dispatched yet."""
    console = out()
    shown = f" (the oldest {len(changes)} below)" if changes else ""
    console.print(f"{counts['pending']} pending, {counts['parked']} parked{shown}")
    if not changes:
        return
    console.print(
        table(
            ["id", "record", "kind", "changed", "occurred", "state", "attempts", "error"],
            (
                [
                    c["id"],
                    f"{c['object_type']} {c['record_id']}",
                    c["kind"],
                    change_what(c),
                    when(c["occurred_at"]),
                    change_state(c),
                    c["attempts"],
                    c["error"],
                ]
                for c in changes
            ),
        )
    )


def print_record(view: dict[str, Any]) -> None:
    console = out()
    console.print(f"{view['object_type']} {view['id']}")
    if view["properties"]:
        console.print(
            table(
                ["property", "value"], sorted((k, scalar(v)) for k, v in view["properties"].items())
            )
        )
    else:
        console.print("  (no properties)")
    console.print(f"lists: {', '.join(view['lists']) or '-'}")
    if view.get("associations"):
        linked = ", ".join(f"{a['object_type']} {a['id']}" for a in view["associations"])
        console.print(f"associated: {linked}")


def step_line(step: dict[str, Any]) -> list[Any]:
    outcome = step["outcome"]
    if outcome is None:
        outcome = "in progress" if step["finished_at"] is None else "-"
    return [when(step["started_at"]), step["action_id"], step["type"], outcome]


def print_enrollments(enrollments: list[dict[str, Any]]) -> None:
    if not enrollments:
        out().print("no enrollments")
        return
    rows = []
    for e in enrollments:
        last = e["steps"][-1] if e["steps"] else None
        status = e["status"] + (f" ({e['reason']})" if e["reason"] else "")
        rows.append(
            [
                e["record_id"],
                e["version"],
                status,
                when(e["enrolled_at"]),
                when(e["ended_at"]),
                last["action_id"] if last else None,
                len(e["steps"]),
            ]
        )
    out().print(
        table(["record", "version", "status", "enrolled", "ended", "last step", "steps"], rows)
    )


def print_history(found: dict[str, Any]) -> None:
    """Each enrollment's timeline, then why the record is (not) enrolled now."""
    console = out()
    for e in found["enrollments"]:
        status = e["status"] + (f": {e['reason']}" if e["reason"] else "")
        console.print(
            f"{e['workflow']} v{e['version']} · {e['object_type']} {e['record_id']} · {status}",
            style="bold",
        )
        console.print(
            f"  enrolled {when(e['enrolled_at'])} ({e['source']}), ended {when(e['ended_at'])}"
        )
        console.print(f"  temporal workflow id {e['temporal_workflow_id']}")
        if e["steps"]:
            steps = table(["at", "action", "type", "outcome"], map(step_line, e["steps"]))
            console.print(Padding(steps, (0, 0, 0, 2), expand=False))
        else:
            console.print("  no step yet")
        console.print()
    if not found["enrollments"]:
        console.print(
            f"{found['object_type']} {found['record_id']}: never enrolled in {found['workflow']}"
        )
    explanation = found["explanation"]
    console.print(f"now: {explanation['message']}")
    for line in explanation["details"]:
        console.print(f"  {line}")


REVIEW_COUNTS = (
    ("would_enroll", "would enroll now"),
    ("suppressed", "in a suppression list"),
    ("goal_met", "meet the goal already"),
    ("enrolled_now", "enrolled now"),
    ("enrolled_before", "enrolled before (a record enrolls once)"),
)


def print_review(found: dict[str, Any]) -> None:
    console = out()
    active = "active" if found["active"] else "inactive"
    console.print(f"{found['workflow']} v{found['version']} ({found['trigger']}, {active})")
    if found["matching"] is not None:
        console.print(f"  {found['matching']} record(s) match the criteria now:")
        for name, label in REVIEW_COUNTS:
            if found[name] is not None and (found[name] or name == "would_enroll"):
                console.print(f"    {found[name]:>8}  {label}")
    console.print(found["message"])
    if "saved_list" in found:
        saved = found["saved_list"]
        console.print(f"saved as list {saved['name']} ({saved['added']} added)")
    for record_id in found.get("records") or []:
        console.print(record_id)


def existing_summary(existing: dict[str, Any]) -> str:
    """The final line of enrolling existing records."""
    reasons = ", ".join(
        f"{n} {name.replace('_', ' ')}" for name, n in existing["skipped_because"].items() if n
    )
    return (
        f"existing records: {existing['matching']} matching, {existing['enrolled']} enrolled, "
        f"{existing['skipped']} skipped{f' ({reasons})' if reasons else ''}, "
        f"{existing['failed']} failed"
    )


def print_outbox(messages: list[dict[str, Any]]) -> None:
    console = out()
    if not messages:
        console.print("the outbox is empty")
        return
    for index, m in enumerate(messages):
        if index:
            console.print("-" * 40)
        console.print(
            f"sent     {when(m['sent_at'])} ({m['workflow']}/{m['action_id']}, {m['record_id']})"
        )
        console.print(f"to       {m['to']}")
        console.print(f"subject  {m['subject']}")
        console.print()
        console.print(m["body"].rstrip("\n"))


def print_tasks(tasks: list[dict[str, Any]]) -> None:
    if not tasks:
        out().print("no tasks")
        return
    out().print(
        table(
            ["created", "title", "assignee", "due", "record", "workflow/action"],
            (
                [
                    when(t["created_at"]),
                    t["title"],
                    t["assignee"],
                    when(t["due_at"]),
                    t["record_id"],
                    f"{t['workflow']}/{t['action_id']}",
                ]
                for t in tasks
            ),
        )
    )


def print_simulation(result: Any) -> None:
    """`simulate`: one line per step with its simulated local time (a `_simulate.Simulation`)."""
    click.echo(f"{result.key}: simulated from {result.start:%a %Y-%m-%d %H:%M:%S %Z}")
    for at, event in result.events:
        click.echo(
            f"  event {event.name} at {at.astimezone(result.start.tzinfo):%a %Y-%m-%d %H:%M:%S %Z}"
        )
    for step in result.steps:
        outcome = step.outcome or ""
        click.echo(f"{step.at:%a %Y-%m-%d %H:%M:%S %Z}  {step.action_id} ({step.type}): {outcome}")
    reason = f" ({result.reason})" if result.reason else ""
    click.echo(f"status: {result.status}{reason}")
