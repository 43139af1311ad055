"""Templates in action fields (`{{ record.firstname }}`): checked node by node, rendered in a
Jinja sandbox with bounded work.

A template may only
- output literal text, `record.<property>` (or `record['property name']`), `workflow.key`,
  `workflow.name`, `enrollment.id` and literals (text, numbers, true/false/none, lists);
- pass values through the filters of `FILTERS` and the tests of `TESTS`;
- choose with `{% if %}` / `{% elif %}` / `{% else %}` and `a if test else b`, comparing with
  `== != < <= > >= in not in`, combining with `and or not`, joining text with `~`.

Everything else (arithmetic, calls, loops, macros, `set`, `include`, attribute access beyond the
three namespaces) is refused when a definition is validated, by walking the parsed template
(`jinja2.nodes`) before anything is compiled, so nothing is constant-folded or run. The renderer
checks the same rules again before it compiles: a definition stored before these rules existed
renders nothing they refuse (the step fails instead). A render reads and produces at most
`MAX_RENDER_WORK` characters and returns at most `MAX_RENDERED_CHARS`; a template that cannot
render raises TemplateProblem, a permanent failure of its action. A missing property renders
as empty text and compares false.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from typing import Any

from jinja2 import Template, TemplateSyntaxError, Undefined, nodes, pass_context
from jinja2 import filters as jinja_filters
from jinja2 import tests as jinja_tests
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment, SecurityError
from markupsafe import escape

from crmflow.limits import (
    MAX_RENDER_WORK,
    MAX_RENDERED_CHARS,
    MAX_ROUND_PRECISION,
    MAX_TEMPLATE_DEPTH,
)

ALLOWED_NAMES = frozenset({"record", "workflow", "enrollment"})
_FIELDS: dict[str, frozenset[str] | None] = {
    "record": None,  # any property
    "workflow": frozenset({"key", "name"}),
    "enrollment": frozenset({"id"}),
}
_READABLE = "record.<property>, workflow.key, workflow.name and enrollment.id"


class TemplateProblem(ValueError):
    """A template that is refused or cannot be rendered; the message is for the user."""


# ---------------------------------------------------------------------------- render budget


class _Budget:
    """Characters a render may still read or produce (`MAX_RENDER_WORK` in all)."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_RENDER_WORK

    def spend(self, amount: int) -> None:
        self.left -= amount
        if self.left < 0:
            raise TemplateProblem(
                f"template refused: rendering it reads or produces more than"
                f" {MAX_RENDER_WORK:,} characters"
            )


_BUDGET = "_crmflow_budget"  # a render variable no template can name (names are checked)


def _size(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list | dict):
        try:
            return len(json.dumps(value, default=str))
        except ValueError:
            return MAX_RENDER_WORK + 1
    return 32


def _spend(context: Context, result: Any) -> Any:
    budget = context.get(_BUDGET)
    if isinstance(budget, _Budget):
        budget.spend(_size(result))
    return result


class _Missing(Undefined):
    """A missing property: renders empty, compares false (never an error)."""

    __slots__ = ()

    def _false(self, other: Any) -> bool:
        return False

    __lt__ = __le__ = __gt__ = __ge__ = _false  # type: ignore[assignment]


class _Namespace:
    """Read-only bag of values; the only objects whose attributes a template may read."""

    __slots__ = ("_budget", "_values")

    def __init__(self, values: Mapping[str, Any], budget: _Budget) -> None:
        self._values = dict(values)
        self._budget = budget

    def lookup(self, name: str) -> Any:
        value = self._values.get(name)
        self._budget.spend(_size(value))
        return value


class _Sandbox(SandboxedEnvironment):
    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        return False

    def is_safe_callable(self, obj: Any) -> bool:
        return False

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, _Namespace):
            value = obj.lookup(attribute)
            return self.undefined(name=attribute) if value is None else value
        raise SecurityError(f"'{attribute}' cannot be read here")

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, _Namespace) and isinstance(argument, str):
            return self.getattr(obj, argument)
        raise SecurityError(f"only {_READABLE} can be read")


# ---------------------------------------------------------------------------------- filters


