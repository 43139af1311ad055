"""The bad-input suite: every CLI entry point fed what a careless or hostile user could type or
import, each refused at the edge. For every input: exit 2; one line `crmflow: ...` naming the
argument or the file and line (a definition: each problem line names the file); no traceback;
nothing written to the store (a dump of every table before and after); and the store still
serves `crmflow workflows`, `crmflow review KEY` and a dispatcher pass afterwards (a real change
dispatched and enrolled on the time-skipping server, a worker running the enrollment).

One store per database (SQLite, and PostgreSQL when CRMFLOW_TEST_PG_URL is set) serves the
module, under a real criteria workflow that enrolls every contact, so a bad record that slipped
into the store would reach the dispatcher. A case that writes anyway is reported and the store
is put back as it was, so one mishandled input can neither hide nor cause another's failure.

The cases are data (`CASES`): a fixed list, plus property-based ones (hypothesis) generating
JSON values, record ids and CSV/JSONL files with one defect at a known line. The suite does not
import the rules it checks: the limits are spelled out here as the README states them.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pg_databases import fresh_database
from ruamel.yaml import YAML
from sqlalchemy import delete, insert, select
from temporal_servers import time_skipping_server
from temporalio.testing import WorkflowEnvironment

from crmflow import services
from crmflow.cli import cli
from crmflow.enrolling import EnrollmentStarter
from crmflow.services import App, Settings
from crmflow.store import Base, ChangeRepository, EnrollmentRepository
from crmflow.triggers import Dispatcher
from crmflow.worker import build_worker

EVERY_CONTACT = {"not": {"in_list": "nobody-is-in-this-list"}}
PROBE = {
    "key": "probe",
    "name": "Probe",
    "enrollment": {"trigger": "criteria", "criteria": EVERY_CONTACT},
    "actions": [{"id": "note", "type": "create_task", "title": "Probe {{ record.probe }}"}],
}
MANUAL = {
    "key": "manual",
    "name": "Manual",
    "enrollment": {"trigger": "manual"},
    "actions": [{"id": "note", "type": "create_task", "title": "Manual"}],
}


# ---------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Bad:
    """One bad input: `args` after the global options (`{dir}` is the case's directory, where
    `files` are written); the message must contain `where`."""

    name: str
    args: tuple[str, ...]
    where: str
    files: tuple[tuple[str, bytes], ...] = ()
    options: tuple[str, ...] | None = None
    """Global options instead of `--db STORE --temporal SERVER` (`{db}`, `{temporal}`)."""
    env: tuple[tuple[str, str], ...] = ()
    located_lines: bool = False
    """Definition problems: one line per problem, each naming the file (`where`)."""
    marks: tuple[Any, ...] = ()


def utf8(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogatepass")


def yaml_text(data: dict[str, Any]) -> bytes:
    with contextlib.closing(__import__("io").StringIO()) as out:
        YAML().dump(data, out)
        return out.getvalue().encode()


BAD_IDS = {
    "empty": "",
    "blank": "   ",
    "leading-space": " ann",
    "trailing-space": "ann ",
    "nbsp-edge": "\u00a0ann",
    "tab": "a\tb",
    "newline": "a\nb",
    "carriage-return": "a\rb",
    "nul": "a\x00b",
    "escape-sequence": "a\x1b[31mb",
    "del": "a\x7fb",
    "c1-control": "a\x85b",
    "line-separator": "a\u2028b",
    "lone-surrogate": "a\udcffb",
    "256-chars": "a" * 256,
    "1200-chars": "x" * 1200,
    "516-bytes": "\U0001f600" * 129,
}
SOME_BAD_IDS = ("empty", "trailing-space", "nul", "newline", "lone-surrogate", "1200-chars")
ID_ENTRY_POINTS: dict[str, Callable[[str], tuple[str, ...]]] = {
    "records-show": lambda i: ("records", "show", i),
    "records-delete": lambda i: ("records", "delete", i),
    "lists-add": lambda i: ("lists", "add", "webinar", "ann", i),
    "lists-remove": lambda i: ("lists", "remove", "webinar", i),
    "events-track": lambda i: ("events", "track", i, "opened"),
    "enroll": lambda i: ("enroll", "manual", "ann", i),
    "unenroll": lambda i: ("unenroll", "manual", i),
    "enrollments": lambda i: ("enrollments", "manual", "--record", i),
    "history": lambda i: ("history", "probe", "--record", i),
}

BAD_OBJECT_TYPES = {
    "upper-case": "Contact",
    "digit-first": "1contact",
    "space": "con tact",
    "dash": "con-tact",
    "empty": "",
    "65-chars": "a" * 65,
    "newline": "contact\n",
    "accent": "cont\u00e1ct",
    "underscore-first": "_contact",
    "nul": "con\x00tact",
}
SOME_BAD_OBJECT_TYPES = ("upper-case", "65-chars", "nul", "space")
OBJECT_ENTRY_POINTS: dict[str, Callable[[str], tuple[str, ...]]] = {
    "records-show": lambda o: ("records", "show", "ann", "--object", o),
    "records-delete": lambda o: ("records", "delete", "ann", "--object", o),
    "records-import": lambda o: ("records", "import", "{dir}/ok.csv", "--object", o),
    "lists-add": lambda o: ("lists", "add", "webinar", "ann", "--object", o),
    "lists-remove": lambda o: ("lists", "remove", "webinar", "ann", "--object", o),
    "events-track": lambda o: ("events", "track", "ann", "opened", "--object", o),
}
OK_CSV = (("ok.csv", b"id,firstname\nnew-one,New\n"),)

BAD_NAMES = {
    "empty": "",
    "blank": " ",
    "leading-space": " webinar",
    "trailing-space": "webinar ",
    "newline": "web\ninar",
    "nul": "web\x00inar",
    "tab": "web\tinar",
    "129-chars": "l" * 129,
    "lone-surrogate": "web\udcffinar",
    "paragraph-separator": "web\u2029inar",
}
SOME_BAD_NAMES = ("empty", "nul", "129-chars", "newline")

BAD_KEYS = {
    "upper-case": "Probe",
    "space": "pro be",
    "underscore": "pro_be",
    "empty": "",
    "65-chars": "k" * 65,
    "nul": "probe\x00",
    "newline": "probe\n",
    "non-ascii": "pr\u00f8be",
}
SOME_BAD_KEYS = ("upper-case", "nul", "65-chars")
KEY_ENTRY_POINTS: dict[str, Callable[[str], tuple[str, ...]]] = {
    "activate": lambda k: ("activate", k),
    "deactivate": lambda k: ("deactivate", k),
    "remove": lambda k: ("remove", k),
    "review": lambda k: ("review", k),
    "schedule": lambda k: ("schedule", k),
    "enroll": lambda k: ("enroll", k, "ann"),
    "unenroll": lambda k: ("unenroll", k, "ann"),
    "enrollments": lambda k: ("enrollments", k),
    "history": lambda k: ("history", k, "--record", "ann"),
}

BAD_PROPERTY_NAMES = {
    "space": "First Name",
    "digit-first": "1st",
    "dot-first": ".x",
    "dollar": "a$b",
    "slash": "a/b",
    "accent": "pr\u00e9nom",
    "129-chars": "p" * 129,
    "nul": "a\x00b",
    "newline": "a\nb",
    "bom": "\ufeffname",
    "quote": 'a"b',
    "bracket": "a[0]",
}
SOME_BAD_PROPERTY_NAMES = ("space", "nul", "129-chars", "bom")

BAD_JSON_VALUES = {
    "nan": "NaN",
    "minus-nan": "-NaN",
    "infinity": "Infinity",
    "minus-infinity": "-Infinity",
    "1e999": "1e999",
    "minus-1e999": "-1e999",
    "2-pow-63": "9223372036854775808",
    "minus-2-pow-63-minus-1": "-9223372036854775809",
    "4301-digits": "1" * 4301,
    "5000-digits": "9" * 5000,
    "list": "[1, 2]",
    "object": '{"a": 1}',
    "nul-in-text": '"a\\u0000b"',
    "lone-surrogate": '"\\ud800"',
    "empty": "",
    "python-true": "True",
    "single-quotes": "'a'",
    "two-values": "1 2",
    "deep-array": "[" * 100_000,
    "65537-chars": json.dumps("x" * 65_537),
}
SOME_BAD_JSON_VALUES = ("nan", "1e999", "5000-digits", "lone-surrogate", "nul-in-text", "list")
BAD_TEXT_VALUES = {
    "65537-chars": "x" * 65_537,
    "nul": "a\x00b",
    "lone-surrogate": "a\udcffb",
}


def _args(name: str, args: tuple[str, ...], where: str, **kw: Any) -> Bad:
    return Bad(name, args, where, **kw)


def id_cases() -> Iterator[Bad]:
    for label, value in BAD_IDS.items():
        yield Bad(f"records-set-id-{label}", ("records", "set", value, "x=1"), "record id")
    for entry, args in ID_ENTRY_POINTS.items():
        for label in SOME_BAD_IDS:
            yield Bad(f"{entry}-id-{label}", args(BAD_IDS[label]), "record id")


def object_type_cases() -> Iterator[Bad]:
    for label, value in BAD_OBJECT_TYPES.items():
        args = ("records", "set", "ann", "x=1", "--object", value)
        yield Bad(f"records-set-object-{label}", args, "--object")
    for entry, args in OBJECT_ENTRY_POINTS.items():
        for label in SOME_BAD_OBJECT_TYPES:
            value = BAD_OBJECT_TYPES[label]
            yield Bad(f"{entry}-object-{label}", args(value), "--object", files=OK_CSV)


def name_cases() -> Iterator[Bad]:
    for label, value in BAD_NAMES.items():
        yield Bad(f"lists-add-name-{label}", ("lists", "add", value, "ann"), "list name")
        yield Bad(f"events-track-name-{label}", ("events", "track", "ann", value), "event name")
    for label in SOME_BAD_NAMES:
        value = BAD_NAMES[label]
        yield Bad(f"lists-remove-name-{label}", ("lists", "remove", value, "ann"), "list name")
        yield Bad(f"lists-show-name-{label}", ("lists", "show", value), "list name")
        yield Bad(
            f"review-save-list-{label}", ("review", "probe", "--save-list", value), "list name"
        )


def key_cases() -> Iterator[Bad]:
    for label, value in BAD_KEYS.items():
        yield Bad(f"show-key-{label}", ("show", value), "workflow key")
    for entry, args in KEY_ENTRY_POINTS.items():
        for label in SOME_BAD_KEYS:
            yield Bad(f"{entry}-key-{label}", args(BAD_KEYS[label]), "workflow key")


def property_cases() -> Iterator[Bad]:
    for label, name in BAD_PROPERTY_NAMES.items():
        yield Bad(
            f"records-set-property-{label}", ("records", "set", "ann", f"{name}=1"), "property name"
        )
    for label in SOME_BAD_PROPERTY_NAMES:
        name = BAD_PROPERTY_NAMES[label]
        args = ("events", "track", "ann", "opened", f"{name}:=1")
        yield Bad(f"events-track-property-{label}", args, "property name")
    for label, raw in BAD_JSON_VALUES.items():
        yield Bad(f"records-set-json-{label}", ("records", "set", "ann", f"x:={raw}"), "x:=")
    for label in SOME_BAD_JSON_VALUES:
        args = ("events", "track", "ann", "opened", f"x:={BAD_JSON_VALUES[label]}")
        yield Bad(f"events-track-json-{label}", args, "x:=")
    for label, text in BAD_TEXT_VALUES.items():
        yield Bad(f"records-set-text-{label}", ("records", "set", "ann", f"x={text}"), "x=")
        args = ("events", "track", "ann", "opened", f"x={text}")
        yield Bad(f"events-track-text-{label}", args, "x=")
    yield Bad("records-set-twice", ("records", "set", "ann", "a=1", "a:=2"), "a:=2")
    yield Bad("events-track-twice", ("events", "track", "ann", "opened", "a=1", "a=2"), "a=2")
    yield Bad("records-set-no-equals", ("records", "set", "ann", "novalue"), "novalue")
    yield Bad("records-set-empty-name", ("records", "set", "ann", "=1"), "=1")
    big = tuple(f"p{n}={'x' * 60_000}" for n in range(20))  # 1.2 MB of properties
    yield Bad("records-set-1mb-record", ("records", "set", "ann", *big), "1,048,576")
    many = tuple(f"p{n}={'x' * 60_000}" for n in range(5))  # 300 KB of event properties
    yield Bad(
        "events-track-300kb-properties", ("events", "track", "ann", "opened", *many), "262,144"
    )


CSV_FILES: dict[str, tuple[bytes, str]] = {
    "unterminated-quote": (b'id,name\nann,"Ann\nbob,Bob\n', ":2:"),
    "text-after-quote": (b'id,name\nann,"A"nn\n', ":2:"),
    "duplicate-header": (b"id,email,email\nann,a,b\n", ":1:"),
    "duplicate-id-column": (b"id,name,id\nann,a,b\n", ":1:"),
    "empty-header-cell": (b"id,,name\nann,x,y\n", ":1:"),
    "trailing-empty-header": (b"id,name,\nann,x,\n", ":1:"),
    "no-id-column": (b"name,email\nAnn,a@example.com\n", ":1:"),
    "upper-case-ID": (b"ID,name\nann,x\n", ":1:"),
    "header-with-space": (b"id,First Name\nann,Ann\n", "First Name"),
    "header-leading-space": (b"id, email\nann,a\n", "' email'"),
    "bom-inside-header": (utf8("id,\ufeffname\nann,x\n"), "\\ufeff"),
    "two-boms": (codecs.BOM_UTF8 * 2 + b"id,name\nann,x\n", "\\ufeff"),
    "only-a-bom": (codecs.BOM_UTF8, "no records"),
    "empty": (b"", "no records"),
    "header-only": (b"id,name\n", "no records"),
    "blank-lines-only": (b"\n\n\n", "no records"),
    "more-cells-than-header": (b"id,name\nann,Ann,extra\n", ":2:"),
    "1001-columns": (
        ("id," + ",".join(f"c{n}" for n in range(1000)) + "\nann\n").encode(),
        ":1:",
    ),
    "missing-id-cell": (b"id,name\n,Ann\n", ":2:"),
    "id-256-chars": (b"id\n" + b"a" * 256 + b"\n", ":2:"),
    "id-leading-space": (b"id,name\n ann,Ann\n", ":2:"),
    "id-control-character": (b"id\na\x01b\n", ":2:"),
    "65537-char-cell": (b"id,notes\nann," + b"x" * 65_537 + b"\n", ":2:"),
    "200000-char-cell": (b"id,notes\nann," + b"x" * 200_000 + b"\n", ":2:"),
    "invalid-utf8": (b"id,name\nann,\xff\xfe\n", ":2:"),
    "utf16": ("id,name\nann,Ann\n".encode("utf-16"), ":1:"),
    "latin1": ("id,name\nann,Zo\u00eb\n".encode("latin-1"), ":2:"),
    "encoded-surrogate": (b"id,name\nann,\xed\xa0\x80\n", ":2:"),
    "png": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", ":1:"),
    "nul-byte": (b"id,name\nann,a\x00b\n", ":2:"),
    "bad-third-line": (b'id,name\nann,Ann\nbob,"B\n', ":3:"),
    "cr-line-endings": (b"id,name\rann,Ann\r,x\r", ":3:"),
    "after-multiline-cell": (b'id,notes\nann,"two\nlines"\n,missing\n', ":4:"),
}
JSONL_FILES: dict[str, tuple[bytes, str]] = {
    "invalid-json": (b'{"id": "a"}\n{"id": "b",}\n', ":2:"),
    "unterminated-string": (b'{"id": "a\n', ":1:"),
    "trailing-garbage": (b'{"id": "a"} x\n', ":1:"),
    "array-line": (b"[1, 2]\n", ":1:"),
    "string-line": (b'"ann"\n', ":1:"),
    "number-line": (b"42\n", ":1:"),
    "null-line": (b"null\n", ":1:"),
    "duplicate-key": (b'{"id": "a", "x": 1, "x": 2}\n', ":1:"),
    "duplicate-id": (b'{"id": "a", "id": "b"}\n', ":1:"),
    "nan": (b'{"id": "a", "x": NaN}\n', ":1: property 'x'"),
    "infinity": (b'{"id": "a", "x": Infinity}\n', ":1: property 'x'"),
    "minus-infinity": (b'{"id": "a", "x": -Infinity}\n', ":1: property 'x'"),
    "1e999": (b'{"id": "a", "x": 1e999}\n', ":1: property 'x'"),
    "minus-1e999": (b'{"id": "a", "x": -1e999}\n', ":1: property 'x'"),
    "2-pow-63": (b'{"id": "a", "x": 9223372036854775808}\n', ":1: property 'x'"),
    "4301-digits": (b'{"id": "a", "x": ' + b"1" * 4301 + b"}\n", ":1: property 'x'"),
    "5000-digits": (b'{"id": "a", "x": ' + b"9" * 5000 + b"}\n", ":1: property 'x'"),
    "lone-surrogate": (b'{"id": "a", "x": "\\ud800"}\n', ":1: property 'x'"),
    "lone-low-surrogate": (b'{"id": "a", "x": "a\\udfffb"}\n', ":1: property 'x'"),
    "nul-escape": (b'{"id": "a", "x": "a\\u0000b"}\n', ":1: property 'x'"),
    "nested-object": (b'{"id": "a", "x": {"y": 1}}\n', ":1: property 'x'"),
    "list-value": (b'{"id": "a", "x": [1]}\n', ":1: property 'x'"),
    "65537-char-text": (
        b'{"id": "a", "x": "' + b"x" * 65_537 + b'"}\n',
        ":1: property 'x'",
    ),
    "id-true": (b'{"id": true}\n', ":1:"),
    "id-false": (b'{"id": false}\n', ":1:"),
    "id-null": (b'{"id": null}\n', ":1:"),
    "id-float": (b'{"id": 1.5}\n', ":1:"),
    "id-object": (b'{"id": {}}\n', ":1:"),
    "id-array": (b'{"id": ["a"]}\n', ":1:"),
    "id-empty": (b'{"id": ""}\n', ":1:"),
    "no-id": (b'{"name": "Ann"}\n', ":1:"),
    "id-256-chars": (b'{"id": "' + b"a" * 256 + b'"}\n', ":1:"),
    "id-nul": (b'{"id": "a\\u0000b"}\n', ":1:"),
    "id-lone-surrogate": (b'{"id": "\\ud800"}\n', ":1:"),
    "id-huge-integer": (b'{"id": 99999999999999999999999}\n', ":1:"),
    "property-with-space": (b'{"id": "a", "First Name": "Ann"}\n', ":1:"),
    "property-empty-name": (b'{"id": "a", "": 1}\n', ":1:"),
    "bom-on-line-2": (utf8('{"id": "a"}\n\ufeff{"id": "b"}\n'), ":2:"),
    "deep-nesting": (
        b'{"id": "a", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
        ":1:",
    ),
    "1mb-record": (
        json.dumps({"id": "a", **{f"p{n}": "x" * 60_000 for n in range(20)}}).encode() + b"\n",
        ":1:",
    ),
    "bad-third-line": (b'{"id": "a"}\n{"id": "b"}\n{"id": "c", "x": NaN}\n', ":3:"),
    "gzip": (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", ":1:"),
    "empty": (b"", "no records"),
    "blank-lines-only": (b"\n  \n\n", "no records"),
}


def import_cases() -> Iterator[Bad]:
    for label, (content, where) in CSV_FILES.items():
        yield Bad(
            f"import-csv-{label}",
            ("records", "import", "{dir}/bad.csv"),
            f"{{dir}}/bad.csv{where}" if where.startswith(":") else where,
            files=(("bad.csv", content),),
        )
    for label, (content, where) in JSONL_FILES.items():
        yield Bad(
            f"import-jsonl-{label}",
            ("records", "import", "{dir}/bad.jsonl"),
            f"{{dir}}/bad.jsonl{where}" if where.startswith(":") else where,
            files=(("bad.jsonl", content),),
        )
    yield Bad(
        "import-unknown-format",
        ("records", "import", "{dir}/contacts.txt"),
        "{dir}/contacts.txt",
        files=(("contacts.txt", b"id\nann\n"),),
    )
    yield Bad(
        "import-xlsx",
        ("records", "import", "{dir}/contacts.xlsx"),
        "{dir}/contacts.xlsx",
        files=(("contacts.xlsx", b"PK\x03\x04\x14\x00\x06\x00"),),
    )
    yield Bad("import-directory", ("records", "import", "{dir}"), "FILE")
    yield Bad("import-missing-file", ("records", "import", "{dir}/nope.csv"), "nope.csv")


BAD_DB_URLS = {
    "unknown-scheme": "nosuchdb://x",
    "not-a-url": "garbage",
    "empty": "",
    "unwritable-path": "sqlite:////proc/crmflow/not/here.db",
    "directory": "sqlite:///{dir}",
    "text-file": "sqlite:///{dir}/notes.txt",
    "missing-driver": "mysql://user@localhost/crm",
    "refused-postgres": "postgresql+psycopg://postgres@127.0.0.1:1/crmflow",
}
BAD_TEMPORAL = {
    "space": "x y:7233",
    "no-port": "localhost",
    "port-too-big": "localhost:99999",
    "port-zero": "localhost:0",
    "port-not-a-number": "localhost:abc",
    "no-host": ":7233",
    "empty-port": "localhost:",
    "broken-ipv6": "[::1:7233",
    "newline": "a\nb:7233",
    "url": "http://localhost:7233",
    "two-ports": "localhost:7233:7234",
}


def option_cases() -> Iterator[Bad]:
    notes = (("notes.txt", b"not a database\n" * 200),)
    for label, url in BAD_DB_URLS.items():
        options = ("--db", url, "--temporal", "{temporal}")
        yield Bad(f"db-{label}", ("workflows",), "database", options=options, files=notes)
    for label, address in BAD_TEMPORAL.items():
        options = ("--db", "{db}", "--temporal", address)
        yield Bad(f"temporal-{label}", ("unenroll", "manual", "ann"), "--temporal", options=options)
    yield Bad(
        "temporal-env-garbage",
        ("unenroll", "manual", "ann"),
        "CRMFLOW_TEMPORAL",
        options=("--db", "{db}"),
        env=(("CRMFLOW_TEMPORAL", "x y:1"),),
    )
    yield Bad(
        "temporal-tls-cert-without-key",
        ("unenroll", "manual", "ann"),
        "CRMFLOW_TEMPORAL_TLS",
        env=(("CRMFLOW_TEMPORAL_TLS_CERT", "{dir}/cert.pem"),),
        files=(("cert.pem", b"-----BEGIN CERTIFICATE-----\n"),),
    )


def usage_cases() -> Iterator[Bad]:
    yield Bad("show-version-huge", ("show", "probe", "--version", "99999999999"), "--version")
    yield Bad("show-version-zero", ("show", "probe", "--version", "0"), "--version")
    yield Bad("show-version-text", ("show", "probe", "--version", "one"), "--version")
    yield Bad("schedule-next-zero", ("schedule", "probe", "--next", "0"), "--next")
    yield Bad("schedule-next-huge", ("schedule", "probe", "--next", "100000"), "--next")
    yield Bad("enrollments-status", ("enrollments", "probe", "--status", "sleeping"), "--status")
    yield Bad("records-set-no-property", ("records", "set", "ann"), "PROP=VALUE")
    yield Bad("events-track-no-name", ("events", "track", "ann"), "NAME")
    yield Bad("history-no-record", ("history", "probe"), "--record")
    yield Bad("unknown-command", ("nonsense",), "nonsense")
    yield Bad("unknown-option", ("records", "show", "ann", "--colour"), "--colour")


OK_DEFINITION = (("ok.yaml", yaml_text(MANUAL)),)


def simulate_cases() -> Iterator[Bad]:
    def simulate(*args: str) -> tuple[str, ...]:
        return ("simulate", "{dir}/ok.yaml", *args)

    for label, args, where in [
        ("set-nan", ("--set", "x:=NaN"), "x:=NaN"),
        ("set-5000-digits", ("--set", "x:=" + "9" * 5000), "x:="),
        ("set-property-name", ("--set", "First Name=x"), "property name"),
        ("event-name-nul", ("--event", "1d:open\x00ed"), "--event"),
        ("event-name-long", ("--event", "1d:" + "e" * 129), "--event"),
        ("event-property-nan", ("--event", "1d:opened:x:=NaN"), "--event"),
        ("event-bad-offset", ("--event", "soon:opened"), "--event"),
        ("start-newline", ("--start", "2030-01-01\nT00:00"), "--start"),
    ]:
        yield Bad(f"simulate-{label}", simulate(*args), where, files=OK_DEFINITION)


def _definition(**overrides: Any) -> dict[str, Any]:
    return {**MANUAL, "key": "bad-one", **overrides}


def _deep_not(depth: int) -> dict[str, Any]:
    condition: dict[str, Any] = {"property": "stage", "op": "known"}
    for _ in range(depth):
        condition = {"not": condition}
    return condition


def _deep_any(depth: int) -> dict[str, Any]:
    condition: dict[str, Any] = {"property": "stage", "op": "known"}
    for _ in range(depth):
        condition = {"any": [condition]}
    return condition


def _criteria(condition: Any) -> dict[str, Any]:
    return {"trigger": "criteria", "criteria": condition}


BILLION_LAUGHS = b"""\
key: laughs
name: Laughs
enrollment: {trigger: manual}
actions:
  - id: c
    type: custom
    handler: score
    params:
      a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]
      b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
      c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
      d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
      e: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
