"""Write a new store migration from the changes made to `crmflow/store/_tables.py`.

    .venv/bin/python scripts/new_migration.py "add tasks priority"

Autogenerates against a scratch SQLite database upgraded to the current head, and writes
`src/crmflow/store/migrations/versions/NNNN_<slug>.py`. Review it before committing: autogenerate
does not see renames (it drops and adds), nor changes of server defaults or of an index's WHERE,
and a partial index needs both `sqlite_where` and `postgresql_where`. Then run
`pytest tests/store/test_migrations.py` (with CRMFLOW_TEST_PG_URL set to check PostgreSQL too).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from alembic import command

from crmflow.store._engine import (
    MIGRATIONS_DIR,
    alembic_config,
    create_store_engine,
    upgrade_database,
)


def next_revision_id() -> str:
    numbers = [
        int(match.group(1))
        for path in (MIGRATIONS_DIR / "versions").glob("*.py")
        if (match := re.match(r"(\d+)_", path.name))
    ]
    return f"{max(numbers, default=0) + 1:04d}"


def tidy(path: str) -> None:
    """Format like the rest of the code (alembic writes long lines and single quotes)."""
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        print("ruff not found: the new migration is not formatted", file=sys.stderr)
        return
    subprocess.run([ruff, "format", "--quiet", path], check=False)
    subprocess.run([ruff, "check", "--fix", "--quiet", path], check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("message", help="what the migration does, e.g. 'add tasks priority'")
    args = parser.parse_args(argv)

    empty = False

    def skip_if_empty(context: Any, revision: Any, directives: list[Any]) -> None:
        nonlocal empty
        if directives[0].upgrade_ops.is_empty():
            empty = True
            directives[:] = []

    with tempfile.TemporaryDirectory() as scratch:
        engine = create_store_engine(f"sqlite:///{Path(scratch) / 'scratch.db'}")
        try:
            upgrade_database(engine)
            config = alembic_config()
            with engine.connect() as connection:
                config.attributes["connection"] = connection
                script = command.revision(
                    config,
                    message=args.message,
                    autogenerate=True,
                    rev_id=next_revision_id(),
                    process_revision_directives=skip_if_empty,
                )
        finally:
            engine.dispose()
    if empty or script is None:
        print("no changes: the tables match the migrations", file=sys.stderr)
        return 1
    assert not isinstance(script, list)
    tidy(script.path)
    print(script.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
