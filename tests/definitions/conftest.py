from __future__ import annotations

import textwrap
from collections.abc import Callable

import pytest

from crmflow.definitions import (
    DefinitionError,
    Problem,
    WorkflowDefinition,
    load_definition_text,
)

HEADER = """\
key: test-flow
name: Test flow
enrollment:
  trigger: manual
"""


def _text(doc: str, header: bool) -> str:
    doc = textwrap.dedent(doc)
    return HEADER + doc if header else doc


@pytest.fixture
def load() -> Callable[..., WorkflowDefinition]:
    """Load YAML text; with `header=True` (default) a key/name/manual enrollment is prepended,
    so line 5 is the first line of `doc`."""

    def load(doc: str, *, header: bool = True) -> WorkflowDefinition:
        return load_definition_text(_text(doc, header), source_name="test.yaml")

    return load


@pytest.fixture
def problems() -> Callable[..., list[Problem]]:
    """The problems of an invalid YAML text (fails if it loads)."""

    def problems(doc: str, *, header: bool = True) -> list[Problem]:
        with pytest.raises(DefinitionError) as caught:
            load_definition_text(_text(doc, header), source_name="test.yaml")
        return caught.value.problems

    return problems


@pytest.fixture
def problem(problems: Callable[..., list[Problem]]) -> Callable[..., Problem]:
    """The single problem of an invalid YAML text."""

    def problem(doc: str, *, header: bool = True) -> Problem:
        found = problems(doc, header=header)
        assert len(found) == 1, "\n".join(map(str, found))
        return found[0]

    return problem
