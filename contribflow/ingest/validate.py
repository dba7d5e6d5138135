"""Row-level validation of a chunk with pandera: which rows are good, and why each bad one is not.

Values are validated as the text that arrived (the frame holds the ``str`` objects the reader made,
dtype ``object``), so a bad value is reported exactly as it was written and nothing is coerced
silently; PostgreSQL types the good rows on COPY.

Every row goes through the pandera schema. The checks are written so that a chunk costs a few C
passes over its text: a regex check finds the values that do NOT match in one scan of the column's
values joined by newlines, and checks skip missing values themselves instead of letting pandera
look for them before every check (``not_null`` is pandera's own, once per column).
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.backends.pandas.components import ColumnBackend
from pandera.errors import FailureCaseMetadata, SchemaErrors

from contribflow import contract
from contribflow.errors import StageError


def frame_of(columns: list[np.ndarray | pd.Categorical], index: np.ndarray,
             may_have_empty: bool = True) -> pd.DataFrame:
    """The frame ``validate_chunk`` expects: the contract columns in ``columns`` (in contract order,
    object arrays of ``str`` or Categoricals of them), an empty value as missing, rows labelled by
    ``index`` (their lines).

    Object dtype on purpose: pandas 3 would otherwise convert every column to its ``str`` dtype,
    which costs a copy and makes every missing-value test slower, for nothing validation needs.
    A column without empty values is not copied at all: validation only reads the frame. A caller
    that knows no value is empty (``may_have_empty=False``) spares the search for them.
    """
    return pd.DataFrame(
        {name: pd.Series(_missing_if_empty(values) if may_have_empty else values, index=index,
                         dtype=None if isinstance(values, pd.Categorical) else object, copy=False)
         for name, values in zip(contract.COLUMNS, columns)},
        copy=False,
    )


def _missing_if_empty(values: np.ndarray | pd.Categorical) -> np.ndarray | pd.Categorical:
    if isinstance(values, pd.Categorical):
        return values.remove_categories([""]) if "" in values.categories else values
    empty = values == ""
    if not empty.any():
        return values
    missing = values.copy()
    missing[empty] = None
    return missing


def _verdicts(values: np.ndarray, bad_lines: Callable[[str], Iterator[int]],
              test: Callable[[str], bool]) -> np.ndarray:
    """True for each value that passes a check, and for each missing one (pandera's ``not_null``
    reports those).

    The values are joined, each followed by a newline, and ``bad_lines`` scans that text once in C
    for the (few) values that fail, by line number. A value that itself holds a newline would blur
    the boundaries, so such a column is checked one value at a time with ``test``.
    """
    texts = values.tolist()
    try:
        joined = "\n".join(texts) + "\n"
    except TypeError:  # a missing value, or one that is not text
        present = pd.notna(values)
        if present.all():
            return np.fromiter(map(test, texts), dtype=bool, count=len(texts))
        passed = np.ones(len(values), dtype=bool)
        passed[present] = _verdicts(values[present], bad_lines, test)
        return passed
    if joined.count("\n") != len(texts):
        return np.fromiter(map(test, texts), dtype=bool, count=len(texts))
    passed = np.ones(len(texts), dtype=bool)
    passed[list(bad_lines(joined))] = False
    return passed


class _Pattern:
    """A regex that must match a whole value (``pattern`` is anchored with ``^...$``, and none of
    its parts can match a newline).

    Over the joined values, a possessive run of "a matching value, then a newline" skips every good
    value in C and stops only at a bad one: a column with a handful of bad values costs a handful
    of Python steps instead of one ``fullmatch`` call per value.
    """

    def __init__(self, pattern: str) -> None:
        if not (pattern.startswith("^") and pattern.endswith("$")):
            raise ValueError(f"pattern {pattern!r} must be anchored with ^ and $")
        self.fullmatch = re.compile(pattern, re.ASCII).fullmatch
        good_run = re.compile(f"(?:(?:{pattern[1:-1]})\n)*+", re.ASCII).match
        # A possessive run of zero or more values always matches (at worst the empty string).
        self.good_end: Callable[[str, int], int] = lambda joined, pos: good_run(joined, pos).end()  # type: ignore[union-attr]

    def verdicts(self, values: np.ndarray) -> np.ndarray:
        return _verdicts(values, self.bad_lines, self.matches)

    def matches(self, value: str) -> bool:
        return self.fullmatch(value) is not None

    def bad_lines(self, joined: str) -> Iterator[int]:
        line = pos = 0
        while (stop := self.good_end(joined, pos)) < len(joined):
            line += joined.count("\n", pos, stop)
            yield line
            pos = joined.index("\n", stop) + 1
            line += 1


def _negative_lines(joined: str) -> Iterator[int]:
    """The lines of ``joined`` that start with a minus sign, found with ``str.find`` in C."""
    line = pos = 0
    while (found := joined.find("-", pos)) >= 0:
        line += joined.count("\n", pos, found)
        if found == 0 or joined[found - 1] == "\n":
            yield line
        pos = joined.index("\n", found) + 1
        line += 1


def _not_negative(values: np.ndarray) -> np.ndarray:
    return _verdicts(values, _negative_lines, lambda value: not value.startswith("-"))


def _series_check(verdicts: Callable[[np.ndarray], np.ndarray], name: str) -> pa.Check:
    """A pandera check whose verdict on a column is ``verdicts(its values)``.

    ``ignore_na=False``: the verdicts themselves pass missing values, which spares pandera a search
    for missing values (and a copy of the column) before every check.
    """

    def check(values: pd.Series) -> pd.Series:
        if isinstance(values.dtype, pd.CategoricalDtype):
            return pd.Series(_by_category(verdicts, values.array), index=values.index)
        return pd.Series(verdicts(values.to_numpy(dtype=object)), index=values.index)

    return pa.Check(check, name=name, ignore_na=False)


def _by_category(verdicts: Callable[[np.ndarray], np.ndarray], values: pd.Categorical) -> np.ndarray:
    """``verdicts`` on a Categorical: each distinct value judged once, then every row by its code
    (a missing value's code, -1, picks the True appended for it)."""
    judged = verdicts(values.categories.to_numpy(dtype=object))
    return np.append(judged, True)[values.codes]


def _matches(pattern: str, name: str) -> pa.Check:
    """A regex check reported under a rule name an auditor can read.

    ASCII only: Python's ``\\d`` also matches other scripts' digits, which PostgreSQL would not
    accept as a number or a date.
    """
    return _series_check(_Pattern(pattern).verdicts, name)


def _one_of(values: tuple[str, ...]) -> pa.Check:
    return _matches("^(?:" + "|".join(map(re.escape, values)) + ")$", "accepted_values")


_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII).fullmatch


