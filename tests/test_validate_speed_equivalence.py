"""validate_chunk's fast checks report exactly what a plain, value-by-value reading of the rules does.

The reference below applies each rule to one value at a time with ``re.fullmatch``, ``in`` and
``pd.to_datetime``, as the first pandera schema did; the fast path (one C scan per column over the
values joined by newlines, missing values skipped by the checks themselves) must agree with it on
generated files with defects and on hostile values.
"""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pandas as pd
import pytest

from contribflow import contract
from contribflow.contract import COLUMNS
from contribflow.generate import rows_for, write_file
from contribflow.ingest.reader import REPEATING, chunks
from contribflow.ingest.seenkeys import SeenKeys
from contribflow.ingest.validate import frame_of, validate_chunk


def _regex(pattern: str):
    compiled = re.compile(pattern, re.ASCII)
    return lambda value: compiled.fullmatch(value) is not None


def _real_date(value: str) -> bool:
    """YYYY-MM-DD in ASCII digits naming a day of the proleptic Gregorian calendar, by Python's own
    calendar; year 0000 (before Python's range) is a leap year as 2000 is, 400 years later."""
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value, re.ASCII):
        return False
    year, month, day = int(value[:4]), int(value[5:7]), int(value[8:10])
    try:
        dt.date(year or 2000, month, day)
    except ValueError:
        return False
    return True


_DATES = contract.BASE.column("event_date")


def _in_range(value: str) -> bool:
    """The contract's bounds, for a value that is a date at all (the other rules report the rest)."""
    if not _real_date(value):
        return True
    return dt.date.fromisoformat(_DATES.earliest) <= dt.date(int(value[:4]) or 1, 1, 1) and (
        value[:4] != "0000") and dt.date.fromisoformat(value) <= dt.date.fromisoformat(_DATES.latest)


def _identifier_rules(max_length: int) -> list[tuple]:
    """The contract's identifier rules, one value at a time, written apart from contract.py."""
    return [
        ("identifier_too_long", lambda value: len(value) <= max_length),
        ("identifier_control_character",
         lambda value: not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value)),
        ("identifier_surrounding_whitespace",
         lambda value: not (value[0].isspace() or value[-1].isspace())),
        ("identifier_formula_prefix", lambda value: value[0] not in "=+-@"),
    ]


_RULES = {
    "declaration_id": _identifier_rules(64),
    "taxpayer_id": _identifier_rules(64),
    "event_date": [("iso_date", _regex(contract.ISO_DATE)), ("real_calendar_date", _real_date),
                   ("date_in_range", _in_range)],
    "amount": [
        ("amount_is_decimal_number", _regex(contract.NUMBER)),
        ("amount_not_negative", lambda value: not value.startswith("-")),
        ("amount_two_decimals_max_12_digits", _regex(contract.AMOUNT)),
    ],
    "currency": [("accepted_values", lambda value: value in contract.CURRENCIES)],
    "contribution_type": [("accepted_values", lambda value: value in contract.CONTRIBUTION_TYPES)],
    "status": [("accepted_values", lambda value: value in contract.STATUSES)],
    "country": [("accepted_values", lambda value: value in contract.COUNTRIES)],
}


def reference_issues(columns: list[np.ndarray], lines: np.ndarray,
                     duplicate: np.ndarray) -> dict[int, set[tuple]]:
    issues: dict[int, set[tuple]] = {}
    for name, values in zip(COLUMNS, columns):
        for line, value in zip(lines.tolist(), values.tolist()):
            if value == "":
                found = {("not_null", name, None)}
            else:
                found = {(rule, name, value) for rule, passes in _RULES[name] if not passes(value)}
            if found:
                issues.setdefault(line, set()).update(found)
    for line, value in zip(lines[duplicate].tolist(), columns[0][duplicate].tolist()):
        issues.setdefault(line, set()).add(("unique_in_file", "declaration_id", value))
    return issues


