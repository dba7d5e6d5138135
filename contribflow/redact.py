"""What of a source value may be written outside raw and the quarantine: the masking rule.

A raw taxpayer id lives only in ``raw.contributions`` and ``raw.contributions_quarantine.raw_line``.
Everything else ingest writes (quarantine ``reasons``, every ``meta`` table, step errors, lineage
facets, logs, the evidence pack) names lines, columns and rules, and shows a value only when it
cannot be a taxpayer id:

* an identifier's value (``declaration_id``, ``taxpayer_id``) is never shown: ``describe`` gives
  its length and character classes instead (``[10 characters: uppercase, digits, punctuation]``);
* a failing value of another column is shown only when all of these hold (``FailingValues``):
  it is at most ``QUOTABLE_LENGTH`` characters, made only of the characters its column's kind of
  value is written with (``SHAPES``: an amount of digits, signs, points and exponents with no run
  of more than 12 digits, a date of digits and separators with no run of more than 8, an enum of
  ASCII letters, ``_``, ``-`` and spaces), it is not equal to and does not contain a taxpayer id
  of the same chunk of the file, and it does not match the deployment's own ``taxpayer_id``
  pattern (``CONTRIBFLOW_CONTRACT_OVERRIDES``). A row whose columns are swapped, a taxpayer id in
  ``amount`` or ``status``, is then described, not quoted;
* a header's names are quoted only when the header is not a data row (a file without a header:
  ``header_looks_like_data``) and the name looks like a column name (``header_name``);
* a database error's text keeps its message without the value it quotes (``database_error``).

``contribflow/warehouse/migrations/0011_truthful_ledger_and_masked_meta.sql`` holds the same ``describe`` and
shapes in SQL, to mask what older versions stored; tests/test_masking.py proves the two agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from contribflow import contract

QUOTABLE_LENGTH = 64
"""A failing value longer than this is described, never quoted."""

_CLASSES: tuple[tuple[str, Callable[[int], bool]], ...] = (
    ("uppercase", lambda c: 0x41 <= c <= 0x5A),
    ("lowercase", lambda c: 0x61 <= c <= 0x7A),
    ("digits", lambda c: 0x30 <= c <= 0x39),
    ("spaces", lambda c: c == 0x20),
    ("punctuation", lambda c: 0x21 <= c <= 0x7E and not chr(c).isalnum()),
    ("control characters", lambda c: c < 0x20 or 0x7F <= c <= 0x9F),
    ("non-ASCII", lambda c: c > 0x9F),
)
"""The character classes a description names, in this order (the SQL twin: meta.describe_value)."""


def describe(value: str) -> str:
    """A value as its length and character classes: ``[10 characters: uppercase, digits, punctuation]``."""
    codes = {ord(c) for c in value}
    classes = [name for name, member in _CLASSES if any(member(c) for c in codes)]
    noun = "character" if len(value) == 1 else "characters"
    return f"[{len(value)} {noun}" + (f": {', '.join(classes)}]" if classes else "]")


DESCRIPTION = re.compile(r"\A\[\d+ characters?(?:: [a-zA-Z ,-]+)?\]\Z")
"""What ``describe`` writes (the evidence pack shows such a value as it is)."""

SHAPES = {
    "amount": r"[0-9.,+eE -]*",
    "date": r"[0-9/.:T -]*",
    "enum": r"[A-Za-z_ -]*",
}
"""The characters a failing value of each kind of column may hold and still be quoted."""
LONGEST_DIGIT_RUN = {"amount": 12, "date": 8, "enum": 0}
"""An amount has at most 12 whole digits, an ISO date 8 digits in a row (20260112): a longer run of
digits is more likely a national id than a mistyped value."""


class FailingValues:
    """Which failing values of a contract's columns may be quoted (the rule in the module's doc)."""

    def __init__(self, source: contract.Contract) -> None:
        self.identifiers = frozenset(c.name for c in source.columns if c.type == "identifier")
        self.kinds = {c.name: c.type for c in source.columns}
        self.shapes = {kind: re.compile(shape, re.ASCII).fullmatch for kind, shape in SHAPES.items()}
        self.digit_runs = {kind: re.compile(f"[0-9]{{{n + 1}}}").search for kind, n in LONGEST_DIGIT_RUN.items()}
        pattern = source.column("taxpayer_id").pattern
        self.taxpayer_pattern = re.compile(pattern, re.ASCII).search if pattern else None

    def quotable_shape(self, column: str, value: str) -> bool:
        """True when ``value`` has the shape of ``column``'s kind of value (no taxpayer id check)."""
        kind = self.kinds[column]
        if kind == "identifier" or len(value) > QUOTABLE_LENGTH:
            return False
        if not self.shapes[kind](value) or self.digit_runs[kind](value):
            return False
        return not (self.taxpayer_pattern and self.taxpayer_pattern(value))

    def shown(self, column: str | None, value: str | None, taxpayer_ids: Callable[[], TaxpayerIds]
              ) -> tuple[str | None, bool]:
        """``(text, described)``: the value itself when it may be quoted, else its description.

        ``taxpayer_ids`` gives the taxpayer ids of the value's chunk (called only when needed). A
        value without a contract column (a CSV syntax error, a field count) is ingest's own text."""
        if value is None or column not in self.kinds:
            return value, False
        if not self.quotable_shape(column, value) or _holds_one_of(value, taxpayer_ids()):
            return describe(value), True
        return value, False


