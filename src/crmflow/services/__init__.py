"""The service layer: plain typed functions over the store and Temporal, one module per noun,
shared by the CLI (`crmflow.cli`), the HTTP API (`crmflow.api`) and tests. Each function owns
its transactions; every SQL statement is in a store repository.

Modules build on each other one way: `_app` (settings, wiring) -> `_base` (errors, loading a
version, the starter) -> `imports`, `schedules`, `review` -> `workflows`, `activation`,
`records`, `enrollments`, `changes` -> `devserver`, `up`, `simulate`."""

from crmflow.activities.ports import EnrollOutcome

from ._app import App, Settings, connect_temporal, tls_config
from ._base import OperationFailed, UserError, load_version, starter, utcnow
from .activation import ActivationResult, activate, deactivate, remove
from .enrollments import (
    enroll,
    enrollment_view,
    history,
    list_enrollments,
    outbox,
    step_view,
    tasks,
    unenroll,
)
from .records import (
    ImportResult,
    argument,
    change_list,
    delete_record,
    import_records,
    import_rows,
    parse_assignments,
    read_import,
    record_view,
    set_record,
    show_list,
    show_record,
    track_event,
)
from .workflows import (
    Checked,
    Published,
    WorkflowSummary,
    definition_json,
    list_workflows,
    publish,
    publish_files,
    show_workflow,
    validate_files,
)

__all__ = [
    "ActivationResult",
    "App",
    "Checked",
    "EnrollOutcome",
    "ImportResult",
    "OperationFailed",
    "Published",
    "Settings",
    "UserError",
    "WorkflowSummary",
    "activate",
    "argument",
    "change_list",
    "connect_temporal",
    "deactivate",
    "definition_json",
    "delete_record",
    "enroll",
    "enrollment_view",
    "history",
    "import_records",
    "import_rows",
    "list_enrollments",
    "list_workflows",
    "load_version",
    "outbox",
    "parse_assignments",
    "publish",
    "publish_files",
    "read_import",
    "record_view",
    "remove",
    "set_record",
    "show_list",
    "show_record",
    "show_workflow",
    "starter",
    "step_view",
    "tasks",
    "tls_config",
    "track_event",
    "unenroll",
    "utcnow",
    "validate_files",
]
