"""dispatch partitions and lanes: each change's record bucket, and whether a bulk write made it

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 23:00:00.000000
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BUCKETS = 1024  # crmflow.store._tables.CHANGE_BUCKETS, as of this revision


def upgrade() -> None:
    with op.batch_alter_table("record_changes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("bucket", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
        batch_op.add_column(
            sa.Column("bulk", sa.Boolean(), server_default=sa.text("false"), nullable=False)
        )
    # The changes not dispatched yet get their record's bucket: a record's pending changes
    # must all fall in one partition (dispatched ones are never read by partition). Computed
    # here (CRC-32): an offline (--sql) upgrade cannot, so dispatch the feed out before one.
    if not context.is_offline_mode():
        _bucket_pending()
    op.create_index(
        "ix_record_changes_pending_interactive",
        "record_changes",
        ["id"],
        unique=False,
        sqlite_where=sa.text("dispatched_at IS NULL AND NOT bulk"),
        postgresql_where=sa.text("dispatched_at IS NULL AND NOT bulk"),
    )


def _bucket_pending() -> None:
    connection = op.get_bind()
    changes = sa.table(
        "record_changes",
        sa.column("id", sa.BigInteger),
        sa.column("object_type", sa.String),
        sa.column("record_id", sa.String),
        sa.column("dispatched_at", sa.DateTime),
        sa.column("bucket", sa.Integer),
    )
    pending = connection.execute(
        sa.select(changes.c.id, changes.c.object_type, changes.c.record_id).where(
            changes.c.dispatched_at.is_(None)
        )
    ).all()
    if pending:
        connection.execute(
            changes.update()
            .where(changes.c.id == sa.bindparam("change_id"))
            .values(bucket=sa.bindparam("change_bucket")),
            [
                {
                    "change_id": change_id,
                    "change_bucket": zlib.crc32(f"{object_type}\x00{record_id}".encode()) % BUCKETS,
                }
                for change_id, object_type, record_id in pending
            ],
        )


def downgrade() -> None:
    op.drop_index("ix_record_changes_pending_interactive", table_name="record_changes")
    with op.batch_alter_table("record_changes", schema=None) as batch_op:
        batch_op.drop_column("bulk")
        batch_op.drop_column("bucket")
