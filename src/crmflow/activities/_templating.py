"""Templates of an action, rendered for one enrollment (SPEC §2.3: `record.*`, `workflow.key`,
`workflow.name`, `enrollment.id`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crmflow.templates import render

from .models import EnrollmentContext


def render_for(ctx: EnrollmentContext, source: str, properties: Mapping[str, Any]) -> str:
    """Raises crmflow.templates.TemplateProblem on a template that is refused or cannot render
    (whatever the reason: a retry renders the same template on the same record), which every
    action that renders records as its permanent failure (`failed: …`), never retried."""
    return render(
        source,
        properties=dict(properties),
        workflow_key=ctx.workflow_key,
        workflow_name=ctx.workflow_name,
        enrollment_id=str(ctx.enrollment_id),
    )
