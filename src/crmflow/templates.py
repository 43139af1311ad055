"""Templates in action fields (`{{ record.firstname }}`), rendered in a Jinja sandbox.

Only `record.<property>`, `workflow.key`, `workflow.name` and `enrollment.id` can be read: no
attribute of any other object, no method call, no import. A missing property renders empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import TemplateError, TemplateSyntaxError, Undefined, meta
from jinja2.sandbox import SandboxedEnvironment, SecurityError

ALLOWED_NAMES = frozenset({"record", "workflow", "enrollment"})


class TemplateProblem(ValueError):
    """A template that cannot be rendered; the message is for the user."""


class _Namespace:
    """Read-only bag of values; the only objects whose attributes a template may read."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def lookup(self, name: str) -> Any:
        return self._values.get(name)


class _Sandbox(SandboxedEnvironment):
    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        return False

    def is_safe_callable(self, obj: Any) -> bool:
        return False

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, _Namespace) and not attribute.startswith("_"):
            value = obj.lookup(attribute)
            return self.undefined(name=attribute) if value is None else value
        raise SecurityError(f"'{attribute}' cannot be read here")

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, _Namespace) and isinstance(argument, str):
            return self.getattr(obj, argument)
        raise SecurityError("only record.<property>, workflow.key, workflow.name, enrollment.id")


_ENV = _Sandbox(undefined=Undefined, autoescape=False, keep_trailing_newline=True)
# No globals (range, cycler, namespace, …): a template reads the three namespaces and nothing else.
_ENV.globals.clear()


def check_template(source: str) -> None:
    """Raise TemplateProblem when the template does not parse or reads an unknown name."""
    try:
        parsed = _ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message}") from None
    unknown = meta.find_undeclared_variables(parsed) - ALLOWED_NAMES
    if unknown:
        raise TemplateProblem(
            f"template reads {', '.join(sorted(unknown))}: "
            "only record, workflow and enrollment exist"
        )


def render(
    source: str,
    *,
    properties: Mapping[str, Any],
    workflow_key: str,
    workflow_name: str,
    enrollment_id: str,
) -> str:
    """Render one template. Raises TemplateProblem (a permanent failure of the action)."""
    if "{" not in source:
        return source
    try:
        template = _ENV.from_string(source)
        return template.render(
            record=_Namespace(properties),
            workflow=_Namespace({"key": workflow_key, "name": workflow_name}),
            enrollment=_Namespace({"id": enrollment_id}),
        )
    except SecurityError as exc:
        raise TemplateProblem(f"template refused: {exc}") from None
    except TemplateError as exc:
        raise TemplateProblem(f"template error: {exc}") from None
