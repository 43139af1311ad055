"""Reading definitions from YAML or JSON, with every problem located by path and line.

YAML goes through ruamel.yaml's round-trip loader, whose nodes remember their lines; JSON is
parsed by the json module (the authority on JSON syntax) and, for line numbers only, by
ruamel.yaml too (JSON is YAML). Validation errors become `Problem`s whose path is written as
the user wrote the document (`actions[2].next`), without the union tags pydantic adds.

Nothing a file holds can hang or exhaust the loader (`crmflow.limits`): the file's size is
checked before it is read, the nesting depth and the number of values (YAML aliases expanded,
so a billion-laughs file is refused while it is composed) before anything is built, and every
value before the models see it (NaN, infinities and huge numbers, text too long, NUL
characters, lone surrogates, YAML types JSON does not have).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import types
import typing
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.composer import Composer
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, StreamMark, YAMLError
from ruamel.yaml.events import AliasEvent, MappingStartEvent, SequenceStartEvent
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.scalarbool import ScalarBoolean

from crmflow.limits import (
    MAX_DOCUMENT_DEPTH,
    MAX_DOCUMENT_VALUES,
    MAX_FILE_BYTES,
    MAX_NUMBER_CHARS,
    MAX_TEXT_CHARS,
)

from ._actions import Action
from ._base import NEW_DEFINITION, DefinitionProblems, Loc, render_path
from ._models import Enrollment, Settings, WorkflowDefinition, check_definition
from ._types import number_problem

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
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        return _one_line(text)


def _one_line(text: str) -> str:
    """Characters that would break or hide a line (newlines, U+2028, NEL, controls) escaped:
    a problem is always one printable line, whatever text the document holds."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else json.dumps(c)[1:-1] for c in text)


class DefinitionError(ValueError):
    """A definition that cannot be loaded; `problems` lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(map(str, problems)))


def load_definition_file(path: str | os.PathLike[str]) -> WorkflowDefinition:
    """Load a `.yaml`/`.yml` or `.json` definition. Raises DefinitionError."""
    return load_definition_text(read_definition_file(path), source_name=str(path))


def read_definition_file(path: str | os.PathLike[str]) -> str:
    """The text of a definition file, at most MAX_FILE_BYTES (no more is read). Raises
    DefinitionError."""
    try:
        with Path(path).open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise DefinitionError([Problem(str(path), "", None, f"cannot read: {reason}")]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise DefinitionError([Problem(str(path), "", None, _TOO_BIG)])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DefinitionError([Problem(str(path), "", None, f"cannot read: {exc}")]) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")  # as text mode reads it


_TOO_BIG = f"the file is larger than {MAX_FILE_BYTES:,} bytes (1 MiB)"


def load_definition_text(
    text: str, *, source_name: str = "<definition>", fmt: Format | None = None
) -> WorkflowDefinition:
    """Load a definition from text; `fmt` defaults from the name's suffix, else from the text
    (a leading `{` means JSON). Raises DefinitionError."""
    if len(text) > MAX_FILE_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise DefinitionError([Problem(source_name, "", None, _TOO_BIG)])
    fmt = fmt or _guess_format(text, source_name)
    data, tree = _parse_json(text, source_name) if fmt == "json" else _parse_yaml(text, source_name)
    return _validate(data, tree, source_name)


def load_definition_data(data: Any, *, source_name: str = "<definition>") -> WorkflowDefinition:
    """Validate a definition given as JSON data (a version as the store gives it back) by the
    rules of a new definition. Raises DefinitionError; its problems have no line."""
    return _validate(data, None, source_name)


def _validate(data: Any, tree: Any, source_name: str) -> WorkflowDefinition:
    data, found = _checked_values(data)
    if found:
        problems = [Problem(source_name, render_path(loc), _line(tree, loc), m) for loc, m in found]
        raise DefinitionError(problems)
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


class _Unreadable:
    """A number the document writes but no definition can hold (NaN, an infinity, one beyond
    ±1e308 or written too long): kept in place so that it is reported at its path."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def problem(self) -> str:
        text = self.text if len(self.text) <= 40 else self.text[:20] + "…"
        if self.text.strip("+-. ").lower() in ("nan", "infinity", "inf"):
            return f"{text} is not a finite number"
        if len(self.text) > MAX_NUMBER_CHARS:
            return f"a number written with {len(self.text):,} characters is out of range"
        return f"{text} is out of range: numbers lie within ±1e308"


class _Constructor(RoundTripConstructor):
    """Keeps timestamps as their text: definitions hold ISO dates as strings, as JSON does.
    Numbers that cannot be held become `_Unreadable` instead of an error or a NaN."""

    def construct_yaml_int(self, node: Any) -> Any:
        if len(str(node.value)) > MAX_NUMBER_CHARS:
            return _Unreadable(str(node.value))  # int() of it could take very long
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node: Any) -> Any:
        if len(str(node.value)) > MAX_NUMBER_CHARS:
            return _Unreadable(str(node.value))
        value = super().construct_yaml_float(node)
        return value if number_problem(float(value)) is None else _Unreadable(str(node.value))