"""
RECURSIVE_ALIAS = b"""\
key: loop
name: Loop
enrollment: {trigger: manual}
actions:
  - id: c
    type: custom
    handler: score
    params: &p {self: *p}
"""
NAN_YAML = b"""\
key: nan
name: NaN
enrollment:
  trigger: criteria
  criteria: {property: score, op: gt, value: .nan}
actions:
  - {id: a, type: create_task, title: x}
"""


def _template(title: str) -> bytes:
    return yaml_text(_definition(actions=[{"id": "t", "type": "create_task", "title": title}]))


DEFINITION_FILES: dict[str, tuple[str, bytes]] = {
    "nan-condition": ("yaml", NAN_YAML),
    "inf-increment": (
        "yaml",
        NAN_YAML.replace(b"value: .nan", b"value: 1").replace(
            b"{id: a, type: create_task, title: x}",
            b"{id: a, type: increment_property, property: score, by: .inf}",
        ),
    ),
    "minus-inf-between": (
        "yaml",
        NAN_YAML.replace(b"op: gt, value: .nan", b"op: between, value: [-.inf, 1]"),
    ),
    "json-nan": (
        "json",
        json.dumps(_definition(enrollment=_criteria({"property": "s", "op": "gt", "value": 0})))
        .replace('"value": 0', '"value": NaN')
        .encode(),
    ),
    "json-1e999": (
        "json",
        json.dumps(_definition(enrollment=_criteria({"property": "s", "op": "gt", "value": 0})))
        .replace('"value": 0', '"value": 1e999')
        .encode(),
    ),
    "5000-digit-integer": ("yaml", NAN_YAML.replace(b".nan", b"9" * 5000)),
    "billion-laughs": ("yaml", BILLION_LAUGHS),
    "recursive-alias": ("yaml", RECURSIVE_ALIAS),
    "300-deep-not": (
        "json",
        json.dumps(_definition(enrollment=_criteria(_deep_not(300)))).encode(),
    ),
    "150-deep-any": (
        "json",
        json.dumps(_definition(enrollment=_criteria(_deep_any(150)))).encode(),
    ),
    "2mb-file": ("yaml", yaml_text(_definition(description="x" * 2_000_000))),
    "5000-actions": (
        "json",
        json.dumps(
            _definition(
                actions=[{"id": f"a{n}", "type": "create_task", "title": "x"} for n in range(5000)]
            )
        ).encode(),
    ),
    "template-mro": ("yaml", _template("{{ ''.__class__.__mro__ }}")),
    "template-string-times": ("yaml", _template("{{ 'a' * 500000000 }}")),
    "template-power": ("yaml", _template("{{ 10 ** 100000 }}")),
    "template-loop": ("yaml", _template("{% for i in range(3) %}x{% endfor %}")),
    "template-record-times": ("yaml", _template("{{ record.x * 1000000000 }}")),
}
SIMULATED_DEFINITIONS = ("recursive-alias", "300-deep-not", "150-deep-any")


def definition_cases() -> Iterator[Bad]:
    for label, (suffix, content) in DEFINITION_FILES.items():
        name = f"bad.{suffix}"
        commands = ["validate", "publish"] + (
            ["simulate"] if label in SIMULATED_DEFINITIONS else []
        )
        for command in commands:
            yield Bad(
                f"{command}-{label}",
                (command, f"{{dir}}/{name}"),
                f"{{dir}}/{name}",
                files=((name, content),),
                located_lines=True,
            )


CASES = [
    *id_cases(),
    *object_type_cases(),
    *name_cases(),
    *key_cases(),
    *property_cases(),
    *import_cases(),
    *option_cases(),
    *usage_cases(),
    *simulate_cases(),
    *definition_cases(),
]


# ---------------------------------------------------------------- the store they run against


@dataclass
class Harness:
    app: App
    env: WorkflowEnvironment
    directory: Path
    probes: int = 0
    task_queue: str = field(default="")

    @property
    def temporal(self) -> str:
        return str(self.env.client.service_client.config.target_host)

    def path(self, text: str, case_dir: Path) -> str:
        return (
            text.replace("{dir}", str(case_dir))
            .replace("{db}", self.app.settings.db_url)
            .replace("{temporal}", self.temporal)
        )


def write_definition(directory: Path, definition: dict[str, Any]) -> Path:
    path = directory / f"{definition['key']}.yaml"
    path.write_bytes(yaml_text(definition))
    return path


@pytest_asyncio.fixture(scope="module", params=["sqlite", "postgresql"])
async def harness(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Harness]:
    directory = tmp_path_factory.mktemp("bad-inputs")
    async with time_skipping_server() as time_skipping_env, contextlib.AsyncExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{directory / 'store.db'}"
        else:
            url = stack.enter_context(fresh_database("crmflow_bad"))
        task_queue = f"bad-{uuid.uuid4().hex[:8]}"
        app = App(Settings(db_url=url, task_queue=task_queue))
        stack.callback(app.close)
        app.use_client(time_skipping_env.client)
        services.publish_files(
            app, [write_definition(directory, PROBE), write_definition(directory, MANUAL)]
        )
        services.set_record(app, "contact", "ann", {"firstname": "Ann", "stage": "lead"})
        services.set_record(app, "company", "acme", {"name": "Acme"})
        services.change_list(app, "webinar", ["ann"], object_type="contact", add=True)
        services.track_event(app, "contact", "ann", "opened", {"campaign": "welcome"})
        await services.activate(app, "probe")
        await services.activate(app, "manual")
        h = Harness(app, time_skipping_env, directory, task_queue=task_queue)
        async with build_worker(
            time_skipping_env.client,
            app.sessions,
            enroller=EnrollmentStarter(app.sessions, time_skipping_env.client, task_queue),
            task_queue=task_queue,
        ):
            problem = await dispatcher_pass(h)
            assert problem is None, problem
            yield h


Rows = dict[str, list[dict[str, Any]]]


def dump(app: App) -> Rows:
    """Every row of every table of the store."""
    with app.sessions() as session:
        return {
            table.name: [dict(row) for row in session.execute(select(table)).mappings()]
            for table in Base.metadata.sorted_tables
        }


def differences(before: Rows, after: Rows) -> list[str]:
    changed = []
    for name in before:
        old = sorted(repr(sorted(row.items())) for row in before[name])
        new = sorted(repr(sorted(row.items())) for row in after[name])
        if old != new:
            changed.append(f"{name} ({len(old)} -> {len(new)} rows)")
    return changed


def restore(app: App, rows: Rows) -> None:
    """Put the store back as `rows` say: a mishandled case leaves no trace for the next."""
    with app.sessions.begin() as session:
        for table in reversed(Base.metadata.sorted_tables):
            session.execute(delete(table))
        for table in Base.metadata.sorted_tables:
            if rows[table.name]:
                session.execute(insert(table), rows[table.name])


def invoke(h: Harness, args: tuple[str, ...], case_dir: Path, bad: Bad | None = None) -> Result:
    options = ("--db", "{db}", "--temporal", "{temporal}")
    if bad is not None and bad.options is not None:
        options = bad.options
    env: dict[str, str | None] = {"CRMFLOW_TASK_QUEUE": h.task_queue, "CRMFLOW_DEBUG": None}
    for name, value in bad.env if bad is not None else ():
        env[name] = h.path(value, case_dir)
    argv = [h.path(a, case_dir) for a in (*options, *args)]
    return CliRunner().invoke(cli, argv, env=env)


def refusal_problems(bad: Bad, result: Result, where: str) -> list[str]:
    """How the command's answer breaks the contract of a refusal (empty: it does not)."""
    problems = []
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        problems.append(f"raised {type(result.exception).__name__}: {result.exception}")
    if result.exit_code != 2:
        problems.append(f"exit code {result.exit_code}, not 2")
    if "Traceback" in result.output or "unexpected error" in result.output:
        problems.append("a traceback or an unexpected error")
    lines = result.stderr.splitlines()
    if bad.located_lines:
        if not lines or not all(where in line for line in lines):
            problems.append(f"not every problem line names {where!r}")
    elif len(lines) != 1 or not lines[0].startswith("crmflow: "):
        problems.append(f"{len(lines)} lines on stderr, not one `crmflow: ...` line")
    elif where not in lines[0]:
        problems.append(f"the message does not name {where!r}")
    if result.stdout.strip():
        problems.append("something printed on stdout")
    return problems


