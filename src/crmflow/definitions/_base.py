from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo

Loc = tuple[str | int, ...]
"""A location in a definition document: keys and list indexes, e.g. `("actions", 2, "next")`."""

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


class DefinitionModel(BaseModel):
    """Base of every definition model: immutable, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def render_path(loc: Loc) -> str:
    """`("actions", 2, "next")` -> `actions[2].next`; odd keys are quoted: `cases["gold plan"]`."""
    out = ""
    for seg in loc:
        if isinstance(seg, int):
            out += f"[{seg}]"
        elif _PLAIN_KEY.match(seg):
            out += f".{seg}" if out else seg
        else:
            out += f"[{json.dumps(seg, ensure_ascii=False)}]"
    return out


NEW_DEFINITION: dict[str, Any] = {"crmflow_new_definition": True}
"""Validation context of a definition that enters the system (`validate`, `publish`,
`simulate`, and the stored form checked before a publish commits). It adds the size and shape
limits of `crmflow.limits` and the template allowlist of `crmflow.templates` to the rules every
validation applies. Without it (a version read from the store, the input of a running
enrollment) a definition stored before those rules existed still loads: its templates are
checked again when they render, and refused there."""


def is_new_definition(info: ValidationInfo | None) -> bool:
    """Whether the definition being validated is a new one (see NEW_DEFINITION)."""
    return bool(info is not None and info.context and info.context.get("crmflow_new_definition"))


class DefinitionProblems(ValueError):
    """Several located problems found by one validator.

    Locations are relative to the model being validated; the loader prefixes them with the
    model's own location, so each problem is reported at its own path and line.
    """

    def __init__(self, problems: Iterable[tuple[Loc, str]]) -> None:
        self.problems = list(problems)
        super().__init__(
            "; ".join(f"{render_path(loc)}: {msg}" if loc else msg for loc, msg in self.problems)
        )


def raise_problems(problems: Iterable[tuple[Loc, str]]) -> None:
    """Raise DefinitionProblems if there is any problem."""
    found = list(problems)
    if found:
        raise DefinitionProblems(found)