_Constructor.add_constructor(
    "tag:yaml.org,2002:timestamp", lambda self, node: self.construct_scalar(node)
)
_Constructor.add_constructor("tag:yaml.org,2002:int", _Constructor.construct_yaml_int)
_Constructor.add_constructor("tag:yaml.org,2002:float", _Constructor.construct_yaml_float)


class _ShapeRefused(Exception):
    def __init__(self, mark: StreamMark | None, message: str) -> None:
        super().__init__(message)
        self.line = mark.line + 1 if mark is not None else None
        self.message = message


class _Composer(Composer):
    """Measures the document while it is composed, aliases expanded, and stops before anything
    is built: deeper than MAX_DOCUMENT_DEPTH, more than MAX_DOCUMENT_VALUES values (a billion
    laughs is a few lines of aliases), or an alias inside its own anchor."""

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self._measures: dict[int, tuple[int, int]] = {}  # id(node) -> (values, height)
        self._open = 0  # mappings and lists being composed

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        if isinstance(event, AliasEvent):
            target = self.anchors.get(event.anchor)
            if isinstance(target, MappingNode | SequenceNode) and target.end_mark is None:
                message = f"alias *{event.anchor} is inside its own anchor: recursion"
                raise _ShapeRefused(event.start_mark, message)
            node = super().compose_node(parent, index)
            if self._open + self._measures[id(node)][1] > MAX_DOCUMENT_DEPTH:
                raise _ShapeRefused(event.start_mark, _TOO_DEEP)
            return node
        collection = isinstance(event, MappingStartEvent | SequenceStartEvent)
        if collection:
            self._open += 1
            if self._open > MAX_DOCUMENT_DEPTH:
                raise _ShapeRefused(event.start_mark, _TOO_DEEP)
        node = super().compose_node(parent, index)
        if collection:
            self._open -= 1
        values, height = self._measure(node)
        if values > MAX_DOCUMENT_VALUES:
            raise _ShapeRefused(node.start_mark, _TOO_MANY)
        self._measures[id(node)] = (values, height)
        return node

    def _measure(self, node: Node) -> tuple[int, int]:
        if isinstance(node, ScalarNode):
            return 1, 0
        if isinstance(node, MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = list(node.value)
        measures = [self._measures[id(child)] for child in children]
        return 1 + sum(m[0] for m in measures), 1 + max((m[1] for m in measures), default=0)


_TOO_DEEP = f"mappings and lists nest deeper than {MAX_DOCUMENT_DEPTH} levels"
_TOO_MANY = f"the document holds more than {MAX_DOCUMENT_VALUES:,} values (YAML aliases expanded)"


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.Constructor = _Constructor
    yaml.Composer = _Composer
    return yaml


def _parse_yaml(text: str, file: str) -> tuple[Any, Any]:
    yaml = _yaml()
    try:
        node = yaml.compose(text)  # one pass: composed, measured, then built from the node
        duplicates = list(_key_problems(node, ()))
        if duplicates:
            raise DefinitionError([Problem(file, *dup) for dup in duplicates])
        tree = _construct(yaml, node, file)
    except _ShapeRefused as exc:
        raise DefinitionError([Problem(file, "", exc.line, exc.message)]) from None
    except MarkedYAMLError as exc:
        raise DefinitionError([_syntax_problem(exc, file)]) from None
    except YAMLError as exc:  # e.g. a ReaderError: a character YAML does not allow
        position = getattr(exc, "position", None)
        line = text.count("\n", 0, position) + 1 if isinstance(position, int) else None
        message = f"YAML error: {str(exc).strip().splitlines()[0]}"
        raise DefinitionError([Problem(file, "", line, message)]) from None
    return tree, tree


def _syntax_problem(exc: MarkedYAMLError, file: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else None
    message = f"YAML syntax error: {exc.problem or exc.context or 'invalid YAML'}"
    if exc.problem and exc.context and exc.context_mark and exc.context_mark.line + 1 != line:
        message += f" ({exc.context} started on line {exc.context_mark.line + 1})"
    return Problem(file, "", line, message)


def _construct(yaml: YAML, node: Node | None, file: str) -> Any:
    if node is None:
        return None
    try:
        return yaml.constructor.construct_document(node)
    except YAMLError:
        raise
    except Exception as exc:  # a value its tag cannot build, e.g. `!!int abc`
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        problem = Problem(file, "", None, f"YAML value cannot be read: {message}")
        raise DefinitionError([problem]) from None


def _key_problems(node: Node | None, loc: Loc) -> Iterator[tuple[str, int, str]]:
    """(path, line, message) of every key repeated in a mapping of the composed document, and
    of every key that is not a scalar (a definition's keys are names)."""
    if isinstance(node, MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                kind = "mapping" if isinstance(key_node, MappingNode) else "list"
                yield render_path(loc), line, f"a key must be text, not a {kind}"
                continue
            key = str(key_node.value)
            if key in first:
                yield render_path((*loc, key)), line, f"duplicate key (first on line {first[key]})"
            else:
                first[key] = line
            yield from _key_problems(value_node, (*loc, key))
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            yield from _key_problems(item, (*loc, index))


# A JSON string, or a bracket outside strings: enough to measure nesting before json.loads
# (whose C parser would otherwise recurse until RecursionError).
_JSON_NESTING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def _json_too_deep(text: str) -> int | None:
    """The line where JSON text nests deeper than MAX_DOCUMENT_DEPTH, if it does."""
    depth = 0
    for match in _JSON_NESTING.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > MAX_DOCUMENT_DEPTH:
                return text.count("\n", 0, match.start()) + 1
        elif token in "]}":
            depth -= 1
    return None


def _json_int(text: str) -> Any:
    return _Unreadable(text) if len(text) > MAX_NUMBER_CHARS else int(text)


def _json_float(text: str) -> Any:
    if len(text) > MAX_NUMBER_CHARS:
        return _Unreadable(text)
    value = float(text)
    return value if number_problem(value) is None else _Unreadable(text)


def _parse_json(text: str, file: str) -> tuple[Any, Any]:
    duplicated = False

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal duplicated
        duplicated = duplicated or len({k for k, _ in items}) != len(items)
        return dict(items)

    deep = _json_too_deep(text)
    if deep is not None:
        raise DefinitionError([Problem(file, "", deep, _TOO_DEEP)])
    try:
        data = json.loads(
            text,
            object_pairs_hook=pairs,
            parse_int=_json_int,
            parse_float=_json_float,
            parse_constant=_Unreadable,
        )
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


# ------------------------------------------------------------------------------- values


def _checked_values(value: Any) -> tuple[Any, list[tuple[Loc, str]]]:
    """The document as plain JSON-like values (ruamel's round-trip types, CommentedMap,
    ScalarFloat, …, made plain; aliases become copies), and every value no definition can
    hold, with its path."""
    problems: list[tuple[Loc, str]] = []
    plain = _plain(value, (), problems)
    return plain, problems


def _plain(value: Any, loc: Loc, problems: list[tuple[Loc, str]]) -> Any:
    if len(loc) > 2 * MAX_DOCUMENT_DEPTH:  # data not from a file (the store): never recurse far
        problems.append((loc, _TOO_DEEP))
        return None
    if isinstance(value, dict):
        result: dict[Any, Any] = {}
        for key, item in value.items():
            plain_key = _plain_key(key, loc, problems)
            result[plain_key] = _plain(item, (*loc, str(plain_key)), problems)
        return result
    if isinstance(value, list):
        return [_plain(item, (*loc, index), problems) for index, item in enumerate(value)]
    if isinstance(value, TaggedScalar) and str(value.tag) == _STR_TAG:
        value = str(value.value)  # `!!str 10`: the round-trip loader keeps the tag
    problem = _value_problem(value)
    if problem is not None:
        problems.append((loc, problem))
        return None
    if isinstance(value, bool | ScalarBoolean):
        return bool(value)
    for plain in (str, int, float):
        if isinstance(value, plain):
            return plain(value)
    return value


_STR_TAG = "tag:yaml.org,2002:str"


def _plain_key(key: Any, loc: Loc, problems: list[tuple[Loc, str]]) -> Any:
    if isinstance(key, _Unreadable):
        problems.append(((*loc, key.text[:40]), f"key: {key.problem()}"))
        return key.text
    if key is None or isinstance(key, str | int | float | bool | ScalarBoolean):
        problem = None if key is None else _value_problem(key)
        if problem is None:
            return _plain(key, loc, problems)
        problems.append(((*loc, str(key)[:40]), f"key: {problem}"))
        return str(key)
    problems.append((loc, f"a key must be text, not {_yaml_kind(key)}"))
    return repr(key)


def _value_problem(value: Any) -> str | None:
    if isinstance(value, _Unreadable):
        return value.problem()
    if value is None or isinstance(value, bool | ScalarBoolean):
        return None
    if isinstance(value, str):
        if len(value) > MAX_TEXT_CHARS:
            return f"text of {len(value):,} characters; at most {MAX_TEXT_CHARS:,}"
        if "\x00" in value:
            return "text may not contain a NUL character (\\u0000)"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "text may not contain a lone surrogate (\\ud800-\\udfff)"
        return None
    if isinstance(value, int | float):
        return number_problem(value)
    return (
        f"{_yaml_kind(value)} is not a definition value:"
        " use text, numbers, true/false, null, lists and mappings"
    )


def _yaml_kind(value: Any) -> str:
    if isinstance(value, TaggedScalar):
        return f"a value tagged {value.tag}"
    if isinstance(value, bytes):
        return "binary data (!!binary)"
    if isinstance(value, AbstractSet):
        return "a set (!!set)"
    if isinstance(value, tuple | list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return f"a {type(value).__name__}"


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