def fast_issues(columns: list[np.ndarray], lines: np.ndarray, seen: SeenKeys):
    frame = frame_of(columns, lines)
    duplicate = seen.mark(frame["declaration_id"])
    found = validate_chunk(frame, duplicate)
    return {line: {(i.rule, i.column, i.value) for i in found_issues}
            for line, found_issues in found.items()}, duplicate


def test_generated_file_with_defects_gets_the_reference_issues(tmp_path):
    path = tmp_path / "contributions_20260101.csv"
    write_file(path, rows_for(dt.date(2026, 1, 1), 6_000, seed=7, defect_rate=0.05))
    header, stream = chunks(path, 1_000)
    positions = [header.index(c) for c in COLUMNS]
    seen = SeenKeys()
    rules_seen: set[str] = set()
    for chunk in stream:
        columns = [chunk.fields[p] for p in positions]
        got, duplicate = fast_issues(columns, chunk.lines, seen)
        assert got == reference_issues(columns, chunk.lines, duplicate)
        rules_seen |= {issue[0] for found in got.values() for issue in found}
    assert rules_seen == {  # every kind of generated defect was met
        "not_null", "real_calendar_date", "amount_is_decimal_number", "amount_not_negative",
        "amount_two_decimals_max_12_digits", "accepted_values", "unique_in_file",
    }


_GOOD = ["D1", "T1", "2026-01-01", "1.00", "EUR", "INCOME_TAX", "PAID", "LU"]
_HOSTILE = {
    "declaration_id": ["", "-D", "D" * 64, "D" * 65, "D\n1", "D 1", "D\x00", 'D"1', "Dé", "D\t1",
                       "D1\n", "DEC_20260112_000001", "=cmd", "@SUM(A1)", "+1", " D", "D ", "\xa0D",
                       "D\u2028", "D\x85", "D\x7f", "D,1", "D\\N", "=" + "D" * 70, " "],
    "taxpayer_id": ["", "٣٤٥", "T_1", "T" * 33, "T\r", "T\n", "\n", "None", "nan", "TAXP_63976",
                    "Jos\xe9", "\u3000T", "T\u3000", "-1", "T" * 65 + " "],
    "event_date": ["", "2026-02-30", "2024-02-29", "2023-02-29", "2026-13-01", "0000-01-01",
                   "0000-02-29", "0000-02-30", "0001-01-01", "1500-06-01", "1677-09-21", "2262-04-12",
                   "1900-02-29", "2000-02-29", "9999-12-31", "10000-01-01", "2026-00-10", "2026-04-31",
                   "٢٠٢٦-01-01", "2026-1-01", "2026-01-01\n", "2026-01-01 ", "20260101",
                   "2026-01-01T00:00"],
    "amount": ["", "-12.50", "-", "-x", "10.505", "abc", "1e309", "NaN", "inf", "+1.00", " 1.00",
               "1,5", "1234567890123.00", "123456789012.00", "-1234567890123.000", "١.٠٠", "1.",
               ".5", "0", "00.00", "-0", "5\n-5", "-\n", "1" * 5_000, "1.00\x00", '"1.00"'],
    "currency": ["", "USD", "eur", "EUR ", "EUR\n", "EU", "EURO", "E|R"],
    "contribution_type": ["", "GIFT_TAX", "INCOME_TAX\x00", "INCOME", "PENALTY,REFUND"],
    "status": ["", "UNKNOWN", "paid", "PAID\r\n", "DUE" * 1_000],
    "country": ["", "XX", "lu", "L", "LUX", "F\nR"],
}


def _hostile_columns(column: str, values: list[str], newline_free: bool) -> list[np.ndarray]:
    """Good rows with the hostile ``values`` in ``column`` (only those without a newline when
    ``newline_free``, so that the one-scan path is the one exercised)."""
    chosen = [v for v in values if not (newline_free and "\n" in v)]
    rows = [list(_GOOD) for _ in range(len(chosen) + 3)]
    for i, row in enumerate(rows):
        row[0] = f"D{i}"
    for row, value in zip(rows[1:], chosen):
        row[COLUMNS.index(column)] = value
    return [np.array([row[c] for row in rows], dtype=object) for c in range(len(COLUMNS))]