def is_calendar_date(text: str) -> bool:
    """True when ``text`` is ``YYYY-MM-DD`` (ASCII digits) naming a day of the proleptic Gregorian
    calendar: a month 01-12 and a day that month has (29 February in a leap year only). The year
    range is the contract's (``date_in_range``)."""
    if not _ISO_DATE(text):
        return False
    year, month, day = int(text[:4]), int(text[5:7]), int(text[8:10])
    if not 1 <= month <= 12 or day < 1:
        return False
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return day <= _DAYS_IN_MONTH[month - 1] + (month == 2 and leap)


def _by_distinct_value(judge: Callable[[str], bool]) -> Callable[[np.ndarray], np.ndarray]:
    """Verdicts of ``judge`` on a column, each distinct value judged once (a chunk holds a few
    dozen distinct dates, not thousands); missing values pass (``not_null`` reports them)."""

    def verdicts(values: np.ndarray) -> np.ndarray:
        texts = values.tolist()
        bad = {value for value in set(texts) if isinstance(value, str) and not judge(value)}
        if not bad:
            return np.ones(len(texts), dtype=bool)
        return ~np.fromiter(map(bad.__contains__, texts), dtype=bool, count=len(texts))

    return verdicts


def _in_range(earliest: str, latest: str) -> Callable[[str], bool]:
    """A date between the contract's bounds (ISO dates of four-digit years compare as text); a
    value that is no date passes (``iso_date`` and ``real_calendar_date`` report it)."""
    return lambda text: not is_calendar_date(text) or earliest <= text <= latest


class _ColumnBackend(ColumnBackend):
    """pandera's column backend, without the failure report that is built only to be dropped.

    In lazy mode a column with a failing check raises SchemaErrors twice (from its checks, then
    from the column), and each builds a consolidated failure-case table and a summary. The
    DataFrame backend catches both, keeps only their ``schema_errors``, and builds the one report
    ``validate_chunk`` reads from those. With one bad row in a thousand, almost every column of
    every chunk has a failure, and these discarded reports were a fifth of validation's time
    (1.72 s of CPU per million rows, 1.37 s without them).
    """

    def failure_cases_metadata(self, schema_name, schema_errors) -> FailureCaseMetadata:
        return FailureCaseMetadata(failure_cases=None, message={}, error_counts={})


