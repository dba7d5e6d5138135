"""The source contract, read from contract.toml: file naming, columns and the rules of each value.

``BASE`` is the contract as shipped; ``Contract.with_overrides`` gives the one in force for a
deployment (settings.py reads the overrides from ``CONTRIBFLOW_CONTRACT_OVERRIDES``). The column set
and the amount rule are fixed by raw's table (numeric(14,2)); identifier rules may be tightened or
loosened, enum values only narrowed (see contract.toml).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

_CONTROL = "\\x00-\\x1f\\x7f-\\x9f"
"""C0 and C1 control characters, DEL: never in an identifier (tab, newline, NUL, escape...)."""
_SPACE = " \\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
"""What ``str.isspace`` calls whitespace, besides the control characters above."""

IDENTIFIER_RULES = ("identifier_too_long", "identifier_control_character",
                    "identifier_surrounding_whitespace", "identifier_formula_prefix")


class ContractError(ValueError):
    """The contract, or a deployment's overrides of it, cannot be used."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    """identifier, date, amount or enum."""
    description: str = ""
    example: str = ""
    max_length: int | None = None
    pattern: str | None = None
    """For an identifier: a regular expression the whole value must match (ASCII classes)."""
    unique_in_file: bool = False
    values: tuple[str, ...] = ()
    whole_digits: int | None = None
    decimals: int | None = None
    earliest: str | None = None
    """For a date: the first date the contract admits (``YYYY-MM-DD``)."""
    latest: str | None = None
    """For a date: the last date the contract admits."""

    @property
    def identifier_regex(self) -> str:
        """An identifier that breaks none of the safety rules, as one anchored regex that cannot
        match a newline (validate.py scans a column's values joined by newlines with it)."""
        prefixes = re.escape(FORMULA_PREFIXES)
        # The usual identifier (letters, digits, underscores) first: it breaks no rule, and this
        # plain class scans about twice as fast as the general rule with its lookarounds.
        return (f"^(?:[A-Za-z0-9_]{{1,{self.max_length}}}"
                f"|(?![{prefixes}{_SPACE}])[^{_CONTROL}]{{1,{self.max_length}}}(?<![{_SPACE}]))$")

    @property
    def amount_regex(self) -> str:
        return f"^\\d{{1,{self.whole_digits}}}(\\.\\d{{1,{self.decimals}}})?$"

    @property
    def full_pattern(self) -> str | None:
        """The identifier's own pattern, to be matched against the whole value."""
        return None if self.pattern is None else f"(?:{self.pattern})\\Z"

    def identifier_problems(self, value: str) -> list[str]:
        """The safety rules ``value`` breaks, one name each (the rules of IDENTIFIER_RULES)."""
        problems = []
        if self.max_length is not None and len(value) > self.max_length:
            problems.append("identifier_too_long")
        if re.search(f"[{_CONTROL}]", value):
            problems.append("identifier_control_character")
        if value != value.strip():
            problems.append("identifier_surrounding_whitespace")
        if value[:1] and value[0] in FORMULA_PREFIXES:
            problems.append("identifier_formula_prefix")
        return problems

    def describe(self) -> str:
        """The rule, in one line for people (README, ``contribflow contract``)."""
        if self.type == "identifier":
            rule = (f"identifier: non-empty, at most {self.max_length} characters, no control "
                    "character, no surrounding whitespace, not starting with "
                    + " ".join(f"`{c}`" for c in FORMULA_PREFIXES))
            if self.pattern:
                rule += f"; must match `{self.pattern}`"
            return rule + ("; unique within the file" if self.unique_in_file else "")
        if self.type == "enum":
            return "one of " + ", ".join(f"`{v}`" for v in self.values)
        if self.type == "amount":
            return (f"decimal ≥ 0, at most {self.decimals} decimals and {self.whole_digits} whole "
                    "digits, no sign, no exponent")
        return (f"ISO date `YYYY-MM-DD`, a real calendar date from {self.earliest} to {self.latest}"
                if self.earliest and self.latest else "ISO date `YYYY-MM-DD`, a real calendar date")


