"""Reading definitions from YAML or JSON, with every problem located by path and line.

YAML goes through ruamel.yaml's round-trip loader, whose nodes remember their lines; JSON is
parsed by the json module (the authority on JSON syntax) and, for line numbers only, by
ruamel.yaml too (JSON is YAML). Validation errors become `Problem`s whose path is written as
the user wrote the document (`actions[2].next`), without the union tags pydantic adds.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

from ._actions import Action
from ._base import NEW_DEFINITION, DefinitionProblems, Loc, render_path
from ._models import Enrollment, Settings, WorkflowDefinition, check_definition

Format = Literal["yaml", "json"]


@dataclass(frozen=True)
class Problem:
    """One problem of a definition: where it is and what is wrong."""

    file: str
    path: str
    """Location in the document, e.g. `actions[2].next`; empty for the document itself."""
    line: int | None
    """1-based line of the innermost node of `path` that exists in the file."""
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class DefinitionError(ValueError):
    """A definition that cannot be loaded; `problems` lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(map(str, problems)))


def load_definition_file(path: str | os.PathLike[str]) -> WorkflowDefinition:
    """Load a `.yaml`/`.yml` or `.json` definition. Raises DefinitionError."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DefinitionError([Problem(str(path), "", None, f"cannot read: {reason}")]) from None
    return load_definition_text(text, source_name=str(path))


def load_definition_text(
    text: str, *, source_name: str = "<definition>", fmt: Format | None = None
) -> WorkflowDefinition:
    """Load a definition from text; `fmt` defaults from the name's suffix, else from the text
    (a leading `{` means JSON). Raises DefinitionError."""
    fmt = fmt or _guess_format(text, source_name)
    data, tree = _parse_json(text, source_name) if fmt == "json" else _parse_yaml(text, source_name)
    if not isinstance(data, dict):
        got = "an empty document" if data is None else f"a {_kind(data)}"
        message = f"expected a mapping (key, name, enrollment, actions, ...), got {got}"
        raise DefinitionError([Problem(source_name, "", 1, message)])
    try:
        return WorkflowDefinition.model_validate(data, context=NEW_DEFINITION)
    except ValidationError as exc:
        raise DefinitionError(_problems(exc, data, tree, source_name)) from None


def _guess_format(text: str, source_name: str) -> Format:
    suffix = Path(source_name).suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in (".yaml", ".yml"):
        return "yaml"
    return "json" if text.lstrip().startswith("{") else "yaml"


# -------------------------------------------------------------------------------- parsing


class _Constructor(RoundTripConstructor):
    """Keeps timestamps as their text: definitions hold ISO dates as strings, as JSON does."""


_Constructor.add_constructor(
    "tag:yaml.org,2002:timestamp", lambda self, node: self.construct_scalar(node)
)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.Constructor = _Constructor
    return yaml


def _parse_yaml(text: str, file: str) -> tuple[Any, Any]:
    yaml = _yaml()
    try:
        node = yaml.compose(text)
        duplicates = list(_duplicate_keys(node, ()))
        if duplicates:
            raise DefinitionError([Problem(file, *dup) for dup in duplicates])
        tree = yaml.load(text)
    except MarkedYAMLError as exc:
        raise DefinitionError([_syntax_problem(exc, file)]) from None
    except YAMLError as exc:
        raise DefinitionError([Problem(file, "", None, f"YAML error: {exc}")]) from None
    return _plain(tree), tree


def _syntax_problem(exc: MarkedYAMLError, file: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else None
    message = f"YAML syntax error: {exc.problem or exc.context or 'invalid YAML'}"
    if exc.problem and exc.context and exc.context_mark and exc.context_mark.line + 1 != line:
        message += f" ({exc.context} started on line {exc.context_mark.line + 1})"
    return Problem(file, "", line, message)


def _duplicate_keys(node: Node | None, loc: Loc) -> Iterator[tuple[str, int, str]]:
    """(path, line, message) of every key repeated in a mapping of the composed document."""
    if isinstance(node, MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in first:
                yield render_path((*loc, key)), line, f"duplicate key (first on line {first[key]})"
            else:
                first[key] = line
            yield from _duplicate_keys(value_node, (*loc, key))
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*loc, index))


def _parse_json(text: str, file: str) -> tuple[Any, Any]:
    duplicated = False

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal duplicated
        duplicated = duplicated or len({k for k, _ in items}) != len(items)
        return dict(items)

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        message = f"JSON syntax error: {exc.msg} (column {exc.colno})"
        raise DefinitionError([Problem(file, "", exc.lineno, message)]) from None
    try:
        _, tree = _parse_yaml(text, file)  # only for line numbers: best effort
    except DefinitionError as exc:
        if duplicated and all("duplicate key" in p.message for p in exc.problems):
            raise
        tree = None
    if duplicated:
        raise DefinitionError([Problem(file, "", None, "duplicate key in a JSON object")])
    return data, tree


def _plain(value: Any) -> Any:
    """ruamel's round-trip types (CommentedMap, ScalarFloat, …) as plain JSON-like values."""
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    for plain in (str, int, float):
        if isinstance(value, plain):
            return plain(value)
    return value


def _kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


# ------------------------------------------------------------------------------- problems


def _problems(exc: ValidationError, data: dict[str, Any], tree: Any, file: str) -> list[Problem]:
    found: list[tuple[Loc, str]] = []
    graph_checked = False
    for error in exc.errors():
        loc, parent = _document_loc(error["loc"])
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, DefinitionProblems):
            graph_checked = graph_checked or not loc
            found += [((*loc, *sub), message) for sub, message in cause.problems]
        else:
            if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
                loc = (*loc, _unquote(error["ctx"]["discriminator"]))  # at the `type:` line
            found.append((loc, _message(error, loc, parent)))
    if not graph_checked:
        found += _partial_checks(data)
    problems: list[Problem] = []
    for loc, message in dict.fromkeys(found):  # de-duplicated, in order
        problems.append(Problem(file, render_path(loc), _line(tree, loc), message))
    return sorted(problems, key=lambda p: (p.line is None, p.line or 0))