def _holds_one_of(value: str, ids: TaxpayerIds) -> bool:
    """True when ``value`` is, or contains, one of ``ids``: each of its substrings is looked up
    (``value`` is short, at most QUOTABLE_LENGTH characters: cheaper than knowing the ids' lengths)."""
    return any(value[start:stop] in ids
               for start in range(len(value)) for stop in range(start + 1, len(value) + 1))


class TaxpayerIds(set):
    """The distinct taxpayer ids of a chunk (its values: str, or None where one is missing)."""

    def __init__(self, values: Iterable[object]) -> None:
        super().__init__(values)
        self.discard(None)
        self.discard("")


# --- headers -----------------------------------------------------------------------------------

_COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z_ ]{0,63}", re.ASCII).fullmatch


def header_looks_like_data(header: list[str], source: contract.Contract) -> bool:
    """True when a header line holds a value a data row would: a date, an amount, an enum value
    (the first row of a file without a header). Its names are then never quoted."""
    enums = {v for c in source.columns if c.type == "enum" for v in c.values}
    amount = re.compile(source.column("amount").amount_regex, re.ASCII).match
    date = re.compile(contract.ISO_DATE, re.ASCII).match
    return any(name in enums or amount(name) or date(name) for name in header)


def header_name(name: str, source: contract.Contract, position: int, quote: bool = True) -> str:
    """A header name for a message: itself (quoted, with ``quote``) when it looks like a column
    name (at most 64 ASCII letters, ``_`` or spaces, no digit, not matching the deployment's
    taxpayer id pattern), else described with its position (1-based)."""
    pattern = source.column("taxpayer_id").pattern
    if _COLUMN_NAME(name) and not (pattern and re.search(pattern, name, re.ASCII)):
        return repr(name) if quote else name
    return f"column {position} {describe(name)}"


# --- database errors ---------------------------------------------------------------------------

_COPY_LINE = re.compile(r"\bCOPY \S+, line (\d+)(?:, column (\w+))?")


def copy_position(exc: BaseException) -> tuple[int | None, str | None]:
    """The line of the COPY data (1-based) and the column a COPY's error names, when it does."""
    context = getattr(getattr(exc, "diag", None), "context", None) or ""
    found = _COPY_LINE.search(context)
    return (int(found.group(1)), found.group(2)) if found else (None, None)


def database_error(exc: BaseException, one_line: bool = False) -> str:
    """A database error without the values it quotes: its primary message, cut before the value a
    data exception (SQLSTATE class 22) quotes; its DETAIL, except one that may hold values (a
    constraint's "Failing row contains (...)", class 23; a class 22 DETAIL with quotes); its HINT;
    never its CONTEXT (a COPY's repeats the value). An error without SQLSTATE (the client's, e.g.
    a lost connection) holds no value and is kept as it is."""
    diag = getattr(exc, "diag", None)
    state = getattr(exc, "sqlstate", None) or ""
    primary = getattr(diag, "message_primary", None)
    if not state or not primary:
        text = str(exc).strip() or type(exc).__name__
        return text.splitlines()[0] if one_line else text
    detail, hint = getattr(diag, "message_detail", None), getattr(diag, "message_hint", None)
    if state.startswith("22"):
        primary = primary.split(': "', 1)[0]
        if detail and ('"' in detail or "'" in detail):
            detail = None
    elif state.startswith("23"):
        detail = None
    if one_line:
        return primary + (f" ({detail.rstrip('.')})" if detail else "")
    return "\n".join([primary, *([f"DETAIL:  {detail}"] if detail else []), *([f"HINT:  {hint}"] if hint else [])])


def error_text(exc: BaseException) -> str:
    """What a failed step records and logs of its exception (meta.etl_run.error, lineage)."""
    if getattr(exc, "sqlstate", None):
        return database_error(exc)
    return str(exc) or type(exc).__name__


# --- addresses ---------------------------------------------------------------------------------

def url(address: str) -> str:
    """An address as it may be logged: its scheme, host and port only. A webhook's path or query
    is often its credential (a Slack or Teams webhook URL is all it takes to post), and userinfo is
    a password: ``https://hooks.slack.com/services/T0/B0/XyZ`` is shown ``https://hooks.slack.com/…``."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(address)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "[an address that is not a URL]"
    if not parts.scheme or not host:
        return "[an address that is not a URL]"
    shown = f"{parts.scheme}://{host}" + (f":{port}" if port else "")
    return shown + ("/…" if (parts.path not in ("", "/") or parts.query or parts.fragment
                             or parts.username or parts.password) else "/")
