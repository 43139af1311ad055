"""CPU time of the benchmark's own process, of the Temporal dev server it started and of the
PostgreSQL server (Linux /proc)."""

from __future__ import annotations

import os
from pathlib import Path


def _stat(path: Path) -> tuple[str, list[str]]:
    """A /proc/<pid>/stat file: the command name, and the fields after it."""
    text = path.read_text()
    return text[text.index("(") + 1 : text.rindex(")")], text.rsplit(")", 1)[1].split()


def _cpu(fields: list[str]) -> float:
    """User + system CPU seconds of a process's stat fields."""
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    return _cpu(_stat(Path(f"/proc/{pid}/stat"))[1])


def server_pid() -> int:
    """The dev server: this process's child (the only one)."""
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if _stat(stat)[1][1] == me:
                return int(stat.parent.name)
        except (OSError, IndexError):
            continue
    raise RuntimeError("no dev server child process found")


def postgres_cpu_seconds() -> float:
    """CPU time used so far by the PostgreSQL server processes running now."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, fields = _stat(stat)
        except OSError:
            continue
        if name == "postgres":
            total += _cpu(fields)
    return total
