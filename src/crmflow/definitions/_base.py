from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class DefinitionModel(BaseModel):
    """Base of every definition model: immutable, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
