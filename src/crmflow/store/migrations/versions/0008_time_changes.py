"""time changes: the workflow a "time passed" change is for, unique per workflow, record and
instant

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 18:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import context, op

from crmflow.store._tables import UtcDateTime

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("record_changes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("workflow_key", sa.String(length=64), nullable=True))
        batch_op.create_index(
            "uq_record_changes_time",
            ["workflow_key", "object_type", "record_id", "occurred_at"],
            unique=True,
            sqlite_where=sa.text("workflow_key IS NOT NULL"),
            postgresql_where=sa.text("workflow_key IS NOT NULL"),
        )
    _start_sweeps_of_active_workflows()


def _start_sweeps_of_active_workflows() -> None:
    """The workflows active before this upgrade are swept from now on: a workflow without a
    watermark is swept from its activation, and these were activated before anything swept."""
    if context.is_offline_mode():
        return
    workflows = sa.table("workflows", sa.column("key", sa.String()), sa.column("active"))
    sweeps = sa.table(
        "time_sweeps", sa.column("workflow_key", sa.String()), sa.column("swept_to", UtcDateTime())
    )
    connection = op.get_bind()
    swept = set(connection.scalars(sa.select(sweeps.c.workflow_key)))
    keys = connection.scalars(sa.select(workflows.c.key).where(workflows.c.active.is_(True)))
    now = datetime.now(UTC)
    rows = [{"workflow_key": key, "swept_to": now} for key in keys if key not in swept]
    if rows:
        connection.execute(sa.insert(sweeps), rows)


def downgrade() -> None:
    with op.batch_alter_table("record_changes", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_record_changes_time",
            sqlite_where=sa.text("workflow_key IS NOT NULL"),
            postgresql_where=sa.text("workflow_key IS NOT NULL"),
        )
        batch_op.drop_column("workflow_key")
