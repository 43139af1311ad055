"""Every limit on what a definition may be and what its templates may do, in one place.

Limits a real workflow never meets: they exist so that no file, however written, can hang or
exhaust `validate`, `publish`, `simulate`, the store or a worker. The README (*Limits and
refusals*) lists them; keep the two in step.

Pure constants: imported by the definition models, the loader and the template renderer.
"""

from __future__ import annotations

# ------------------------------------------------------------------------------ the document

MAX_FILE_BYTES = 1024 * 1024
"""A definition file (YAML or JSON) is at most 1 MiB."""

MAX_DOCUMENT_DEPTH = 100
"""Mappings and lists nest at most 100 deep (YAML aliases expanded)."""

MAX_DOCUMENT_VALUES = 100_000
"""A document holds at most 100,000 values (every mapping, list and scalar, YAML aliases
expanded: a billion-laughs file is refused while it is read, before anything is built)."""

MAX_TEXT_CHARS = 65_536
"""Any text in a definition (a name, a value, a template) is at most 65,536 characters."""

MAX_NUMBER = 1e308
"""Numbers are finite and within ±1e308 (a double's range): no NaN, no Infinity, no integer
that cannot be compared or stored as a JSON number."""

MAX_NUMBER_CHARS = 400
"""A number is written with at most 400 characters (digits, sign, point, exponent): a longer
one is out of range, and reading it could take long (Python refuses `int()` of over 4,300
digits)."""

MAX_ENCODED_BYTES = 256 * 1024
"""The definition as stored (JSON, UTF-8) is at most 256 KiB: it travels in the input of every
enrollment, and Temporal refuses payloads over 2 MB."""

# ------------------------------------------------------------------------------ the workflow

MAX_ACTIONS = 1_000
"""A workflow has at most 1,000 actions."""

MAX_BRANCHES = 20
"""A `branch` action has at most 20 branches (SPEC §2.3)."""

MAX_CASES = 250
"""A `value_branch` action has at most 250 cases (SPEC §2.3). A `split` has at most 100 paths,
since each takes at least 1 percent."""

MAX_CONDITION_DEPTH = 32
"""A condition nests `all`/`any`/`not` at most 32 levels deep."""

MAX_CONDITION_TERMS = 500
"""A condition has at most 500 terms (filters, plus each value of `in`/`not_in`): compiled to
SQL it must stay within SQLite's expression depth of 1,000."""

MAX_EVENT_COUNT = 1_000_000
"""An event filter's `min_count` is at most 1,000,000."""

# ------------------------------------------------------------------------------ templates

MAX_TEMPLATE_CHARS = MAX_TEXT_CHARS
"""A template is text: at most 65,536 characters."""

MAX_TEMPLATE_DEPTH = 50
"""Expressions in a template nest at most 50 deep (filters chained, `and`/`or`/`~` chained,
parentheses): compiling deeper ones would exhaust Python's stack."""

MAX_RENDERED_CHARS = 100_000
"""A rendered template (one field of one action) is at most 100,000 characters."""

MAX_RENDER_WORK = 1_000_000
"""Characters a template may read from the record and produce through filters while it
renders, in all: this bounds a render's time and memory whatever the record holds."""

MAX_ROUND_PRECISION = 15
"""The `round` filter keeps at most 15 digits after the point."""