def _partial_checks(data: dict[str, Any]) -> list[tuple[Loc, str]]:
    """The cross-part checks, on the parts that are valid (the model validator did not run)."""
    key = data.get("key") if isinstance(data.get("key"), str) else None
    enrollment = _valid(Enrollment, data.get("enrollment"))
    settings = _valid(Settings, data.get("settings", {}))
    raw_actions = data.get("actions")
    actions: list[Any] = []
    if isinstance(raw_actions, list):
        for raw in raw_actions:
            raw_id = raw.get("id") if isinstance(raw, dict) else None
            action = _valid(Action, raw)
            actions.append(action if action is not None else _str_or_none(raw_id))
    return check_definition(key, enrollment, actions, settings)


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _valid(tp: Any, value: Any) -> Any:
    adapter = _ADAPTERS.get(tp) or _ADAPTERS.setdefault(tp, TypeAdapter(tp))
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _line(tree: Any, loc: Loc) -> int | None:
    """1-based line of the innermost node on `loc` that exists in the parsed document."""
    if not isinstance(tree, CommentedMap | CommentedSeq):
        return None
    line = tree.lc.line + 1
    node: Any = tree
    for seg in loc:
        if isinstance(node, CommentedMap):
            key = next((k for k in node if k == seg or str(k) == str(seg)), _MISSING)
            if key is _MISSING:
                break
            line = node.lc.key(key)[0] + 1
            node = node[key]
        elif isinstance(node, CommentedSeq) and isinstance(seg, int) and 0 <= seg < len(node):
            line = node.lc.item(seg)[0] + 1
            node = node[seg]
        else:
            break
    return line


_MISSING = object()


# ------------------------------------------------------------- pydantic locs and messages


def _document_loc(loc: tuple[int | str, ...]) -> tuple[Loc, type[BaseModel] | None]:
    """Drop the union tags pydantic puts in error locations, following the model types:
    `('actions', 2, 'delay', 'duration')` -> `('actions', 2, 'duration')`. Also returns the
    model owning the last segment (to suggest field names)."""
    out: list[str | int] = []
    tp: Any = WorkflowDefinition
    owner: type[BaseModel] | None = None
    for seg in loc:
        tp = _strip(tp)
        if _is_union(tp):
            tp = _union_member(tp, seg)  # seg is a tag or a member label: not in the document
            continue
        owner = None
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            owner = tp
            field = _field(tp, seg)
            tp = field.annotation if field is not None else Any
        elif typing.get_origin(tp) in (list, tuple):
            tp = (typing.get_args(tp) or (Any,))[0]
        elif typing.get_origin(tp) is dict:
            tp = (typing.get_args(tp) or (Any, Any))[1]
        else:
            tp = Any
        out.append(seg)
    return tuple(out), owner


def _strip(tp: Any) -> Any:
    """Annotated[X, ...] -> X and X | None -> X, repeatedly."""
    while True:
        if typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif _is_union(tp) and type(None) in typing.get_args(tp):
            rest = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(rest) != 1:
                return typing.Union[tuple(rest)]  # noqa: UP007
            tp = rest[0]
        else:
            return tp


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _union_member(tp: Any, seg: str | int) -> Any:
    for member in typing.get_args(tp):
        if typing.get_origin(member) is typing.Annotated:
            inner, *metadata = typing.get_args(member)
            if any(getattr(m, "tag", None) == seg for m in metadata):
                return inner
            member = inner
        if isinstance(member, type) and issubclass(member, BaseModel):
            for field in member.model_fields.values():
                if typing.get_origin(field.annotation) is Literal and seg in typing.get_args(
                    field.annotation
                ):
                    return member
    return Any


def _field(model: type[BaseModel], seg: str | int) -> FieldInfo | None:
    for name, field in model.model_fields.items():
        if seg in (name, field.alias):
            return field
    return None


def _field_names(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}
_QUOTED = re.compile(r"^'(.*)'$")


def _unquote(text: Any) -> str:
    return _QUOTED.sub(r"\1", str(text).strip())


def _message(error: Any, loc: Loc, owner: type[BaseModel] | None) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind == "extra_forbidden":
        name = str(loc[-1]) if loc else "?"
        close = difflib.get_close_matches(name, _field_names(owner), n=1) if owner else []
        return f"unknown field '{name}'" + (f"; did you mean '{close[0]}'?" if close else "")
    if kind == "union_tag_invalid":
        field = _unquote(ctx["discriminator"])
        tags = [_unquote(tag) for tag in str(ctx["expected_tags"]).split(",")]
        close = difflib.get_close_matches(str(ctx["tag"]), tags, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"expected one of: {', '.join(tags)}"
        return f"unknown {field} '{ctx['tag']}'; {hint}"
    if kind in ("missing", "union_tag_not_found"):
        return "required"
    if kind == "literal_error":
        return f"expected {ctx['expected']}, got {_describe(error.get('input'))}"
    if kind in ("too_short", "string_too_short"):
        return "must not be empty" if ctx.get("min_length") == 1 else str(error["msg"])
    if kind == "too_long":
        return f"at most {ctx['max_length']} items allowed, got {ctx.get('actual_length')}"
    if kind in _TYPE_NAMES:
        return f"expected {_TYPE_NAMES[kind]}, got {_describe(error.get('input'))}"
    return str(error["msg"])


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict | list):
        return f"a {'mapping' if isinstance(value, dict) else 'list'}"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:39] + "…"