class _Column(pa.Column):
    """A column of ``schema_for``'s schemas: validated by ``_ColumnBackend``, only ever inside the DataFrame."""


_Column.register_backend(pd.DataFrame, _ColumnBackend)


def _column(*checks: pa.Check) -> pa.Column:
    return _Column(None, nullable=False, checks=list(checks))


def _whole_matches(pattern: str) -> Callable[[np.ndarray], np.ndarray]:
    """Verdicts of a deployment's own pattern, one value at a time: nothing is known of what it
    matches (it may span a newline), so it cannot take the joined scan. Missing values pass
    (``not_null`` reports them)."""
    fullmatch = re.compile(pattern, re.ASCII).match

    def verdicts(values: np.ndarray) -> np.ndarray:
        return np.fromiter((not isinstance(v, str) or fullmatch(v) is not None for v in values.tolist()),
                           dtype=bool, count=len(values))
    return verdicts


IDENTIFIER_CHECK = "identifier"
"""One scan for every safety rule of an identifier; a failing value is then told which rules it
breaks (Column.identifier_problems), so the report names each."""


def _checks(column: contract.Column) -> list[pa.Check]:
    if column.type == "identifier":
        checks = [_series_check(_Pattern(column.identifier_regex).verdicts, IDENTIFIER_CHECK)]
        if column.full_pattern:
            checks.append(_series_check(_whole_matches(column.full_pattern), f"{column.name}_pattern"))
        return checks
    if column.type == "date":
        checks = [_matches(contract.ISO_DATE, "iso_date"),
                  _series_check(_by_distinct_value(is_calendar_date), "real_calendar_date")]
        if column.earliest and column.latest:
            checks.append(_series_check(_by_distinct_value(_in_range(column.earliest, column.latest)),
                                        "date_in_range"))
        return checks
    if column.type == "amount":
        return [_matches(contract.NUMBER, "amount_is_decimal_number"),
                _series_check(_not_negative, "amount_not_negative"),
                _matches(column.amount_regex, "amount_two_decimals_max_12_digits")]
    if column.type == "enum":
        return [_one_of(column.values)]
    raise ValueError(f"column {column.name}: no checks for type {column.type!r}")


@functools.lru_cache(maxsize=8)
def schema_for(source: contract.Contract) -> pa.DataFrameSchema:
    """The pandera schema of a contract (built once per contract in force)."""
    return pa.DataFrameSchema(
        {column.name: _column(*_checks(column)) for column in source.columns},
        strict=True,
        ordered=False,
        name="contributions",
    )


@dataclass(frozen=True)
class Issue:
    rule: str
    column: str | None
    value: str | None
    described: bool = False
    """True when ``value`` is not the failing value but a description of it (contribflow/redact.py)."""


def _check_name(check: object) -> str:
    name = str(check)
    return "not_null" if name == "not_nullable" else name


def validate_chunk(frame: pd.DataFrame, duplicate: np.ndarray,
                   source: contract.Contract = contract.BASE) -> dict[int, list[Issue]]:
    """Validate one chunk; return the issues of every bad row, keyed by the frame's index.

    ``frame`` holds the eight contract columns as text, empty values as NA (see ``frame_of``);
    ``duplicate`` marks rows whose declaration_id appeared earlier in the file (pandera cannot see
    across chunks).
    """
    issues: dict[int, list[Issue]] = defaultdict(list)
    try:
        schema_for(source).validate(frame, lazy=True, inplace=True)
    except SchemaErrors as errors:
        cases = errors.failure_cases
        for index, column, check, value in zip(
            cases["index"], cases["column"], cases["check"], cases["failure_case"]
        ):
            if index is None or (isinstance(index, float) and np.isnan(index)):
                # A column-level failure (a wrong dtype, say) names no row: never let it pass.
                # Not the value: it may be a taxpayer id (contribflow/redact.py).
                raise StageError(f"validation could not check column {column!r}: {check}") from None
            text = None if pd.isna(value) else str(value)
            name = _check_name(check)
            rules = (source.column(column).identifier_problems(text) or [name]
                     if name == IDENTIFIER_CHECK and text is not None else [name])
            issues[int(index)].extend(Issue(rule, column, text) for rule in rules)
    for index, value in zip(frame.index[duplicate], frame["declaration_id"].to_numpy()[duplicate]):
        issues[int(index)].append(Issue("unique_in_file", "declaration_id", value))
    return issues
