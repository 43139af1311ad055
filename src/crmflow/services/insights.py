"""Seeing a workflow: its graph (with per-action counts) and its statistics, for `crmflow graph`,
`crmflow stats` and the dashboard. Every SQL statement is in `crmflow.store._stats`."""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from crmflow.definitions import WorkflowDefinition, load_definition_file, parse_duration, shown
from crmflow.graphs import ActionCounts, Format, Graph, build_graph, render
from crmflow.store import (
    StatsRepository,
    StepCounts,
    StoreError,
    VersionStats,
    WorkflowRepository,
    stored_definition,
)

from ._app import App
from ._base import UserError, checked_key

_FILE_SUFFIXES = (".yaml", ".yml", ".json")
_KEY = re.compile(r"^[a-z0-9][a-z0-9-]*$")
# --since: at most this far back (a datetime cannot go before year 1).
MAX_SINCE = timedelta(days=100 * 366)


def is_definition_file(target: str) -> bool:
    """`crmflow graph KEY|FILE`: a FILE is an existing file or a name ending in .yaml, .yml or
    .json (which no key can: a key has no dot); anything else is a workflow key."""
    return target.endswith(_FILE_SUFFIXES) or not _KEY.match(target) or Path(target).is_file()


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """`--since 30d`: the moment that long ago."""
    try:
        ago = parse_duration(text)
    except ValueError as exc:
        raise UserError(f"--since: {exc}") from None
    if ago > MAX_SINCE:
        raise UserError(f"--since {shown(text)}: at most 100 years back")
    return (now or datetime.now(UTC)) - ago


@dataclass(frozen=True)
class GraphSource:
    definition: WorkflowDefinition
    version: int | None  # None: an unpublished file
    counts: dict[str, ActionCounts] | None

    def graph(self) -> Graph:
        return build_graph(self.definition, version=self.version)

    def render(self, fmt: Format) -> str:
        return render(self.graph(), fmt, self.counts)


def action_counts(counts: dict[str, StepCounts]) -> dict[str, ActionCounts]:
    return {
        action_id: ActionCounts(reached=c.reached, waiting=c.waiting, failed=c.failed)
        for action_id, c in counts.items()
    }


def graph_source(
    app: App | None, target: str, *, version: int | None = None, counts: bool = False
) -> GraphSource:
    """The definition to draw: a file (offline: `app` may be None) or a published version,
    with its per-action counts when asked (the counts of that version's enrollments)."""
    if is_definition_file(target):
        if not Path(target).is_file() and not target.endswith(_FILE_SUFFIXES):
            raise UserError(
                f"{shown(target)}: neither a definition file nor a workflow key "
                "([a-z0-9][a-z0-9-]*)"
            )
        if version is not None:
            raise UserError(f"{target}: --version applies to a published workflow, not a file")
        if counts:
            raise UserError(
                f"{target}: --counts needs a published workflow (counts come from its "
                "enrollments); give its key"
            )
        return GraphSource(load_definition_file(target), None, None)
    checked_key(target)
    assert app is not None
    with app.sessions() as session:
        try:
            row = WorkflowRepository(session).version(target, version)
            definition = stored_definition(row)
        except StoreError as exc:
            raise UserError(str(exc)) from None
        found = (
            action_counts(StatsRepository(session).action_counts(target, version=row.version))
            if counts
            else None
        )
    return GraphSource(definition, row.version, found)


def write_output(path: Path, text: str) -> None:
    """Write `text` to `path` whole or not at all (a temporary file renamed over it)."""
    target = path.expanduser()
    directory = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise UserError(f"-o {target}: is a directory")
    if not directory.is_dir():
        raise UserError(f"-o {target}: no directory {directory}")
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        # mkstemp makes the file private; the output is an ordinary file (umask applies).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, target)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise UserError(f"-o {target}: cannot write: {exc.strerror or exc}") from None


# ---------------------------------------------------------------- stats


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def version_json(found: VersionStats, definition: WorkflowDefinition | None) -> dict[str, Any]:
    """One version's statistics; actions in the definition's order (then any others the
    enrollments reached, e.g. of a broken version)."""
    order = [a.id for a in definition.actions] if definition is not None else []
    order += sorted(set(found.actions) - set(order))
    actions = []
    for action_id in order:
        counts = found.actions.get(action_id, StepCounts())
        kind = found.action_types.get(action_id)
        if definition is not None and action_id in {a.id for a in definition.actions}:
            kind = next(a.type for a in definition.actions if a.id == action_id)
        entry: dict[str, Any] = {
            "action_id": action_id,
            "type": kind,
            "reached": counts.reached,
            "completed": counts.completed,
            "failed": counts.failed,
            "waiting": counts.waiting,
        }
        if (waits := found.waits.get(action_id)) is not None:
            entry["time_waited"] = {
                "count": waits.count,
                "median_seconds": _seconds(waits.median),
                "p90_seconds": _seconds(waits.p90),
            }
        actions.append(entry)
    return {
        "version": found.version,
        "enrollments": found.enrollments,
        "statuses": dict(sorted(found.statuses.items())),
        "actions": actions,
        "goal": {
            "defined": definition.goal is not None if definition is not None else None,
            "met": found.goal_met,
            "conversion_rate": _rate(found.goal_met, found.enrollments),
            "median_seconds_to_goal": _seconds(found.time_to_goal.median),
        },
        "failures": [
            {"action_id": action_id or None, "cause": cause, "count": n}
            for action_id, cause, n in found.failures
        ],
    }


def workflow_stats(app: App, key: str, *, since: datetime | None = None) -> dict[str, Any]:
    """`crmflow stats KEY`: per version, newest first."""
    checked_key(key)
    with app.sessions() as session:
        workflows = WorkflowRepository(session)
        if workflows.get(key) is None:
            raise UserError(f"no workflow '{key}'")
        definitions: dict[int, WorkflowDefinition | None] = {}
        for row in workflows.versions(key):
            try:
                definitions[row.version] = stored_definition(row)
            except StoreError:
                definitions[row.version] = None
        found = StatsRepository(session).stats(key, since=since)
    return {
        "workflow": key,
        "since": since.isoformat() if since is not None else None,
        "versions": [version_json(v, definitions.get(v.version)) for v in found],
    }
