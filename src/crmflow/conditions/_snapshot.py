"""What a condition is evaluated against in Python: a record as the store holds it right now."""

from __future__ import annotations

from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class EventSnapshot(BaseModel):
    """One event the record did."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Event name, e.g. form_submitted")
    occurred_at: AwareDatetime = Field(description="When it happened")
    properties: dict[str, Any] = Field(default_factory=dict, description="Event properties")


class RecordSnapshot(BaseModel):
    """A record with its list memberships and events, as read from the store."""

    model_config = ConfigDict(frozen=True)

    object_type: str = Field(description="Object type, e.g. contact")
    id: str = Field(description="Record id")
    properties: dict[str, Any] = Field(default_factory=dict, description="JSON property values")
    lists: frozenset[str] = Field(default_factory=frozenset, description="Lists it is a member of")
    events: list[EventSnapshot] = Field(default_factory=list, description="Its events")
