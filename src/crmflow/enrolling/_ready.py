"""An enrollment row committed whose workflow is not started yet: what the starter's two halves
(the store work, then the Temporal start) hand each other."""

from __future__ import annotations

from dataclasses import dataclass

from crmflow.activities.models import EnrollmentInput


@dataclass(frozen=True)
class Ready:
    """An enrollment row committed, its workflow not started yet."""

    input: EnrollmentInput
    temporal_workflow_id: str
    unenroll_from: list[str]  # workflow ids of the record's enrollments to end on start
    # The row's identity, carried by its run (memo): its id and the instant it was written.
    identity: str = ""
    # The row was found running: its workflow is most likely running too (then the record is
    # skipped), unless whoever created the row died before starting it (then it starts now).
    recover: bool = False