async def dispatcher_pass(h: Harness) -> str | None:
    """A real change through the dispatcher: a new contact enrolls in `probe`, its enrollment
    runs to the end on the worker; the feed is empty afterwards."""
    h.probes += 1
    record_id = f"probe-{h.probes}"
    services.set_record(h.app, "contact", record_id, {"probe": h.probes})
    dispatcher = Dispatcher(h.app.sessions, h.env.client, task_queue=h.task_queue)
    try:
        await dispatcher.dispatch_pending()
    except Exception as exc:
        return f"the dispatcher pass failed: {type(exc).__name__}: {exc}"
    finally:
        # Each pass is a new dispatcher: hand the lease on, as a stopping worker does.
        await asyncio.to_thread(dispatcher.release_lease)
    with h.app.sessions() as session:
        if ChangeRepository(session).count_pending():
            return "changes still pending after a dispatcher pass"
    for _ in range(300):
        with h.app.sessions() as session:
            found = EnrollmentRepository(session).find("probe", record_id=record_id)
        if found and found[0].status == "completed":
            return None
        await asyncio.sleep(0.02)
    return f"{record_id} did not enroll and complete after the dispatcher pass"


async def health_problems(h: Harness, case_dir: Path) -> list[str]:
    """What the store no longer serves: `workflows`, `review probe`, a dispatcher pass."""
    problems = []
    for args in (("workflows",), ("review", "probe")):
        result = await asyncio.to_thread(invoke, h, args, case_dir)
        if result.exit_code != 0:
            problems.append(f"`crmflow {' '.join(args)}` then fails: {result.output.strip()}")
    problem = await dispatcher_pass(h)
    if problem:
        problems.append(problem)
    return problems


