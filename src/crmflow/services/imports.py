"""Reading the files of `crmflow records import`: CSV and JSONL, every row checked before
anything is written, every problem located (`FILE:LINE: ...`).

The rules (README, "Records, lists, events and imports"): UTF-8 text (one UTF-8 BOM at the start
is skipped, as Excel writes one; no NUL byte); at least one record. CSV: a header line whose
cells are distinct property names, one of them `id`; at most 1,000 columns; no row with more
cells than the header; quotes closed; empty cells are absent properties, every other cell is
text. JSONL (`.jsonl`, `.ndjson`, `.json`): one JSON object per line, blank lines skipped, no
key twice, an `id` that is a string (a JSON integer is taken as its decimal text: `2` is the id
"2"; `true`, `1.5` or `null` are refused), values that are strings, numbers or booleans (null:
absent). Ids, property names and values follow `crmflow.definitions` rules.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crmflow.definitions import (
    TEXT_MAX_LENGTH,
    InvalidInput,
    Unrepresentable,
    check_property_name,
    check_record_id,
    check_record_size,
    check_value,
    parse_json,
    shown,
)

MAX_COLUMNS = 1000
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")

Row = tuple[str, dict[str, Any]]


class ImportProblem(ValueError):
    """A problem of an import file, located: `FILE:LINE: message`."""


def read_records(path: Path) -> list[Row]:
    """Every (id, properties) of a CSV or JSONL file, or the first problem found."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", *JSONL_SUFFIXES):
        raise ImportProblem(f"{path}: unknown format: use a .csv or .jsonl file")
    text = _text(path, path.read_bytes())
    rows = list(_csv_rows(path, text) if suffix == ".csv" else _jsonl_rows(path, text))
    if not rows:
        raise ImportProblem(f"{path}: no records to import (the file is empty)")
    return rows


def _text(path: Path, data: bytes) -> str:
    """The file as text: UTF-8, with one leading BOM skipped; a NUL byte means a binary file."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ImportProblem(f"{path}:1: UTF-16 text: save the file as UTF-8")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    nul = data.find(b"\x00")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if 0 <= nul < exc.start:
            raise _binary(path, data, nul) from None
        line = data.count(b"\n", 0, exc.start) + 1
        raise ImportProblem(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}): save the file as UTF-8"
        ) from None
    if nul >= 0:
        raise _binary(path, data, nul)
    return text


def _binary(path: Path, data: bytes, offset: int) -> ImportProblem:
    line = data.count(b"\n", 0, offset) + 1
    return ImportProblem(f"{path}:{line}: a NUL byte: this is not a text file")


def _located(path: Path, line: int, exc: Exception) -> ImportProblem:
    return ImportProblem(f"{path}:{line}: {exc}")


def _properties(path: Path, line: int, values: dict[str, Any]) -> dict[str, Any]:
    """Property values of one row (nulls kept: they mean absent) and the row's size."""
    for name, value in values.items():
        try:
            check_value(value)
        except InvalidInput as exc:
            raise ImportProblem(f"{path}:{line}: property {shown(name)}: {exc}") from None
    try:
        check_record_size(values)
    except InvalidInput as exc:
        raise _located(path, line, exc) from None
    return values


# ---------------------------------------------------------------- CSV

_CSV_MESSAGES = {
    "unexpected end of data": "a quoted field is never closed (a missing '\"')",
    "',' expected after '\"'": "text after the closing '\"' of a quoted field "
    "(a '\"' inside a quoted field is written '\"\"')",
}


def _csv_message(exc: csv.Error) -> str:
    text = str(exc)
    if text.startswith("field larger than field limit"):
        return f"{text}: a cell holds at most {TEXT_MAX_LENGTH:,} characters"
    return _CSV_MESSAGES.get(text, text)


