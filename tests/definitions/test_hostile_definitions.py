"""Property-based: whatever a definition file holds, loading it gives a definition that can be
stored and loaded again, or located one-line problems; never another exception. No timing is
asserted (the limits count values and characters, not seconds): an input that hung the loader
before would hang this test, and CI's timeout would show it."""

from __future__ import annotations

import json

from hostile_definitions import Hostile, documents
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crmflow.definitions import (
    DefinitionError,
    WorkflowDefinition,
    load_definition_data,
    load_definition_text,
)
from crmflow.limits import MAX_ENCODED_BYTES

HOSTILE = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check(text: str, source_name: str) -> WorkflowDefinition | None:
    """The definition, or None after checking that every problem is located and one line."""
    try:
        definition = load_definition_text(text, source_name=source_name)
    except DefinitionError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.file == source_name
            assert problem.message
            assert str(problem).splitlines() == [str(problem)]  # one line, printable
            assert str(problem).startswith(source_name)
            assert "Traceback" not in problem.message
        return None
    stored = definition.model_dump(mode="json", by_alias=True, exclude_none=True)
    encoded = json.dumps(stored, allow_nan=False)  # no NaN or infinity can have slipped through
    assert len(encoded.encode()) <= MAX_ENCODED_BYTES
    assert load_definition_data(json.loads(encoded), source_name=source_name) == definition
    return definition


@HOSTILE
@given(documents)
def test_a_hostile_document_loads_or_gives_located_problems(hostile: Hostile) -> None:
    check(hostile.text, f"hostile{hostile.suffix}")


@HOSTILE
@given(st.text(max_size=300))
def test_any_text_loads_or_gives_located_problems(text: str) -> None:
    check(text, "any.yaml")
    check(text, "any.json")