async def check_refused(h: Harness, bad: Bad) -> None:
    case_dir = h.directory / bad.name
    case_dir.mkdir(exist_ok=True)
    for name, content in bad.files:
        (case_dir / name).write_bytes(content)
    before = dump(h.app)
    result = await asyncio.to_thread(invoke, h, bad.args, case_dir, bad)
    problems = refusal_problems(bad, result, h.path(bad.where, case_dir))
    written = differences(before, dump(h.app))
    if written:
        problems.append(f"wrote to the store: {', '.join(written)}")
        restore(h.app, before)
    problems += await health_problems(h, case_dir)
    shown = result.output if len(result.output) < 2000 else result.output[:2000] + "…"
    assert not problems, f"{bad.name}: {'; '.join(problems)}\n{shown}"


@pytest.mark.parametrize("bad", [pytest.param(b, id=b.name, marks=b.marks) for b in CASES])
async def test_bad_input_is_refused_at_the_edge(harness: Harness, bad: Bad) -> None:
    await check_refused(harness, bad)


def test_the_suite_tries_at_least_250_distinct_bad_inputs() -> None:
    assert len({b.name for b in CASES}) == len(CASES)
    assert len({(b.options, b.args, b.files, b.env) for b in CASES}) == len(CASES) >= 250


# ---------------------------------------------------------------- generated bad inputs