def _csv_lines(path: Path, text: str) -> Iterator[tuple[int, list[str]]]:
    """(first line, cells) of each row that has a non-blank cell."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ImportProblem(f"{path}:{start}: {_csv_message(exc)}") from None
        if any(cell.strip() for cell in cells):
            yield start, cells


def _header(path: Path, line: int, cells: list[str]) -> list[str]:
    if len(cells) > MAX_COLUMNS:
        raise ImportProblem(f"{path}:{line}: {len(cells):,} columns: at most {MAX_COLUMNS:,}")
    seen: dict[str, int] = {}
    for number, name in enumerate(cells, 1):
        if not name:
            raise ImportProblem(f"{path}:{line}: column {number} of the header has no name")
        if name in seen:
            raise ImportProblem(
                f"{path}:{line}: column {shown(name)} appears twice "
                f"(columns {seen[name]} and {number})"
            )
        seen[name] = number
        if name != "id":
            try:
                check_property_name(name)
            except InvalidInput as exc:
                raise ImportProblem(f"{path}:{line}: column {number}: {exc}") from None
    if "id" not in seen:
        near = [name for name in cells if name.strip().lower() == "id"]
        hint = f" (found {shown(near[0])}: the column must be named exactly 'id')" if near else ""
        raise ImportProblem(f"{path}:{line}: the header has no 'id' column{hint}")
    return cells


def _csv_rows(path: Path, text: str) -> Iterator[Row]:
    lines = _csv_lines(path, text)
    first = next(lines, None)
    if first is None:
        return
    header = _header(path, *first)
    for line, cells in lines:
        if len(cells) > len(header):
            raise ImportProblem(
                f"{path}:{line}: {len(cells)} cells, but the header has {len(header)} columns"
            )
        values = {name: cell for name, cell in zip(header, cells, strict=False) if cell != ""}
        record_id = values.pop("id", None)
        if record_id is None:
            raise ImportProblem(f"{path}:{line}: missing 'id'")
        try:
            check_record_id(record_id)
        except InvalidInput as exc:
            raise _located(path, line, exc) from None
        yield record_id, _properties(path, line, values)


# ---------------------------------------------------------------- JSONL


def _kind(value: Any) -> str:
    if isinstance(value, Unrepresentable):
        return "a number out of range"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def _json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= 40 else text[:40] + "…"


def _jsonl_id(path: Path, line: int, row: dict[str, Any]) -> str:
    if "id" not in row or row["id"] in (None, ""):
        raise ImportProblem(f"{path}:{line}: missing 'id'")
    value = row.pop("id")
    if isinstance(value, Unrepresentable):
        raise ImportProblem(f"{path}:{line}: 'id': {value.problem}")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # a numeric id as exported by many systems: its decimal text
    if not isinstance(value, str):
        raise ImportProblem(
            f"{path}:{line}: 'id' must be a string (or an integer), not {_kind(value)} "
            f"({_json(value)})"
        )
    try:
        return check_record_id(value)
    except InvalidInput as exc:
        raise _located(path, line, exc) from None


def _jsonl_rows(path: Path, text: str) -> Iterator[Row]:
    # Lines end at "\n" only: JSON text may hold U+2028 and other separators that str.splitlines
    # would break a line at.
    for line, content in enumerate(text.split("\n"), 1):
        if not content.strip():
            continue
        try:
            row = parse_json(content)
        except json.JSONDecodeError as exc:
            raise ImportProblem(
                f"{path}:{line}: invalid JSON ({exc.msg}, column {exc.colno})"
            ) from None
        except InvalidInput as exc:
            raise _located(path, line, exc) from None
        except RecursionError:
            raise ImportProblem(f"{path}:{line}: invalid JSON (nested too deeply)") from None
        if not isinstance(row, dict):
            raise ImportProblem(f"{path}:{line}: each line must be a JSON object, not {_kind(row)}")
        record_id = _jsonl_id(path, line, row)
        for name in row:
            try:
                check_property_name(name)
            except InvalidInput as exc:
                raise _located(path, line, exc) from None
        yield record_id, _properties(path, line, row)
