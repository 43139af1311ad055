"""SQLAlchemy tables of the store. All SQL lives in `crmflow.store`; this is its schema."""

from __future__ import annotations

import zlib
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# JSONB on PostgreSQL (indexable, `->>` works), JSON text elsewhere.
JsonColumn = JSON().with_variant(JSONB(), "postgresql")
# SQLite only autoincrements INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes, stored as UTC; SQLite gives naive values back, made aware here."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC datetime")
        from datetime import UTC

        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        from datetime import UTC

        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Record(Base):
    __tablename__ = "records"

    object_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    properties: Mapped[dict[str, Any]] = mapped_column(JsonColumn, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RecordList(Base):
    """A named static list of records of one object type."""

    __tablename__ = "lists"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    object_type: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ListMembership(Base):
    __tablename__ = "list_memberships"
    __table_args__ = (
        ForeignKeyConstraint(
            ["object_type", "record_id"], ["records.object_type", "records.id"], ondelete="CASCADE"
        ),
        Index("ix_list_memberships_record", "object_type", "record_id"),
    )

    list_name: Mapped[str] = mapped_column(
        ForeignKey("lists.name", ondelete="CASCADE"), primary_key=True
    )
    object_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    record_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    added_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        ForeignKeyConstraint(
            ["object_type", "record_id"], ["records.object_type", "records.id"], ondelete="CASCADE"
        ),
        Index("ix_events_record_name_time", "object_type", "record_id", "name", "occurred_at"),
        # Events of one name that age out of a `within` window during a sweep's window: a range
        # scan, whatever the number of records.
        Index("ix_events_type_name_time", "object_type", "name", "occurred_at"),
        # A client's `event_id` (HTTP API): one event per id, so a retried POST never counts
        # twice, whichever API process or database connection the retry reaches.
        Index("uq_events_client_event_id", "client_event_id", unique=True),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    object_type: Mapped[str] = mapped_column(String(64))
    record_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(128))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    properties: Mapped[dict[str, Any]] = mapped_column(JsonColumn, default=dict)
    client_event_id: Mapped[str | None] = mapped_column(String(255), default=None)


class RecordDate(Base):
    """The instant of every property value that is a date (as conditions read it: epoch seconds,
    UTC, fractions dropped), kept by `RecordRepository` in the transaction of each write: what
    lets a sweep find the records whose time-relative conditions cross a moment with range
    scans instead of reading every record. Only properties a condition can name are indexed."""

    __tablename__ = "record_dates"
    __table_args__ = (
        ForeignKeyConstraint(
            ["object_type", "record_id"], ["records.object_type", "records.id"], ondelete="CASCADE"
        ),
        Index("ix_record_dates_type_property_at", "object_type", "property", "at"),
        # On SQLite the rows live in the primary key's b-tree itself: one b-tree less to
        # write on every record write.
        {"sqlite_with_rowid": False},
    )

    object_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    record_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    property: Mapped[str] = mapped_column(String(128), primary_key=True)
    # Epoch seconds, not a timestamp: a date value may lie beyond what a datetime holds
    # (9999-12-31T23:59:59-23:59), and integers compare the same on every database.
    at: Mapped[int] = mapped_column(BigInteger)


class Workflow(Base):
    """A workflow key: its activation state and latest version."""

    __tablename__ = "workflows"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    latest_version: Mapped[int] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    activated_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    deactivated_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # The last record change committed before the latest activation: automatic enrollment only
    # reacts to later changes (records that matched before enroll only with enroll_existing).
    activated_change_id: Mapped[int | None] = mapped_column(BigId, nullable=True)