PROPERTY_BASED = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

_SIGNS = st.sampled_from(["", "-"])
OUT_OF_RANGE_INTEGERS = st.one_of(
    st.integers(min_value=2**63, max_value=10**30),
    st.integers(min_value=-(10**30), max_value=-(2**63) - 1),
).map(str)
MANY_DIGITS = st.builds(lambda sign, n: sign + "1" + "0" * n, _SIGNS, st.integers(19, 6000))
OVERFLOWING_FLOATS = st.builds(
    lambda sign, mantissa, exponent: f"{sign}{mantissa}e{exponent}",
    _SIGNS,
    st.sampled_from(["1", "2.5", "9.99"]),
    st.integers(309, 100_000),
)
LONE_SURROGATES = st.integers(0xD800, 0xDFFF).map(lambda c: f'"x\\u{c:04x}y"')
NUL_TEXT = st.text(alphabet="ab ", max_size=4).map(lambda t: json.dumps(f"{t}\x00{t}"))
CONTAINERS = st.recursive(
    st.sampled_from(["1", "true", '"a"', "null"]),
    lambda inner: (
        st.lists(inner, max_size=3).map(lambda items: "[" + ",".join(items) + "]")
        | st.lists(inner, max_size=3).map(
            lambda items: "{" + ",".join(f'"k{n}":{v}' for n, v in enumerate(items)) + "}"
        )
    ),
    max_leaves=5,
).filter(lambda text: text[0] in "[{")
BAD_JSON_VALUE = st.one_of(
    st.sampled_from(["NaN", "Infinity", "-Infinity"]),
    OUT_OF_RANGE_INTEGERS,
    MANY_DIGITS,
    OVERFLOWING_FLOATS,
    LONE_SURROGATES,
    NUL_TEXT,
    CONTAINERS,
)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@PROPERTY_BASED
@given(raw=BAD_JSON_VALUE)
async def test_generated_json_values_are_refused(harness: Harness, raw: str) -> None:
    await check_refused(
        harness, Bad(_unique("json"), ("records", "set", "ann", f"x:={raw}"), "x:=")
    )


