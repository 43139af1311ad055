"""client event ids: an event posted with an `event_id` is stored once

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 18:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("client_event_id", sa.String(length=255), nullable=True))
        batch_op.create_index("uq_events_client_event_id", ["client_event_id"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("uq_events_client_event_id")
        batch_op.drop_column("client_event_id")
