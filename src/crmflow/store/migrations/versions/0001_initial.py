"""The initial schema: records, lists, events, workflows, enrollments, outbox, tasks.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 00:44:46.436529
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lists",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("object_type", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_lists")),
    )
    op.create_table(
        "records",
        sa.Column("object_type", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column(
            "properties", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("object_type", "id", name=op.f("pk_records")),
    )
    op.create_table(
        "workflows",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deactivated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_workflows")),
    )
    op.create_table(
        "enrollments",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("workflow_key", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("object_type", sa.String(length=64), nullable=False),
        sa.Column("record_id", sa.String(length=255), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("temporal_workflow_id", sa.String(length=512), nullable=False),
        sa.ForeignKeyConstraint(
            ["workflow_key"],
            ["workflows.key"],
            name=op.f("fk_enrollments_workflow_key_workflows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrollments")),
        sa.UniqueConstraint(
            "temporal_workflow_id", name=op.f("uq_enrollments_temporal_workflow_id")
        ),
        sa.UniqueConstraint(
            "workflow_key",
            "object_type",
            "record_id",
            "seq",
            name=op.f("uq_enrollments_workflow_key_object_type_record_id_seq"),
        ),
    )
    op.create_index(
        "ix_enrollments_workflow_status", "enrollments", ["workflow_key", "status"], unique=False
    )
    # At most one running or paused enrollment per (workflow, record): a partial unique index,
    # with its WHERE given for each database.
    op.create_index(
        "uq_enrollments_one_active",
        "enrollments",
        ["workflow_key", "object_type", "record_id"],
        unique=True,
        sqlite_where=sa.text("status IN ('running', 'paused')"),
        postgresql_where=sa.text("status IN ('running', 'paused')"),
    )
    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("object_type", sa.String(length=64), nullable=False),
        sa.Column("record_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "properties", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["object_type", "record_id"],
            ["records.object_type", "records.id"],
            name=op.f("fk_events_object_type_records"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index(
        "ix_events_record_name_time",
        "events",
        ["object_type", "record_id", "name", "occurred_at"],
        unique=False,
    )
    op.create_table(
        "list_memberships",
        sa.Column("list_name", sa.String(length=128), nullable=False),
        sa.Column("object_type", sa.String(length=64), nullable=False),
        sa.Column("record_id", sa.String(length=255), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["list_name"],
            ["lists.name"],
            name=op.f("fk_list_memberships_list_name_lists"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["object_type", "record_id"],
            ["records.object_type", "records.id"],
            name=op.f("fk_list_memberships_object_type_records"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "list_name", "object_type", "record_id", name=op.f("pk_list_memberships")
        ),
    )
    op.create_index(
        "ix_list_memberships_record", "list_memberships", ["object_type", "record_id"], unique=False
    )
    op.create_table(
        "workflow_versions",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("object_type", sa.String(length=64), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column(
            "definition", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("source_name", sa.String(length=1024), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["key"],
            ["workflows.key"],
            name=op.f("fk_workflow_versions_key_workflows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key", "version", name=op.f("pk_workflow_versions")),
    )
    op.create_table(
        "enrollment_steps",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "enrollment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("action_id", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column(
            "detail", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["enrollment_id"],
            ["enrollments.id"],
            name=op.f("fk_enrollment_steps_enrollment_id_enrollments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrollment_steps")),
        sa.UniqueConstraint(
            "enrollment_id", "action_id", name=op.f("uq_enrollment_steps_enrollment_id_action_id")
        ),
    )
    op.create_table(
        "outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "enrollment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("action_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("to", sa.String(length=320), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("workflow_key", sa.String(length=64), nullable=False),
        sa.Column("object_type", sa.String(length=64), nullable=False),
        sa.Column("record_id", sa.String(length=255), nullable=False),
        sa.Column("delivery_status", sa.String(length=32), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["enrollment_id"],
            ["enrollments.id"],
            name=op.f("fk_outbox_enrollment_id_enrollments"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint(
            "enrollment_id", "action_id", name=op.f("uq_outbox_enrollment_id_action_id")
        ),
    )
    op.create_table(
        "tasks",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "enrollment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("action_id", sa.String(length=128), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("assignee", sa.String(length=320), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("workflow_key", sa.String(length=64), nullable=False),
        sa.Column("object_type", sa.String(length=64), nullable=False),
        sa.Column("record_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["enrollment_id"],
            ["enrollments.id"],
            name=op.f("fk_tasks_enrollment_id_enrollments"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
        sa.UniqueConstraint(
            "enrollment_id", "action_id", name=op.f("uq_tasks_enrollment_id_action_id")
        ),
    )


def downgrade() -> None:
    op.drop_table("tasks")
    op.drop_table("outbox")
    op.drop_table("enrollment_steps")
    op.drop_table("workflow_versions")
    op.drop_table("list_memberships")
    op.drop_table("events")
    op.drop_table("enrollments")
    op.drop_table("workflows")
    op.drop_table("records")
    op.drop_table("lists")