_PLAIN = st.characters(categories=["L", "N"])
_REFUSED = st.sampled_from(
    [chr(c) for c in [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]]
    + ["\ud800", "\udbff", "\udc00", "\udfff"]
)
BAD_RECORD_ID = st.one_of(
    st.builds(
        lambda a, c, b: a + c + b,
        st.text(_PLAIN, max_size=8),
        _REFUSED,
        st.text(_PLAIN, max_size=8),
    ),
    st.text(_PLAIN, min_size=256, max_size=400),
    st.integers(129, 255).map(lambda n: "\U0001f600" * n),
    st.builds(
        lambda pad, core, at_end: core + pad if at_end else pad + core,
        st.sampled_from([" ", "\u00a0", "\u3000", "\u2003"]),
        st.text(_PLAIN, min_size=1, max_size=8),
        st.booleans(),
    ),
)


@PROPERTY_BASED
@given(record_id=BAD_RECORD_ID)
async def test_generated_record_ids_are_refused(harness: Harness, record_id: str) -> None:
    await check_refused(
        harness, Bad(_unique("id"), ("records", "set", record_id, "x=1"), "record id")
    )


CSV_DEFECTS = {
    "unterminated-quote": lambda n: f'r{n},"Name {n},1',
    "more-cells": lambda n: f"r{n},Name,1,extra",
    "id-with-space": lambda n: f" r{n},Name,1",
    "missing-id": lambda n: ",Name,1",
    "long-cell": lambda n: f"r{n},{'x' * 65_537},1",
    "quote-then-text": lambda n: f'r{n},"Na"me,1',
    "control-in-id": lambda n: f"r\x07{n},Name,1",
}
JSONL_DEFECTS = {
    "nan": lambda n: f'{{"id": "r{n}", "score": NaN}}',
    "huge-integer": lambda n: f'{{"id": "r{n}", "score": {"9" * 30}}}',
    "duplicate-key": lambda n: f'{{"id": "r{n}", "score": 1, "score": 2}}',
    "not-an-object": lambda n: f'["r{n}"]',
    "boolean-id": lambda n: '{"id": true}',
    "lone-surrogate": lambda n: f'{{"id": "r{n}", "name": "\\udc80"}}',
    "nested": lambda n: f'{{"id": "r{n}", "name": {{"first": "A"}}}}',
    "invalid-json": lambda n: f'{{"id": "r{n}", "name": }}',
    "property-name": lambda n: f'{{"id": "r{n}", "First Name": "A"}}',
}


