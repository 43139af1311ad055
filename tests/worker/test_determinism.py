"""The worker runs crmflow's workflows unsandboxed (`workflow_runner`): nothing stops workflow
code from reading the clock or doing I/O at run time. These tests stand in for the sandbox:

- every recorded history replays under the sandboxed runner, which fails on restricted calls
  (the other replay tests of tests/worker use it as well);
- a static check of the workflow modules refuses the calls and imports that make a workflow
  non-deterministic, wherever they are (the replays only see the paths their histories took).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

import crmflow.worker
from crmflow.worker import (
    EnrollmentWorkflow,
    ScheduledRunWorkflow,
    TimeSweepWorkflow,
    sandboxed_workflow_runner,
    workflow_runner,
)

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))
WORKER = Path(crmflow.worker.__file__).parent
# Modules whose code runs inside workflows (the worker's wiring and the client-side Schedule
# helpers in _time_sweep.py are outside any workflow, but share these modules).
WORKFLOW_MODULES = ["_enrollment.py", "_scheduled.py", "_time_sweep.py", "_time.py", "_policies.py"]

# Fully qualified callables, and modules all of whose members are refused, with what to use.
FORBIDDEN_CALLS = {
    "datetime.datetime.now": "workflow.now()",
    "datetime.datetime.utcnow": "workflow.now()",
    "datetime.datetime.today": "workflow.now()",
    "datetime.date.today": "workflow.now()",
    "time.time": "workflow.now()",
    "time.time_ns": "workflow.now()",
    "time.monotonic": "workflow.now()",
    "time.perf_counter": "workflow.now()",
    "time.sleep": "workflow.sleep()",
    "asyncio.sleep": "workflow.sleep() or workflow.wait_condition()",
    "uuid.uuid1": "workflow.uuid4()",
    "uuid.uuid4": "workflow.uuid4()",
    "open": "an activity",
}
FORBIDDEN_MODULES = {
    "random": "workflow.random()",
    "secrets": "workflow.random()",
    "os": "an activity",
}
# I/O belongs in activities: a workflow module never imports these.
IO_MODULES = {
    "sqlalchemy",
    "httpx",
    "requests",
    "smtplib",
    "aiosmtplib",
    "os",
    "socket",
    "subprocess",
}


def nondeterminism(source: str, filename: str = "<source>") -> list[str]:
    """What the static check refuses in `source`: one line per finding, `file:line: what`."""
    tree = ast.parse(source, filename)
    aliases: dict[str, str] = {}  # local name -> fully qualified name
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for name in node.names:
                aliases[name.asname or name.name.split(".")[0]] = (
                    name.name if name.asname else name.name.split(".")[0]
                )
                if name.name.split(".")[0] in IO_MODULES:
                    found.append(f"{filename}:{node.lineno}: imports {name.name} (I/O)")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for name in node.names:
                aliases[name.asname or name.name] = f"{node.module}.{name.name}"
            if node.module.split(".")[0] in IO_MODULES:
                found.append(f"{filename}:{node.lineno}: imports from {node.module} (I/O)")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        parts: list[str] = []
        target = node.func
        while isinstance(target, ast.Attribute):
            parts.insert(0, target.attr)
            target = target.value
        if not isinstance(target, ast.Name):
            continue
        qualified = ".".join([aliases.get(target.id, target.id), *parts])
        instead = FORBIDDEN_CALLS.get(qualified) or FORBIDDEN_MODULES.get(
            qualified.split(".")[0] if "." in qualified else ""
        )
        if instead:
            found.append(f"{filename}:{node.lineno}: {qualified}() (use {instead})")
    return found


def test_workflow_modules_make_no_nondeterministic_calls_nor_import_io():
    findings = [
        finding
        for module in WORKFLOW_MODULES
        for finding in nondeterminism((WORKER / module).read_text(), module)
    ]
    assert findings == []


def test_the_static_check_finds_what_it_refuses():
    source = (
        "import os\n"
        "import random as r\n"
        "import asyncio, uuid, time\n"
        "from datetime import datetime as dt, date\n"
        "from sqlalchemy import select\n"
        "async def run():\n"
        "    dt.now(); dt.utcnow(); date.today(); time.time(); r.random(); uuid.uuid4()\n"
        "    await asyncio.sleep(1); open('x'); os.getenv('X')\n"
        "    workflow.now(); workflow.random().random(); workflow.uuid4()\n"
    )
    findings = nondeterminism(source)
    assert sorted(f.split(": ", 1)[1].split(" ")[0] for f in findings) == sorted(
        [
            "imports",  # os
            "imports",  # sqlalchemy
            "datetime.datetime.now()",
            "datetime.datetime.utcnow()",
            "datetime.date.today()",
            "time.time()",
            "random.random()",
            "uuid.uuid4()",
            "asyncio.sleep()",
            "open()",
            "os.getenv()",
        ]
    )


def test_the_worker_runs_unsandboxed_and_the_replays_sandboxed():
    assert isinstance(workflow_runner(), UnsandboxedWorkflowRunner)
    assert isinstance(sandboxed_workflow_runner(), SandboxedWorkflowRunner)


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_histories_replay_in_the_sandbox(path: Path):
    saved = json.loads(path.read_text())
    replayer = Replayer(
        workflows=[EnrollmentWorkflow, ScheduledRunWorkflow, TimeSweepWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=sandboxed_workflow_runner(),
    )
    history = WorkflowHistory.from_json(saved["workflow_id"], saved["history"])
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None