class WorkflowVersion(Base):
    """An immutable published version of a definition."""

    __tablename__ = "workflow_versions"

    key: Mapped[str] = mapped_column(
        ForeignKey("workflows.key", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    object_type: Mapped[str] = mapped_column(String(64))
    trigger: Mapped[str] = mapped_column(String(16))
    definition: Mapped[dict[str, Any]] = mapped_column(JsonColumn)
    source: Mapped[str] = mapped_column(Text)
    source_name: Mapped[str] = mapped_column(String(1024))
    published_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Enrollment(Base):
    """One record passing through one workflow version: one Temporal workflow execution."""

    __tablename__ = "enrollments"
    __table_args__ = (
        UniqueConstraint("workflow_key", "object_type", "record_id", "seq"),
        # At most one running (or paused) enrollment per (workflow, record), enforced by the store.
        Index(
            "uq_enrollments_one_active",
            "workflow_key",
            "object_type",
            "record_id",
            unique=True,
            sqlite_where=text("status IN ('running', 'paused')"),
            postgresql_where=text("status IN ('running', 'paused')"),
        ),
        Index("ix_enrollments_workflow_status", "workflow_key", "status"),
        Index("ix_enrollments_record", "object_type", "record_id"),
        # A change enrolls a record in a workflow at most once, however often it is dispatched;
        # the change id leads, so a redo finds its enrollments by the change alone.
        UniqueConstraint("trigger_change_id", "workflow_key"),
        # An enroll_in_workflow step enrolls the record in a workflow at most once, however
        # often its activity is retried.
        Index("uq_enrollments_origin_workflow_key", "origin", "workflow_key", unique=True),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workflow_key: Mapped[str] = mapped_column(ForeignKey("workflows.key", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    object_type: Mapped[str] = mapped_column(String(64))
    record_id: Mapped[str] = mapped_column(String(255))
    seq: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    source: Mapped[str] = mapped_column(String(16), default="manual")
    enrolled_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    temporal_workflow_id: Mapped[str] = mapped_column(String(512), unique=True)
    trigger_change_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    # The step that caused this enrollment ("<enrollment id>:<action id>"), for enrollments
    # made by another workflow's enroll_in_workflow action.
    origin: Mapped[str | None] = mapped_column(String(200), nullable=True)


class RecordAssociation(Base):
    """A record created by `create_record`, associated with the enrolled record."""

    __tablename__ = "record_associations"
    __table_args__ = (
        ForeignKeyConstraint(
            ["object_type", "record_id"], ["records.object_type", "records.id"], ondelete="CASCADE"
        ),
        ForeignKeyConstraint(
            ["other_object_type", "other_record_id"],
            ["records.object_type", "records.id"],
            ondelete="CASCADE",
        ),
        Index("ix_record_associations_other", "other_object_type", "other_record_id"),
    )

    object_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    record_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    other_object_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    other_record_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class EnrollmentStep(Base):
    """One action executed by one enrollment. Unique per (enrollment, action): the idempotency key
    that makes every effect happen once, since the action graph is acyclic."""

    __tablename__ = "enrollment_steps"
    __table_args__ = (UniqueConstraint("enrollment_id", "action_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    enrollment_id: Mapped[int] = mapped_column(ForeignKey("enrollments.id", ondelete="CASCADE"))
    action_id: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    outcome: Mapped[str | None] = mapped_column(Text, nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JsonColumn, default=dict)


class OutboxMessage(Base):
    """An email from `send_email` or `notify`."""

    __tablename__ = "outbox"
    __table_args__ = (UniqueConstraint("enrollment_id", "action_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    enrollment_id: Mapped[int | None] = mapped_column(
        ForeignKey("enrollments.id", ondelete="SET NULL"), nullable=True
    )
    action_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))  # email | notification
    to: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(String(255))
    workflow_key: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(64))
    record_id: Mapped[str] = mapped_column(String(255))
    delivery_status: Mapped[str] = mapped_column(String(32), default="outbox")
    sent_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (UniqueConstraint("enrollment_id", "action_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    enrollment_id: Mapped[int | None] = mapped_column(
        ForeignKey("enrollments.id", ondelete="SET NULL"), nullable=True
    )
    action_id: Mapped[str] = mapped_column(String(128))
    title: Mapped[str] = mapped_column(Text)
    assignee: Mapped[str | None] = mapped_column(String(320), nullable=True)
    due_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    workflow_key: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(64))
    record_id: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


CHANGE_BUCKETS = 1024


def change_bucket(object_type: str, record_id: str) -> int:
    """A record's bucket of the change feed: stable (CRC-32, not Python's salted hash)."""
    return zlib.crc32(f"{object_type}\x00{record_id}".encode()) % CHANGE_BUCKETS


def _bucket_of_row(context: Any) -> int:
    row = context.get_current_parameters()
    return change_bucket(row["object_type"], row["record_id"])


class RecordChange(Base):
    """The change feed: one row per change of a record, committed in the same transaction as
    the change itself, so the dispatcher can never miss one. `dispatched_at` is set once every
    enrollment and signal the change calls for has been made."""

    __tablename__ = "record_changes"
    __table_args__ = (
        Index(
            "ix_record_changes_pending",
            "id",
            sqlite_where=text("dispatched_at IS NULL"),
            postgresql_where=text("dispatched_at IS NULL"),
        ),
        # The pending changes of interactive writes (not `bulk`): a dispatcher takes them
        # first, so one record's change is not queued behind a large import.
        Index(
            "ix_record_changes_pending_interactive",
            "id",
            sqlite_where=text("dispatched_at IS NULL AND NOT bulk"),
            postgresql_where=text("dispatched_at IS NULL AND NOT bulk"),
        ),
        Index("ix_record_changes_record", "object_type", "record_id"),
        # Changes whose dispatch failed (waiting for a retry, or parked): few, looked up per
        # record to hold that record's later changes back.
        Index(
            "ix_record_changes_troubled",
            "object_type",
            "record_id",
            sqlite_where=text("dispatched_at IS NULL AND attempts > 0"),
            postgresql_where=text("dispatched_at IS NULL AND attempts > 0"),
        ),
        # A "time passed" change (kind `time`) exists once per workflow, record and instant,
        # whatever sweep appends it and however often: the sweep inserts with ON CONFLICT DO
        # NOTHING on this index.
        Index(
            "uq_record_changes_time",
            "workflow_key",
            "object_type",
            "record_id",
            "occurred_at",
            unique=True,
            sqlite_where=text("workflow_key IS NOT NULL"),
            postgresql_where=text("workflow_key IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    object_type: Mapped[str] = mapped_column(String(64))
    record_id: Mapped[str] = mapped_column(String(255))
    # created updated deleted listed unlisted event, or time: a time-relative term of one
    # workflow's conditions changed for the record at `occurred_at`, with no change to it
    # (then `properties` and `before["events"]` name the properties and events whose terms did).
    kind: Mapped[str] = mapped_column(String(16))
    properties: Mapped[list[str]] = mapped_column(JsonColumn, default=list)
    before: Mapped[dict[str, Any]] = mapped_column(JsonColumn, default=dict)
    list_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    event_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    event_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    # The workflow a `time` change is for (NULL for every other kind).
    workflow_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    dispatched_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # After a failed dispatch: not tried again before this time (the database's clock).
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # Set when the dispatch failed too often: out of the feed until `crmflow changes retry`.
    parked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # The record's bucket (`change_bucket`): a dispatch partition takes the buckets b with
    # b % partitions == its number, so a record's changes always go to one partition.
    bucket: Mapped[int] = mapped_column(Integer, default=_bucket_of_row, server_default=text("0"))
    # Written by a bulk write (an import, a batch): dispatched after interactive writes'
    # changes (a record's changes still in order).
    bulk: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))


class TimeSweep(Base):
    """How far the changes that time alone makes to a workflow's conditions have been handed to
    the dispatcher: every crossing at an instant up to `swept_to` was, none after it. Advanced
    in the transaction that hands a window's crossings over, so no window is done twice or
    skipped."""

    __tablename__ = "time_sweeps"

    workflow_key: Mapped[str] = mapped_column(
        ForeignKey("workflows.key", ondelete="CASCADE"), primary_key=True
    )
    swept_to: Mapped[datetime] = mapped_column(UtcDateTime)


class Lease(Base):
    """Who runs a singleton loop (the change dispatcher) while several workers run."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # The fencing token: changes at every takeover, and every write made under the lease
    # checks it in the same statement, so a holder that lost the lease cannot write.
    token: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))


class ScheduledRun(Base):
    """One run of a scheduled workflow: who matched, who was enrolled, who was skipped."""

    __tablename__ = "scheduled_runs"
    __table_args__ = (Index("ix_scheduled_runs_workflow", "workflow_key", "started_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workflow_key: Mapped[str] = mapped_column(ForeignKey("workflows.key", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    temporal_workflow_id: Mapped[str] = mapped_column(String(512), unique=True)
    trigger: Mapped[str] = mapped_column(String(16))  # schedule | manual (run-now)
    status: Mapped[str] = mapped_column(String(16))  # running | completed | failed
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    matched: Mapped[int] = mapped_column(Integer, default=0)
    enrolled: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class ApiKey(Base):
    """A key of the HTTP API. Only a hash of the key is stored: the key itself is shown once,
    when it is made. A name is unique among the keys not revoked; a revoked key stays, so its
    name and use remain on record."""

    __tablename__ = "api_keys"
    __table_args__ = (
        Index(
            "uq_api_keys_active_name",
            "name",
            unique=True,
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(16))  # ingest | read | admin
    # SHA-256 of the key, hex: keys are looked up by it.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The key's first characters ("crmflow_AbCd"), to tell keys apart in listings.
    key_hint: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class IdempotencyRecord(Base):
    """A POST made with an `Idempotency-Key`: held while in flight, then its response, returned
    again for a retry until `expires_at`. A row past `expires_at` counts as gone (an in-flight
    row then was abandoned: its request never committed)."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("api_key_id", "key"),
        Index("ix_idempotency_keys_expires_at", "expires_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    # SHA-256 of the method, path and body: a retry must send the same request.
    request_hash: Mapped[str] = mapped_column(String(64))
    # The request holding the row: only it can store the response (a fencing token).
    owner: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # in_flight | done
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    response_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response_headers: Mapped[list[list[str]] | None] = mapped_column(JsonColumn, nullable=True)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