def _as_the_plain_reader_gives_them(columns: list[np.ndarray]) -> list[np.ndarray | pd.Categorical]:
    """The REPEATING columns as Categoricals of their texts, as a plain block is read."""
    return [pd.Categorical(values) if name in REPEATING else values
            for name, values in zip(COLUMNS, columns)]


@pytest.mark.parametrize("categorical", [False, True], ids=["text", "categorical"])
@pytest.mark.parametrize("newline_free", [True, False], ids=["one-scan", "value-by-value"])
@pytest.mark.parametrize("column", list(_HOSTILE))
def test_hostile_values_get_the_reference_issues(column, newline_free, categorical):
    columns = _hostile_columns(column, _HOSTILE[column], newline_free)
    lines = np.arange(2, len(columns[0]) + 2, dtype=np.int64)
    if categorical:
        got, duplicate = fast_issues(_as_the_plain_reader_gives_them(columns), lines, SeenKeys())
        assert got == reference_issues(columns, lines, duplicate)
        return
    got, duplicate = fast_issues(columns, lines, SeenKeys())
    expected = reference_issues(columns, lines, duplicate)
    assert got == expected
    assert got and lines[0] not in got and lines[-1] not in got


def test_hand_made_rows_report_the_exact_issues():
    columns = _hostile_columns("amount", ["-1.234", "5\n-5", ""], newline_free=False)
    lines = np.array([10, 11, 12, 13, 14, 15], dtype=np.int64)
    got, _ = fast_issues(columns, lines, SeenKeys())
    assert got == {
        11: {("amount_not_negative", "amount", "-1.234"),
             ("amount_two_decimals_max_12_digits", "amount", "-1.234")},
        12: {("amount_is_decimal_number", "amount", "5\n-5"),
             ("amount_two_decimals_max_12_digits", "amount", "5\n-5")},
        13: {("not_null", "amount", None)},
    }


def test_frame_of_keeps_the_text_and_marks_empty_values_missing():
    columns = [np.array([v, ""], dtype=object) for v in _GOOD]
    frame = frame_of(columns, np.array([7, 8], dtype=np.int64))
    assert list(frame.columns) == list(COLUMNS)
    assert frame.index.tolist() == [7, 8]
    assert all(dtype == np.dtype(object) for dtype in frame.dtypes)
    assert frame.iloc[0].tolist() == _GOOD
    assert frame.iloc[1].isna().all()
    assert columns[0].tolist() == [_GOOD[0], ""]  # the reader's arrays are left as they were


def test_a_chunk_without_rows_has_no_issues():
    columns = [np.array([], dtype=object) for _ in COLUMNS]
    assert validate_chunk(frame_of(columns, np.array([], dtype=np.int64)), np.array([], dtype=bool)) == {}


@pytest.mark.parametrize("status", [["02", "1"], ["True", "True"], ["", "3"]], ids=["numbers", "booleans", "empty"])
def test_the_plain_reader_keeps_a_repeating_column_that_looks_numeric_as_its_text(tmp_path, status):
    """read_csv turns a categorical column whose every value reads as a number or a boolean into
    numbers or booleans; the reader must hand validation the texts as written."""
    path = tmp_path / "contributions_20260101.csv"
    rows = [[f"D{i}", "T1", "2026-01-01", "1.00", "EUR", "INCOME_TAX", value, "LU"] for i, value in enumerate(status)]
    path.write_text("\n".join([",".join(COLUMNS), *(",".join(r) for r in rows)]) + "\n")
    header, stream = chunks(path, 100)
    [chunk] = list(stream)
    assert chunk.plain is not None
    assert list(chunk.fields[COLUMNS.index("status")]) == status
    got, _ = fast_issues([chunk.fields[header.index(c)] for c in COLUMNS], chunk.lines, SeenKeys())
    assert {line: {i[0] for i in found} for line, found in got.items()} == {
        line: {"not_null" if value == "" else "accepted_values"} for line, value in zip([2, 3], status)}