@st.composite
def file_with_defect(draw: st.DrawFn) -> tuple[str, bytes, int]:
    """(suffix, content, line of the defect): good rows, one bad row, maybe good rows after."""
    jsonl = draw(st.booleans())
    before, after = draw(st.integers(0, 4)), draw(st.integers(0, 3))
    if jsonl:
        rows = [json.dumps({"id": f"g{n}", "score": n}) for n in range(before)]
        defect = JSONL_DEFECTS[draw(st.sampled_from(sorted(JSONL_DEFECTS)))]
    else:
        rows = ["id,name,score"] + [f"g{n},Good {n},{n}" for n in range(before)]
        defect = CSV_DEFECTS[draw(st.sampled_from(sorted(CSV_DEFECTS)))]
    line = len(rows) + 1
    rows.append(defect(line))
    rows += [json.dumps({"id": f"h{n}"}) if jsonl else f"h{n},After,{n}" for n in range(after)]
    return ("jsonl" if jsonl else "csv"), utf8("\n".join(rows) + "\n"), line


@PROPERTY_BASED
@given(generated=file_with_defect())
async def test_generated_import_files_are_refused_at_the_defect_line(
    harness: Harness, generated: tuple[str, bytes, int]
) -> None:
    suffix, content, line = generated
    name = _unique("import")
    await check_refused(
        harness,
        Bad(
            name,
            ("records", "import", f"{{dir}}/people.{suffix}"),
            f"{{dir}}/people.{suffix}:{line}:",
            files=((f"people.{suffix}", content),),
        ),
    )