_OVERRIDABLE = {"identifier": {"pattern", "max_length"}, "enum": {"values"},
                "date": {"earliest", "latest"}}
MAX_IDENTIFIER_LENGTH = 512
"""The longest identifier a deployment may allow: raw's unique index holds declaration_id, and a
PostgreSQL btree entry holds at most 2704 bytes (512 characters of 4 UTF-8 bytes are 2048)."""


@dataclass(frozen=True)
class Contract:
    columns: tuple[Column, ...]
    file: tuple[tuple[str, str], ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    def with_overrides(self, overrides: dict[str, Any] | None) -> Contract:
        """This contract with a deployment's overrides applied; anything else is refused, naming it."""
        if not overrides:
            return self
        if not isinstance(overrides, dict) or set(overrides) - {"columns"}:
            raise ContractError('contract overrides: only {"columns": {...}} may be overridden, '
                                f"got {sorted(overrides) if isinstance(overrides, dict) else overrides!r}")
        changes = overrides.get("columns") or {}
        if not isinstance(changes, dict):
            raise ContractError("contract overrides: `columns` must map column names to their changes")
        unknown = sorted(set(changes) - set(self.names))
        if unknown:
            raise ContractError(f"contract overrides: no column {', '.join(unknown)} in the contract "
                                f"(columns: {', '.join(self.names)})")
        columns = []
        for column in self.columns:
            change = changes.get(column.name) or {}
            allowed = _OVERRIDABLE.get(column.type, set())
            if not isinstance(change, dict) or set(change) - allowed:
                raise ContractError(
                    f"contract overrides: {column.name} ({column.type}) allows "
                    f"{', '.join(sorted(allowed)) or 'no override'}, got {change!r}")
            columns.append(_overridden(column, change))
        return dataclasses.replace(self, columns=tuple(columns))

    def as_dict(self) -> dict[str, Any]:
        return {"file": dict(self.file), "identifier": {"formula_prefixes": FORMULA_PREFIXES},
                "columns": [{k: (list(v) if isinstance(v, tuple) else v)
                             for k, v in dataclasses.asdict(c).items() if v not in (None, (), False, "")}
                            for c in self.columns]}

    def markdown(self) -> str:
        """The columns as a Markdown table (the README's contract table is this, verbatim)."""
        lines = ["| column | rule | example |", "|---|---|---|"]
        lines += [f"| `{c.name}` | {c.describe()} | `{c.example}` |" for c in self.columns]
        return "\n".join(lines) + "\n"


def _overridden(column: Column, change: dict[str, Any]) -> Column:
    if "max_length" in change:
        length = change["max_length"]
        if (not isinstance(length, int) or isinstance(length, bool)
                or not 1 <= length <= MAX_IDENTIFIER_LENGTH):
            raise ContractError(f"contract overrides: {column.name}.max_length must be a whole "
                                f"number from 1 to {MAX_IDENTIFIER_LENGTH}, got {length!r}")
    if "pattern" in change and change["pattern"] is not None:
        pattern = change["pattern"]
        try:
            re.compile(pattern, re.ASCII)
        except (re.error, TypeError) as exc:
            raise ContractError(f"contract overrides: {column.name}.pattern {pattern!r} is not a "
                                f"regular expression: {exc}") from None
    if "values" in change:
        values = change["values"]
        if (not isinstance(values, list) or not values
                or not all(isinstance(v, str) for v in values)):
            raise ContractError(f"contract overrides: {column.name}.values must be a non-empty "
                                f"list of strings, got {values!r}")
        added = [v for v in values if v not in column.values]
        if added:
            raise ContractError(
                f"contract overrides: {column.name}.values may only narrow the contract's "
                f"({', '.join(column.values)}); adding {', '.join(added)} is a contract change "
                "(contract.toml and dbt's accepted_values tests)")
        change = {**change, "values": tuple(values)}
    for bound in ("earliest", "latest"):
        if bound in change:
            _check_bound(column, bound, change[bound])
    narrowed = dataclasses.replace(column, **change)
    if narrowed.earliest and narrowed.latest and narrowed.earliest > narrowed.latest:
        raise ContractError(f"contract overrides: {column.name}.earliest {narrowed.earliest} is after "
                            f"its latest {narrowed.latest}")
    return narrowed


def _check_bound(column: Column, bound: str, value: Any) -> None:
    """A date bound may only narrow the contract's (every admitted date must stay storable)."""
    try:
        valid = isinstance(value, str) and bool(re.fullmatch(ISO_DATE, value, re.ASCII)) \
            and dt.date.fromisoformat(value).isoformat() == value
    except ValueError:
        valid = False
    if not valid:
        raise ContractError(f"contract overrides: {column.name}.{bound} must be a date YYYY-MM-DD, "
                            f"got {value!r}")
    if not (column.earliest or value) <= value <= (column.latest or value):
        raise ContractError(f"contract overrides: {column.name}.{bound} {value} may only narrow the "
                            f"contract's {column.earliest} to {column.latest}")


def parse_overrides(text: str) -> dict[str, Any]:
    """``CONTRIBFLOW_CONTRACT_OVERRIDES``: a JSON object (the chart writes it with toJson)."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ContractError(f"CONTRIBFLOW_CONTRACT_OVERRIDES is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ContractError("CONTRIBFLOW_CONTRACT_OVERRIDES must be a JSON object")
    return value


def _load() -> tuple[Contract, str]:
    data = tomllib.loads((resources.files("contribflow") / "contract.toml").read_text(encoding="utf-8"))
    fields: list[dict[str, Any]] = [{k: tuple(v) if isinstance(v, list) else v for k, v in c.items()}
                                    for c in data["columns"]]
    columns = tuple(Column(**f) for f in fields)
    return Contract(columns, tuple(data["file"].items())), data["identifier"]["formula_prefixes"]


BASE, FORMULA_PREFIXES = _load()

COLUMNS: tuple[str, ...] = BASE.names
CURRENCIES = BASE.column("currency").values
CONTRIBUTION_TYPES = BASE.column("contribution_type").values
STATUSES = BASE.column("status").values
COUNTRIES = BASE.column("country").values
ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"
NUMBER = r"^-?\d+(\.\d+)?$"
AMOUNT = BASE.column("amount").amount_regex
"""≥ 0, at most 2 decimals, fits numeric(14,2)."""

FILE_NAME = re.compile(r"contributions_([0-9]{8})\.csv", re.ASCII)
"""The whole name (``fullmatch``): ASCII digits, lower case, nothing before or after (no space or newline)."""
RUN_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
EARLIEST_RUN_DATE = dt.date(1900, 1, 1)
"""Run dates before it are typos (0206 for 2026), and would overflow date arithmetic near year 1."""


def file_name(day: dt.date) -> str:
    return f"contributions_{day:%Y%m%d}.csv"


def file_date(path: Path) -> dt.date:
    """The logical date a source file is for, from its name."""
    match = FILE_NAME.fullmatch(path.name)
    if not match:
        raise ValueError(f"{path.name!r} is not named contributions_YYYYMMDD.csv")
    try:
        return dt.datetime.strptime(match.group(1), "%Y%m%d").date()
    except ValueError:
        raise ValueError(f"{path.name!r} does not carry a valid date") from None


def parse_date(text: str) -> dt.date:
    """A run date given on the command line: ``YYYY-MM-DD`` only (``date.fromisoformat`` alone would
    also take ``20261101`` and ``2026-W45-1``), a real calendar date, not before EARLIEST_RUN_DATE."""
    if not RUN_DATE.fullmatch(text):
        raise ValueError(f"{text!r} is not a date written YYYY-MM-DD")
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a calendar date (YYYY-MM-DD)") from None
    if day < EARLIEST_RUN_DATE:
        raise ValueError(f"{text} is before {EARLIEST_RUN_DATE} (a typo in the year?)")
    return day
