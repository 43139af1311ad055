"""The CLI end to end against a real Temporal dev server: enrollments run by a real worker,
observed only through the CLI (and, for the search attributes, the Temporal client).

Waits are bounded polls of `enrollments --json` (or of Temporal), never sleeps.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowExecutionDescription, WorkflowExecutionStatus

from crmflow.worker import search_attributes as sa

Cli = Any  # conftest.Cli (conftest modules are not importable by name)
DevEnv = Any  # conftest.DevEnv
Write = Callable[[dict[str, Any]], Path]


def unique_key(name: str) -> str:
    # One dev server serves every test: Temporal workflow ids (key, record, enrollment id) must
    # not meet those of another test's store.
    return f"{name}-{uuid.uuid4().hex[:6]}"


def onboarding(
    key: str, *, delay: str = "2s", task_title: str = "Call {{ record.firstname }}"
) -> dict[str, Any]:
    return {
        "key": key,
        "name": "Onboarding",
        "enrollment": {"trigger": "manual"},
        "actions": [
            {
                "id": "qualify",
                "type": "set_property",
                "property": "lifecycle_stage",
                "value": "lead",
            },
            {
                "id": "check",
                "type": "branch",
                "branches": [
                    {
                        "name": "lead",
                        "when": {"property": "lifecycle_stage", "op": "eq", "value": "lead"},
                        "next": "welcome",
                    }
                ],
                "otherwise": "end",
            },
            {
                "id": "welcome",
                "type": "send_email",
                "subject": "Welcome {{ record.firstname }}",
                "body": "Hi {{ record.firstname }}, welcome to {{ workflow.name }}.",
            },
            {"id": "wait", "type": "delay", "duration": delay},
            {"id": "task", "type": "create_task", "title": task_title, "due_in": "1d"},
        ],
    }


def publish_and_activate(cli: Cli, write: Write, definition: dict[str, Any]) -> str:
    key = definition["key"]
    assert cli("publish", str(write(definition))).stdout.startswith(f"{key}: version 1")
    assert cli("activate", key).stdout == f"{key} is active\n"
    return key


def add_contact(cli: Cli, record_id: str, firstname: str) -> None:
    cli("records", "set", record_id, f"firstname={firstname}", f"email={record_id}@example.com")


def describe(env: DevEnv, workflow_id: str) -> WorkflowExecutionDescription:
    return env.background.run(env.env.client.get_workflow_handle(workflow_id).describe())


def step_ids(enrollment: dict[str, Any]) -> list[str]:
    return [s["action_id"] for s in enrollment["steps"]]


def test_enrollment_runs_to_completion(
    e2e_cli: Cli, temporal_dev_env: DevEnv, write_definition: Write, eventually: Any
) -> None:
    cli = e2e_cli
    key = publish_and_activate(cli, write_definition, onboarding(unique_key("onboarding")))
    add_contact(cli, "ann", "Ann")
    enrolled = cli("enroll", key, "ann").stdout
    assert enrolled.startswith("ann: enrolled (")

    done = cli.wait_for_status(key, "ann", "completed")
    assert done["version"] == 1 and done["reason"] is None and done["ended_at"]
    assert done["workflow"] == key and done["object_type"] == "contact"
    assert step_ids(done) == ["qualify", "check", "welcome", "wait", "task"]
    steps = {s["action_id"]: s for s in done["steps"]}
    assert [s["type"] for s in done["steps"]] == [
        "set_property",
        "branch",
        "send_email",
        "delay",
        "create_task",
    ]
    assert all(s["outcome"] and s["finished_at"] for s in done["steps"])
    assert "lead" in steps["check"]["outcome"]
    assert "ann@example.com" in steps["welcome"]["outcome"]
    waited = datetime.fromisoformat(steps["wait"]["finished_at"]) - datetime.fromisoformat(
        steps["wait"]["started_at"]
    )
    assert waited >= timedelta(seconds=2)
    assert cli.json("records", "show", "ann")["properties"]["lifecycle_stage"] == "lead"

    [email] = cli.json("outbox")
    assert email["to"] == "ann@example.com"
    assert email["subject"] == "Welcome Ann"
    assert email["body"] == "Hi Ann, welcome to Onboarding."
    assert (email["workflow"], email["action_id"], email["record_id"]) == (key, "welcome", "ann")
    assert "subject  Welcome Ann" in cli("outbox").stdout

    [task] = cli.json("tasks")
    assert (task["title"], task["record_id"], task["workflow"], task["action_id"]) == (
        "Call Ann",
        "ann",
        key,
        "task",
    )
    due = datetime.fromisoformat(task["due_at"]) - datetime.fromisoformat(task["created_at"])
    assert abs(due - timedelta(days=1)) < timedelta(minutes=1)
    assert "Call Ann" in cli("tasks").stdout

    history = cli.json("history", key, "--record", "ann")
    assert history["enrollments"] == [done]
    assert history["explanation"]["state"] == "manual"
    timeline = cli("history", key, "--record", "ann").stdout
    assert f"{key} v1 · contact ann · completed" in timeline
    positions = [timeline.index(f" {action} ") for action in step_ids(done)]
    assert positions == sorted(positions)
    assert "waited until" in timeline
    human = cli("enrollments", key).stdout
    assert "completed" in human and "ann" in human
    assert cli.json("enrollments", key, "--status", "running") == []
    assert cli.json("workflows")[0]["enrollments"] == {"completed": 1}

    # The Temporal side: the execution, findable by crmflow's search attributes.
    workflow_id = done["temporal_workflow_id"]
    assert workflow_id in enrolled

    def closed() -> WorkflowExecutionDescription | None:
        found = describe(temporal_dev_env, workflow_id)
        return found if found.status == WorkflowExecutionStatus.COMPLETED else None

    description = eventually(closed, what=f"{workflow_id} to close")
    attributes = description.typed_search_attributes
    assert attributes.get(sa.WORKFLOW_KEY) == key
    assert attributes.get(sa.VERSION) == 1
    assert attributes.get(sa.RECORD_ID) == "ann"
    assert attributes.get(sa.OBJECT_TYPE) == "contact"
    assert attributes.get(sa.STATUS) == "completed"


def test_unenroll_during_delay(e2e_cli: Cli, write_definition: Write) -> None:
    cli = e2e_cli
    key = publish_and_activate(cli, write_definition, onboarding(unique_key("long"), delay="1h"))
    add_contact(cli, "ann", "Ann")
    cli("enroll", key, "ann")
    cli.wait_for_step(key, "ann", "wait")

    assert cli("unenroll", key, "ann").stdout.startswith("ann: unenrolled (")
    # The CLI waits until the workflow has recorded it: no polling needed.
    ended = cli.enrollment(key, "ann")
    assert (ended["status"], ended["reason"]) == ("unenrolled", "unenrolled manually")
    assert ended["steps"][-1]["action_id"] == "wait"
    assert ended["steps"][-1]["outcome"] == "interrupted: unenrolled"
    assert cli.json("tasks") == []

    result = cli("unenroll", key, "ann", code=1)
    assert "ann: not unenrolled: 'ann' is not enrolled" in result.stderr


def test_same_record_is_never_enrolled_twice_at_once(e2e_cli: Cli, write_definition: Write) -> None:
    cli = e2e_cli
    key = publish_and_activate(cli, write_definition, onboarding(unique_key("twice"), delay="1h"))
    add_contact(cli, "ann", "Ann")

    # Two processes at the same moment: exactly one enrolls.
    env = clean_env(
        CRMFLOW_DB=cli.db_url, CRMFLOW_TEMPORAL=cli.temporal, CRMFLOW_TASK_QUEUE=cli.task_queue
    )
    racing = [
        subprocess.Popen(
            [*crmflow_command(), "enroll", key, "ann"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = sorted((p.wait(60), *p.communicate()) for p in racing)
    assert [code for code, _, _ in results] == [0, 1], results
    assert results[0][1].startswith("ann: enrolled (")
    assert "ann: not enrolled: contact 'ann' is already enrolled" in results[1][2]
    assert "Traceback" not in str(results)

    result = cli("enroll", key, "ann", "ann", code=1)
    assert "already enrolled" in result.stderr
    again = cli.json("enroll", key, "ann", "nobody", code=1)
    assert [(o["record_id"], o["ok"]) for o in again] == [("ann", False), ("nobody", False)]
    assert "no contact with id 'nobody'" in again[1]["message"]
    assert len(cli.json("enrollments", key)) == 1


def test_deactivate_pauses_and_activate_resumes(
    e2e_cli: Cli, temporal_dev_env: DevEnv, write_definition: Write, eventually: Any
) -> None:
    cli = e2e_cli
    key = publish_and_activate(cli, write_definition, onboarding(unique_key("pause"), delay="3s"))
    add_contact(cli, "ann", "Ann")
    cli("enroll", key, "ann")
    running = cli.wait_for_step(key, "ann", "wait")
    assert running["steps"][-1]["finished_at"] is None  # still in its delay

    assert cli("deactivate", key).stdout == f"{key} is inactive; 1 enrollment(s) paused\n"
    assert cli.enrollment(key, "ann")["status"] == "paused"
    result = cli("enroll", key, "ann", code=1)
    assert "is not active" in result.stderr

    # The delay runs out; the enrollment then holds before its next action, which Temporal shows.
    workflow_id = running["temporal_workflow_id"]
    eventually(
        lambda: (
            describe(temporal_dev_env, workflow_id).typed_search_attributes.get(sa.STATUS)
            == "paused"
        ),
        what="the enrollment to hold",
    )
    held = cli.enrollment(key, "ann")
    assert held["status"] == "paused"
    assert step_ids(held)[-1] == "wait" and held["steps"][-1]["finished_at"]
    assert cli.json("tasks") == []

    assert cli("activate", key).stdout == f"{key} is active; 1 paused enrollment(s) resumed\n"
    done = cli.wait_for_status(key, "ann", "completed")
    assert step_ids(done) == ["qualify", "check", "welcome", "wait", "task"]


def test_deactivate_unenroll_all(e2e_cli: Cli, write_definition: Write) -> None:
    cli = e2e_cli
    key = publish_and_activate(cli, write_definition, onboarding(unique_key("all"), delay="1h"))
    for record_id in ("ann", "bob"):
        add_contact(cli, record_id, record_id.title())
    cli("enroll", key, "ann", "bob")
    for record_id in ("ann", "bob"):
        cli.wait_for_step(key, record_id, "wait")

    result = cli("deactivate", key, "--unenroll-all")
    assert result.stdout == f"{key} is inactive; 2 enrollment(s) unenrolled\n"
    for record_id in ("ann", "bob"):
        ended = cli.wait_for_status(key, record_id, "unenrolled")
        assert ended["reason"] == "workflow deactivated with --unenroll-all"
    assert cli.json("workflows")[0]["active"] is False


def test_running_enrollment_keeps_its_version(e2e_cli: Cli, write_definition: Write) -> None:
    cli = e2e_cli
    key = unique_key("versions")
    publish_and_activate(
        cli, write_definition, onboarding(key, delay="3s", task_title="v1 {{ record.firstname }}")
    )
    add_contact(cli, "ann", "Ann")
    add_contact(cli, "bob", "Bob")
    cli("enroll", key, "ann")
    cli.wait_for_step(key, "ann", "wait")

    v2 = onboarding(key, delay="1s", task_title="v2 {{ record.firstname }}")
    assert cli("publish", str(write_definition(v2))).stdout.startswith(f"{key}: version 2")
    cli("enroll", key, "bob")

    ann = cli.wait_for_status(key, "ann", "completed")
    bob = cli.wait_for_status(key, "bob", "completed")
    assert (ann["version"], bob["version"]) == (1, 2)
    titles = {t["record_id"]: t["title"] for t in cli.json("tasks")}
    assert titles == {"ann": "v1 Ann", "bob": "v2 Bob"}


# ---------------------------------------------------------------- long-running commands


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def crmflow_command() -> list[str]:
    script = shutil.which("crmflow") or str(Path(sys.executable).parent / "crmflow")
    return [script]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMFLOW_")}
    return {**env, **extra}


def wait_for_line(process: subprocess.Popen[bytes], log: Path, line: str, eventually: Any) -> None:
    def printed() -> bool:
        assert process.poll() is None, f"exited with {process.returncode}:\n{log.read_text()}"
        return line in log.read_text()

    eventually(printed, timeout=60, what=f"{line!r} in {log}")


def stop(process: subprocess.Popen[bytes], sig: signal.Signals, log: Path) -> str:
    process.send_signal(sig)
    try:
        code = process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    output = log.read_text()
    assert code == 0, output
    assert "Traceback" not in output, output
    return output


def test_worker_command(
    temporal_dev_env: DevEnv,
    tmp_path: Path,
    write_definition: Write,
    make_cli: Any,
    eventually: Any,
) -> None:
    db_url = f"sqlite:///{tmp_path / 'crmflow.db'}"
    task_queue = f"worker-{uuid.uuid4().hex[:8]}"
    env = clean_env(
        CRMFLOW_DB=db_url, CRMFLOW_TEMPORAL=temporal_dev_env.target, CRMFLOW_TASK_QUEUE=task_queue
    )
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*crmflow_command(), "worker"], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        wait_for_line(process, log, "Ctrl-C to stop", eventually)
        cli = make_cli(db_url, temporal_dev_env.target, task_queue)
        key = publish_and_activate(
            cli, write_definition, onboarding(unique_key("worker"), delay="1s")
        )
        add_contact(cli, "ann", "Ann")
        cli("enroll", key, "ann")
        cli.wait_for_status(key, "ann", "completed")
        output = stop(process, signal.SIGTERM, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert output.rstrip().endswith("worker stopped")


def test_worker_without_temporal_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    result = subprocess.run(
        [*crmflow_command(), "--temporal", f"localhost:{port}", "worker"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"crmflow: cannot reach Temporal at localhost:{port}: is `crmflow up` running?\n"
    )


def processes_in(directory: Path) -> list[int]:
    """Processes whose working directory is `directory` (Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")) == directory:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_up_runs_everything_and_stops_cleanly(
    tmp_path: Path, write_definition: Write, make_cli: Any, eventually: Any
) -> None:
    port, ui_port = free_port(), free_port()
    log = tmp_path / "up.log"
    command = [*crmflow_command(), "up", "--temporal-port", str(port), "--ui-port", str(ui_port)]
    # A production cluster's settings left in the shell are not for the local dev server.
    production = clean_env(
        CRMFLOW_TEMPORAL_API_KEY="production-key",
        CRMFLOW_TEMPORAL_TLS_CA=str(tmp_path / "production-ca.pem"),
        CRMFLOW_TEMPORAL_TLS_SERVER_NAME="temporal.example.com",
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=production
        )
    try:
        wait_for_line(process, log, "Ctrl-C to stop", eventually)
        banner = log.read_text()
        assert f"Temporal   localhost:{port}" in banner
        assert f"Web UI     http://localhost:{ui_port}" in banner
        assert "store      sqlite:///.crmflow/crmflow.db" in banner

        # Another process in the same directory finds the store by default.
        listed = subprocess.run(
            [*crmflow_command(), "--temporal", f"localhost:{port}", "workflows", "--json"],
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (listed.returncode, listed.stdout.strip()) == (0, "[]"), listed.stderr

        cli = make_cli(f"sqlite:///{tmp_path / '.crmflow' / 'crmflow.db'}", f"localhost:{port}")
        key = publish_and_activate(cli, write_definition, onboarding(unique_key("up"), delay="1s"))
        add_contact(cli, "ann", "Ann")
        cli("enroll", key, "ann")
        done = cli.wait_for_status(key, "ann", "completed")
        assert step_ids(done) == ["qualify", "check", "welcome", "wait", "task"]

        # Automatic enrollment: `up` runs the dispatcher; setting a property enrolls the record.
        automatic = onboarding(unique_key("auto"), delay="1s")
        plan_pro = {"property": "plan", "op": "eq", "value": "pro"}
        automatic["enrollment"] = {"trigger": "criteria", "criteria": plan_pro}
        auto_key = publish_and_activate(cli, write_definition, automatic)
        add_contact(cli, "bob", "Bob")
        cli("records", "set", "bob", "plan=pro")

        def completed() -> dict[str, Any] | None:
            found = cli.json("enrollments", auto_key, "--record", "bob")
            return found[-1] if found and found[-1]["status"] == "completed" else None

        assert step_ids(eventually(completed, what="bob enrolled automatically")) == [
            "qualify",
            "check",
            "welcome",
            "wait",
            "task",
        ]

        output = stop(process, signal.SIGINT, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert output.rstrip().endswith("stopped")
    assert (tmp_path / ".crmflow" / "temporal.db").exists()
    # The dev server went with it: nothing runs in that directory, nothing listens on the port.
    assert processes_in(tmp_path) == []
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_up_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*crmflow_command(), "up", "--temporal-port", str(port), "--ui-port", str(free_port())],
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"crmflow: port {port} is in use" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stdout + result.stderr
