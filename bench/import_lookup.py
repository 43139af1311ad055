"""A large import into a new PostgreSQL store: how `upsert_many` finds the existing records.

    .venv/bin/python bench/import_lookup.py [-n 50000] [--pg URL]

The store (default postgresql+psycopg://postgres@127.0.0.1:5432/crmflow_bench, created if
missing) is emptied and migrated, 30 contacts are written, then -n new contacts are imported in
one transaction, 1,000 rows per `upsert_many` call, by what `crmflow records import` runs.
Twice, each on a fresh store: with the lookup crmflow uses (one primary-key probe per id), then
with the plain `object_type = ... AND id IN (...)` it replaced. A new store has no statistics
yet, so PostgreSQL plans the plain form as a probe by object type alone, filtered: each call
rescans every record the transaction wrote so far.

Prints both times and their ratio. Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import time

from sqlalchemy import Select, create_engine, select, text

from crmflow import services
from crmflow.services import App, Settings
from crmflow.store import Record, RecordRepository, ensure_postgres_database

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/crmflow_bench"


def plain_lookup(self: RecordRepository, object_type: str, ids: list[str]) -> Select[Record]:
    return select(Record).where(Record.object_type == object_type, Record.id.in_(ids))


def import_once(url: str, n: int) -> float:
    """Seconds to import n new contacts in one transaction into a fresh store."""
    admin = create_engine(url)
    with admin.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    admin.dispose()
    app = App(Settings(db_url=url))  # migrates the empty store
    try:
        seed = [(f"seed-{i}", {"email": f"seed{i}@example.com"}) for i in range(30)]
        services.import_rows(app, seed, "contact")
        rows = [
            (f"c-{i:07d}", {"email": f"c{i}@example.com", "lifecyclestage": "customer"})
            for i in range(n)
        ]
        began = time.perf_counter()
        services.import_rows(app, rows, "contact")  # what `records import` runs
        return time.perf_counter() - began
    finally:
        app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=50_000, help="imported contacts (50000)")
    parser.add_argument("--pg", default=DEFAULT_URL, help="PostgreSQL URL (emptied first)")
    args = parser.parse_args()
    ensure_postgres_database(args.pg)
    probing = import_once(args.pg, args.n)
    current = RecordRepository._lookup
    RecordRepository._lookup = plain_lookup  # type: ignore[method-assign]
    try:
        plain = import_once(args.pg, args.n)
    finally:
        RecordRepository._lookup = current  # type: ignore[method-assign]
    print(
        f"{args.n:,} new contacts in one transaction, new PostgreSQL store: "
        f"{probing:.1f} s with primary-key probes, {plain:.1f} s with `id IN (...)`: "
        f"{plain / probing:.1f}x",
        flush=True,
    )


if __name__ == "__main__":
    main()