def _text(value: Any) -> str:
    return str(jinja_filters.soft_str(value))


@pass_context
def _replace_filter(
    context: Context, value: Any, old: Any, new: Any, count: int | None = None
) -> str:
    text, old, new = _text(value), _text(old), _text(new)
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
        raise TemplateProblem("template error: replace's count must be a whole number")
    found = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:
        found = min(found, count)
    budget = context.get(_BUDGET)
    if isinstance(budget, _Budget):  # the result's size, counted before it is built
        budget.spend(len(text) + found * (len(new) - len(old)))
    return text.replace(old, new, -1 if count is None else count)


def _round(value: Any, precision: int = 0, method: str = "common") -> float:
    if (
        isinstance(precision, bool)
        or not isinstance(precision, int)
        or not 0 <= precision <= MAX_ROUND_PRECISION
    ):
        raise TemplateProblem(
            f"template error: round's precision must be a whole number from 0 to"
            f" {MAX_ROUND_PRECISION}"
        )
    if method not in ("common", "ceil", "floor"):
        raise TemplateProblem("template error: round's method must be common, ceil or floor")
    return jinja_filters.do_round(value, precision, method)  # type: ignore[arg-type]


_NUMBER_TEXT_CHARS = 100


def _int(value: Any, default: int = 0, base: int = 10) -> int:
    if isinstance(value, bool | int):
        return int(value)
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else default
    text = _text(value).strip()
    if len(text) > _NUMBER_TEXT_CHARS:
        return default
    try:
        return int(text, base)
    except (TypeError, ValueError):
        try:
            number = float(text)
        except ValueError:
            return default
        return int(number) if math.isfinite(number) else default


def _float(value: Any, default: float = 0.0) -> float:
    if isinstance(value, bool | int | float):
        number = float(value) if abs(value) <= 1e308 else default
    else:
        text = _text(value).strip()
        try:
            number = float(text) if len(text) <= _NUMBER_TEXT_CHARS else default
        except ValueError:
            number = default
    return number if math.isfinite(number) else default


