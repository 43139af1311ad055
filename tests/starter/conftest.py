"""Fixtures of the CLI tests: the real click commands invoked in-process, and (end to end) a real
Temporal dev server with a crmflow worker running beside the tests."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from background import Background, eventually, running_dev_server
from click.testing import CliRunner, Result
from ruamel.yaml import YAML
from temporalio.testing import WorkflowEnvironment

from crmflow.cli import cli
from crmflow.enrolling import EnrollmentStarter
from crmflow.services import App, Settings
from crmflow.worker import build_worker

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Cli:
    """`crmflow --db … --temporal … ARGS` through click's runner; checks the exit code and that
    nothing escaped as a traceback or an unexpected error."""

    db_url: str
    temporal: str
    task_queue: str = "crmflow"

    def __call__(
        self, *args: str, code: int = 0, env: dict[str, str | None] | None = None
    ) -> Result:
        base = ["--db", self.db_url, "--temporal", self.temporal]
        result = CliRunner().invoke(
            cli,
            [*base, *args],
            env={"CRMFLOW_TASK_QUEUE": self.task_queue, "CRMFLOW_DEBUG": None, **(env or {})},
        )
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"crmflow {' '.join(args)} raised") from result.exception
        shown = f"crmflow {' '.join(args)} -> {result.exit_code}\n{result.output}"
        assert "Traceback" not in result.output, shown
        assert "unexpected error" not in result.output, shown
        assert result.exit_code == code, shown
        return result

    def json(self, *args: str, code: int = 0) -> Any:
        return json.loads(self(*args, "--json", code=code).stdout)

    def enrollment(self, key: str, record_id: str) -> dict[str, Any]:
        """The latest enrollment of a record, as `enrollments --json` shows it."""
        found = self.json("enrollments", key, "--record", record_id)
        assert found, f"{record_id} has no enrollment in {key}"
        return found[-1]

    def wait_for_status(self, key: str, record_id: str, status: str) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            found = self.enrollment(key, record_id)
            return found if found["status"] == status else None

        return eventually(reached, what=f"{record_id} in {key} to be {status}")

    def wait_for_step(self, key: str, record_id: str, action_id: str) -> dict[str, Any]:
        """Until the record's enrollment has started `action_id`; returns the enrollment."""

        def started() -> dict[str, Any] | None:
            found = self.enrollment(key, record_id)
            return found if any(s["action_id"] == action_id for s in found["steps"]) else None

        return eventually(started, what=f"{record_id} to reach {action_id} in {key}")


@pytest.fixture(name="eventually")
def eventually_fixture() -> Callable[..., Any]:
    return eventually


@pytest.fixture
def write_definition(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    def write(definition: dict[str, Any]) -> Path:
        path = tmp_path / f"{definition['key']}-{uuid.uuid4().hex[:6]}.yaml"
        with path.open("w") as handle:
            YAML().dump(definition, handle)
        return path

    return write


@pytest.fixture
def make_cli() -> Callable[..., Cli]:
    return Cli


@pytest.fixture
def offline_cli(tmp_path: Path) -> Cli:
    """A CLI on a fresh SQLite store, pointed at a port where no Temporal listens."""
    return Cli(db_url=f"sqlite:///{tmp_path / 'crmflow.db'}", temporal=f"localhost:{free_port()}")


# ---------------------------------------------------------------- end to end


@dataclass
class DevEnv:
    background: Background
    env: WorkflowEnvironment

    @property
    def target(self) -> str:
        return self.env.client.service_client.config.target_host


@pytest.fixture(scope="session")
def temporal_dev_env() -> Iterator[DevEnv]:
    """A real dev server (visibility, search attributes), started once for the session."""
    with running_dev_server() as (background, env):
        yield DevEnv(background, env)


@pytest.fixture
def e2e_cli(temporal_dev_env: DevEnv, tmp_path: Path) -> Iterator[Cli]:
    """A CLI on a fresh SQLite store and its own task queue, with a worker serving both."""
    task_queue = f"cli-{uuid.uuid4().hex[:8]}"
    db_url = f"sqlite:///{tmp_path / 'crmflow.db'}"
    app = App(Settings(db_url=db_url, task_queue=task_queue))
    background = temporal_dev_env.background

    async def make_worker() -> Any:
        return build_worker(
            temporal_dev_env.env.client,
            app.sessions,
            enroller=EnrollmentStarter(app.sessions, temporal_dev_env.env.client, task_queue),
            task_queue=task_queue,
        )

    worker = background.run(make_worker())
    running = background.spawn(worker.run())
    try:
        yield Cli(db_url=db_url, temporal=temporal_dev_env.target, task_queue=task_queue)
    finally:
        background.run(worker.shutdown())
        running.result(30)
        app.close()
