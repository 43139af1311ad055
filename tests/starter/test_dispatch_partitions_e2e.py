"""Dispatch partitions over real worker processes: two `crmflow worker` processes on one store
and one dev server share the change feed's partitions and dispatch them at the same time;
killing one (SIGKILL: no goodbye) moves its partitions to the other, and nothing is lost."""

from __future__ import annotations

import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from test_cli_e2e import clean_env, crmflow_command, publish_and_activate, unique_key

PARTITIONS = 4


def criteria_workflow(key: str) -> dict[str, Any]:
    return {
        "key": key,
        "name": "Partitioned",
        "enrollment": {
            "trigger": "criteria",
            "criteria": {"property": "lifecycle_stage", "op": "eq", "value": "lead"},
        },
        "actions": [{"id": "mark", "type": "set_property", "property": "seen", "value": True}],
    }


def holders(db_url: str) -> dict[str, str]:
    """Live partition leases: name -> holder (the database's clock judges liveness)."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT name, holder, expires_at FROM leases WHERE name LIKE 'dispatcher-%'")
            ).all()
            now = connection.execute(
                text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")
            ).scalar_one()
    finally:
        engine.dispose()
    return {name: holder for name, holder, expires in rows if str(expires) > str(now)}


def enrolled(db_url: str) -> int:
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT count(*) FROM enrollments")).scalar_one())
    finally:
        engine.dispose()


def test_two_workers_share_the_partitions_and_a_killed_ones_move(
    temporal_dev_env: Any, tmp_path: Path, write_definition: Any, make_cli: Any, eventually: Any
) -> None:
    db_url = f"sqlite:///{tmp_path / 'crmflow.db'}"
    task_queue = f"parts-{uuid.uuid4().hex[:8]}"
    cli = make_cli(db_url, temporal_dev_env.target, task_queue)
    key = publish_and_activate(cli, write_definition, criteria_workflow(unique_key("parts")))
    env = clean_env(
        CRMFLOW_DB=db_url,
        CRMFLOW_TEMPORAL=temporal_dev_env.target,
        CRMFLOW_TASK_QUEUE=task_queue,
        CRMFLOW_DISPATCH_PARTITIONS=str(PARTITIONS),
    )
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for n in range(2):
            with (tmp_path / f"worker{n}.log").open("wb") as out:
                workers.append(
                    subprocess.Popen(
                        [*crmflow_command(), "worker"],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=env,
                    )
                )

        def shared() -> dict[str, str] | None:
            held = holders(db_url)
            by_holder: dict[str, int] = {}
            for holder in held.values():
                by_holder[holder] = by_holder.get(holder, 0) + 1
            fair = len(held) == PARTITIONS and sorted(by_holder.values()) == [2, 2]
            return held if fair else None

        held = eventually(shared, timeout=90, what="two workers holding two partitions each")
        pids = {int(holder.split(":")[1]) for holder in held.values()}
        assert pids == {w.pid for w in workers}

        # Records of every partition, dispatched by both workers at once.
        cli(
            "records",
            "import",
            str(contacts(tmp_path / "first.jsonl", range(40))),
            "--object",
            "contact",
        )
        eventually(lambda: enrolled(db_url) == 40, timeout=90, what="40 enrollments")

        victim = workers[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)

        def moved() -> dict[str, str] | None:
            now = holders(db_url)
            survivors = {int(h.split(":")[1]) for h in now.values()}
            return now if len(now) == PARTITIONS and survivors == {workers[1].pid} else None

        eventually(moved, timeout=90, what="the killed worker's partitions to move")
        cli(
            "records",
            "import",
            str(contacts(tmp_path / "second.jsonl", range(40, 60))),
            "--object",
            "contact",
        )
        eventually(lambda: enrolled(db_url) == 60, timeout=90, what="60 enrollments")
        for n in range(60):
            cli.wait_for_status(key, f"c{n}", "completed")
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                try:
                    worker.wait(30)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()
    output = (tmp_path / "worker1.log").read_text()
    assert "Traceback" not in output, output


def contacts(path: Path, numbers: range) -> Path:
    path.write_text(
        "".join(
            f'{{"id": "c{n}", "lifecycle_stage": "lead", "email": "c{n}@example.com"}}\n'
            for n in numbers
        )
    )
    return path