def _measured(func: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that counts what it produces against the render's budget. Taking the context
    also keeps Jinja from running it at compile time on literal arguments."""

    @pass_context
    def run(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        return _spend(context, func(value, *args, **kwargs))

    run.__name__ = func.__name__
    return run


def _default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    return jinja_filters.do_default(value, default_value, boolean)


def _truncate(
    value: Any, length: int = 255, killwords: bool = False, end: str = "...", leeway: Any = None
) -> str:
    return jinja_filters.do_truncate(_ENV, _text(value), length, killwords, end, leeway)


FILTERS: dict[str, Callable[..., Any]] = {
    "default": _measured(_default),
    "d": _measured(_default),
    "upper": _measured(lambda value: _text(value).upper()),
    "lower": _measured(lambda value: _text(value).lower()),
    "title": _measured(lambda value: jinja_filters.do_title(_text(value))),
    "capitalize": _measured(lambda value: jinja_filters.do_capitalize(_text(value))),
    "trim": _measured(lambda value, chars=None: _text(value).strip(chars)),
    "truncate": _measured(_truncate),
    "replace": _replace_filter,
    "round": _measured(_round),
    "int": _measured(_int),
    "float": _measured(_float),
    "length": _measured(len),
    "count": _measured(len),
    "string": _measured(_text),
    "e": _measured(lambda value: str(escape(value))),
    "escape": _measured(lambda value: str(escape(value))),
    "urlencode": _measured(jinja_filters.do_urlencode),
}
"""The filters a template may use (`{{ record.firstname | default('there') | title }}`)."""

TESTS: dict[str, Callable[..., bool]] = {
    "defined": jinja_tests.test_defined,
    "undefined": jinja_tests.test_undefined,
    "none": jinja_tests.test_none,
    "number": jinja_tests.test_number,
    "string": jinja_tests.test_string,
    "boolean": jinja_tests.test_boolean,
}
"""The tests a template may use (`{% if record.phone is defined %}`)."""


_ENV = _Sandbox(undefined=_Missing, autoescape=False, keep_trailing_newline=True)
# No globals (range, cycler, namespace, …): a template reads the three namespaces and nothing else.
_ENV.globals.clear()
_ENV.filters = dict(FILTERS)
_ENV.tests = dict(TESTS)


# ---------------------------------------------------------------------------------- checking

_ARITHMETIC = {
    nodes.Add: "+",
    nodes.Sub: "-",
    nodes.Mul: "*",
    nodes.Div: "/",
    nodes.FloorDiv: "//",
    nodes.Mod: "%",
    nodes.Pow: "**",
    nodes.Neg: "-",
    nodes.Pos: "+",
}
_STATEMENTS = {
    nodes.For: "for",
    nodes.Macro: "macro",
    nodes.CallBlock: "call",
    nodes.FilterBlock: "filter",
    nodes.With: "with",
    nodes.Assign: "set",
    nodes.AssignBlock: "set",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from … import",
    nodes.Extends: "extends",
    nodes.Block: "block",
    nodes.ScopedEvalContextModifier: "autoescape",
    nodes.EvalContextModifier: "autoescape",
}
_ALLOWED = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.If,
    nodes.CondExpr,
    nodes.And,
    nodes.Or,
    nodes.Not,
    nodes.Compare,
    nodes.Operand,
    nodes.Concat,
    nodes.List,
    nodes.Tuple,
    nodes.Keyword,
)


def check_template(source: str, *, strict: bool = True) -> None:
    """Raise TemplateProblem when the template does not parse or reads a name other than
    record, workflow and enrollment; with `strict` (every new definition), also when it uses
    anything beyond what the module docstring lists."""
    parsed = _parse(source)
    problem = _refusal(parsed) if strict else _unknown_name(parsed)
    if problem is not None:
        message, line = problem
        raise TemplateProblem(message + _line_note(source, line))


def _parse(source: str) -> nodes.Template:
    try:
        return _ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(
            f"template syntax error: {exc.message}" + _line_note(source, exc.lineno)
        ) from None
    except RecursionError:
        raise TemplateProblem("template syntax error: nested too deeply") from None
    except ValueError:  # the lexer's int() of a literal of over 4,300 digits
        raise TemplateProblem("template syntax error: a number is too long") from None
    except Exception as exc:
        raise TemplateProblem(f"template syntax error: {exc}") from None


def _line_note(source: str, line: int | None) -> str:
    return f" (line {line} of the template)" if "\n" in source.strip() and line else ""


def _walk(root: nodes.Node) -> Iterator[nodes.Node]:
    """Every node, depth first in source order, without recursion (a template may nest as deep
    as the parser allows)."""
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(list(node.iter_child_nodes())))


def _unknown_name(parsed: nodes.Template) -> tuple[str, int] | None:
    read: dict[str, int] = {}
    bound: set[str] = set()
    for node in _walk(parsed):
        if isinstance(node, nodes.Name):
            if node.ctx == "load":
                read.setdefault(node.name, node.lineno)
            else:
                bound.add(node.name)
    unknown = sorted(set(read) - bound - ALLOWED_NAMES)
    if not unknown:
        return None
    return _unknown_message(unknown), read[unknown[0]]


def _unknown_message(names: list[str]) -> str:
    return f"template reads {', '.join(names)}: only record, workflow and enrollment exist"


def _refusal(parsed: nodes.Template) -> tuple[str, int] | None:
    """The first construct the template may not use, with its line; None if it is allowed."""
    stack: list[tuple[nodes.Node, int]] = [(parsed, 0)]
    while stack:
        node, depth = stack.pop()
        message = _node_refusal(node)
        if message is None and depth > MAX_TEMPLATE_DEPTH:
            message = f"template: expressions nest more than {MAX_TEMPLATE_DEPTH} deep"
        if message is not None:
            return message, node.lineno
        if isinstance(node, nodes.Getattr | nodes.Getitem):
            continue  # checked whole: a namespace and a constant name
        nested = depth + 1 if isinstance(node, nodes.Expr) else depth
        stack.extend((child, nested) for child in reversed(list(node.iter_child_nodes())))
    return None


def _node_refusal(node: nodes.Node) -> str | None:
    if isinstance(node, _ALLOWED):
        return None
    if isinstance(node, nodes.Const):
        return None
    if isinstance(node, nodes.Neg | nodes.Pos) and _is_number(node.node):
        return None  # a signed literal, e.g. `> -5`
    if isinstance(node, nodes.Filter):
        return _call_refusal(node, "filter", FILTERS)
    if isinstance(node, nodes.Test):
        return _call_refusal(node, "test", TESTS)
    if isinstance(node, nodes.Getattr):
        return _read_refusal(node.node, node.attr)
    if isinstance(node, nodes.Getitem):
        if isinstance(node.arg, nodes.Slice):
            return "template: slices are not allowed (use the truncate filter)"
        if not isinstance(node.arg, nodes.Const) or not isinstance(node.arg.value, str):
            return "template: [...] takes a quoted property name, e.g. record['first name']"
        return _read_refusal(node.node, node.arg.value)
    if isinstance(node, nodes.Name):
        if node.name not in ALLOWED_NAMES:
            return _unknown_message([node.name])
        return f"template: {node.name} cannot be used alone: read {_READABLE}"
    for expression, operator in _ARITHMETIC.items():
        if isinstance(node, expression):
            return f"template: arithmetic ('{operator}') is not allowed"
    for statement, tag in _STATEMENTS.items():
        if isinstance(node, statement):
            return f"template: {{% {tag} %}} is not allowed: only {{% if %}}, elif and else"
    if isinstance(node, nodes.Call):
        return "template: calls are not allowed (a filter is written `value | name`)"
    if isinstance(node, nodes.Slice):
        return "template: slices are not allowed (use the truncate filter)"
    if isinstance(node, nodes.Dict):
        return "template: mapping literals are not allowed"
    return f"template: {type(node).__name__} is not allowed"


def _is_number(node: nodes.Node) -> bool:
    return (
        isinstance(node, nodes.Const)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    )


def _call_refusal(
    node: nodes.Filter | nodes.Test, what: str, allowed: Mapping[str, Any]
) -> str | None:
    if node.name not in allowed:
        return f"template: {what} '{node.name}' is not allowed; use one of: {', '.join(allowed)}"
    if node.dyn_args is not None or node.dyn_kwargs is not None:
        return f"template: *args and **kwargs are not allowed in a {what}"
    if isinstance(node, nodes.Filter) and node.node is None:
        return "template: {% filter %} is not allowed: only {% if %}, elif and else"
    return None


def _read_refusal(target: nodes.Node, field: str) -> str | None:
    if not isinstance(target, nodes.Name) or target.name not in ALLOWED_NAMES:
        if isinstance(target, nodes.Name):
            return _unknown_message([target.name])
        return f"template: {field!r} cannot be read: only {_READABLE}"
    fields = _FIELDS[target.name]
    if fields is not None and field not in fields:
        choices = " or ".join(f"{target.name}.{name}" for name in sorted(fields))
        return f"template: {target.name}.{field} does not exist: use {choices}"
    return None


# --------------------------------------------------------------------------------- rendering


@lru_cache(maxsize=512)
def _compiled(source: str) -> Template:
    check_template(source, strict=True)
    return _ENV.from_string(source)


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
        template = _compiled(source)
    except TemplateProblem:
        raise
    except Exception as exc:  # compiling: Jinja may refuse what it parsed (TemplateError)
        raise TemplateProblem(f"template error: {exc}") from None
    budget = _Budget()
    try:
        text = template.render(
            record=_Namespace(properties, budget),
            workflow=_Namespace({"key": workflow_key, "name": workflow_name}, budget),
            enrollment=_Namespace({"id": enrollment_id}, budget),
            **{_BUDGET: budget},
        )
    except TemplateProblem:
        raise
    except SecurityError as exc:
        raise TemplateProblem(f"template refused: {exc}") from None
    except Exception as exc:
        # Whatever a value makes a template do (compare text with a number, round a word) is a
        # fact about this record: retrying cannot change it, so the action fails for good.
        raise TemplateProblem(f"template error: {exc}") from None
    if len(text) > MAX_RENDERED_CHARS:
        raise TemplateProblem(
            f"the rendered text has {len(text):,} characters; at most {MAX_RENDERED_CHARS:,}"
        )
    return text
