"""Custom search attributes that make enrollments findable in the Temporal Web UI."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

WORKFLOW_KEY = SearchAttributeKey.for_keyword("CrmflowWorkflow")
VERSION = SearchAttributeKey.for_int("CrmflowVersion")
RECORD_ID = SearchAttributeKey.for_keyword("CrmflowRecordId")
OBJECT_TYPE = SearchAttributeKey.for_keyword("CrmflowObjectType")
STATUS = SearchAttributeKey.for_keyword("CrmflowStatus")

ALL = (WORKFLOW_KEY, VERSION, RECORD_ID, OBJECT_TYPE, STATUS)


def dev_server_flags() -> list[str]:
    """`--search-attribute Name=Type` flags for `temporal server start-dev`."""
    kinds = {"KEYWORD": "Keyword", "INT": "Int"}
    return [
        flag
        for key in ALL
        for flag in ("--search-attribute", f"{key.name}={kinds[key.indexed_value_type.name]}")
    ]
