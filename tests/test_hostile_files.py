"""Hostile source files, one documented outcome each (issue 7, point 5; docs/reliability.md "Hostile files").

Every case ends in exactly one of: the rows load; bad rows are quarantined with their line and
reasons while the good ones load; or the whole file is refused with a clear one-line error and
nothing of it is loaded. In every case: rows loaded + rows quarantined + rows already present =
data records in the file, or nothing is loaded at all.
"""

from __future__ import annotations

import codecs
import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from contribflow import cli
from contribflow.contract import COLUMNS, file_name

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 11, 20)
ROOT = Path(__file__).resolve().parents[1]
HEADER = ",".join(COLUMNS)


def row(n: int, **values: str) -> str:
    fields = {"declaration_id": f"D{n:08d}", "taxpayer_id": f"{10000 + n}", "event_date": "2026-11-01",
              "amount": f"{n}.50", "currency": "EUR", "contribution_type": "INCOME_TAX", "status": "DUE",
              "country": "LU"}
    fields.update(values)
    return ",".join(fields[c] for c in COLUMNS)


def text(*rows: str, header: str = HEADER, newline: str = "\n") -> str:
    return newline.join([header, *rows]) + newline


def landed(content: bytes | str, encoding: str = "utf-8") -> Callable[[Path, Path], Path]:
    """A builder: the file for DAY in the landing folder with these bytes."""
    def build(landing: Path, elsewhere: Path) -> Path:
        path = landing / file_name(DAY)
        path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
        return path
    return build


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path, Path], Path]
    loaded: int = 0
    quarantined: int = 0
    already: int = 0
    refused: str | None = None
    """A part of the one-line error when the whole file is refused."""
    reasons: dict[int, str] = field(default_factory=dict)
    """Physical line → a part of its quarantine reasons."""
    check: Callable[[Callable], None] | None = None
    """Further assertions on the database (gets the ``sql`` fixture)."""
    read: bool = True
    """False when the file is refused for its path or name, as an argument before any work (no ledger
    entry, no ingest step recorded)."""


def _outside(landing: Path, elsewhere: Path) -> Path:
    path = elsewhere / file_name(DAY)
    path.write_text(text(row(1)))
    return path


def _symlink(landing: Path, elsewhere: Path) -> Path:
    target = elsewhere / "secrets.csv"
    target.write_text(text(row(1)))
    link = landing / file_name(DAY)
    link.symlink_to(target)
    return link


def _wrong_date(landing: Path, elsewhere: Path) -> Path:
    path = landing / file_name(DAY + dt.timedelta(days=1))
    path.write_text(text(row(1)))
    return path


def _sent_twice(landing: Path, elsewhere: Path) -> Path:
    path = landing / file_name(DAY)
    path.write_text(text(row(1), row(2), row(3)))
    assert cli.main(["ingest", "--date", DAY.isoformat(), "--file", str(path)]) == 0
    return path


def _overlapping(landing: Path, elsewhere: Path) -> Path:
    # An earlier version of the same date's file, corrected in place (the same states for another
    # date would be new arrivals, migration 0010).
    path = landing / file_name(DAY)
    path.write_text(text(row(1), row(2)))
    assert cli.main(["ingest", "--date", DAY.isoformat(), "--file", str(path)]) == 0
    path.write_text(text(row(1), row(2), row(3)))
    return path


def _resent(landing: Path, elsewhere: Path) -> Path:
    """Yesterday's export, re-sent under today's name."""
    earlier = DAY - dt.timedelta(days=1)
    first = landing / file_name(earlier)
    first.write_text(text(row(1), row(2), row(3)))
    assert cli.main(["ingest", "--date", earlier.isoformat(), "--file", str(first)]) == 0
    path = landing / file_name(DAY)
    path.write_bytes(first.read_bytes())
    return path


def _recorded_as_duplicate(sql) -> None:
    assert sql("select outcome, rows_in, rows_already_in_raw from meta.source_file order by id") == [
        ("LOADED", 3, 0), ("DUPLICATE", 3, 3)]
    assert sql("select rule, severity from meta.data_quality_issue") == [("resent_file", "warning")]
    assert sql("select count(*) from raw.contributions where file_date = %s", (DAY,)) == [(0,)]


def _no_taxpayer_id_in_reasons(sql) -> None:
    reasons = " ".join(r for (rs,) in sql("select reasons from raw.contributions_quarantine") for r in rs)
    values = " ".join(v or "" for (v,) in sql("select failing_value from meta.data_quality_issue"))
    assert "TAXP_" not in reasons + values and "[10 characters: uppercase, digits, punctuation]" in reasons
    assert "TAXP_63976" in " ".join(r for (r,) in sql("select raw_line from raw.contributions_quarantine"))


def _dates_at_the_bounds_load(sql) -> None:
    assert sql("select event_date::text from raw.contributions order by source_line") == [
        ("0001-01-01",), ("9999-12-31",), ("2024-02-29",)]


def _no_carriage_returns(sql) -> None:
    assert sql("select count(*) from raw.contributions where country <> 'LU' or status <> 'DUE'") == [(0,)]
    assert sql("select bool_and(raw_line like %s) from raw.contributions_quarantine", ("%\r\n",)) == [(True,)]


def _raw_text_kept(fragment: str):
    def check(sql) -> None:
        raws = [r[0] for r in sql("select raw_line from raw.contributions_quarantine")]
        assert any(fragment in r for r in raws), raws
        assert sql("select to_regclass('raw.contributions') is not null") == [(True,)]
    return check


def _huge_value_described(sql) -> None:
    """A failing identifier is described, never quoted (a taxpayer id: contribflow/redact.py); the
    raw line keeps it whole."""
    assert sql("select failing_value from meta.data_quality_issue") == [(f"[{len(HUGE)} characters: digits]",)]
    assert sql("select length(raw_line) > %s from raw.contributions_quarantine", (len(HUGE),)) == [(True,)]


def _sql_text_is_data(sql) -> None:
    assert sql("select declaration_id from raw.contributions where source_line = 2") == [
        ("D1'; DROP TABLE raw.contributions; --",)]
    _raw_text_kept("LU' OR '1'='1")(sql)


def _backslashes_are_characters(sql) -> None:
    """A backslash in an identifier is loaded as itself, never read as a COPY escape (\\N is not NULL)."""
    assert sql("select source_line, declaration_id, taxpayer_id from raw.contributions order by 1") == [
        (2, "D00000001", "\\N"), (4, "D3\\.", "10003"), (5, "D00000004", "10004")]
    _raw_text_kept("LU\\tFR")(sql)
    _hashes_agree_with_sql(sql)


def _quoted_identifiers_kept(sql) -> None:
    assert sql("select declaration_id, taxpayer_id from raw.contributions order by source_line") == [
        ("D1,a", "10001"), ('D1",a', "10002"), ("D00000003", "T,1"), ("D00000004", "10004")]
    _hashes_agree_with_sql(sql)


def _hashes_agree_with_sql(sql) -> None:
    assert sql("""select count(*) from raw.contributions where record_hash <> raw.record_hash(
        declaration_id, taxpayer_id, event_date, amount, currency, contribution_type, status, country)""") == [(0,)]


def _source_amounts_read_as_cents(sql) -> None:
    assert sql("select amount::text from raw.contributions order by source_line") == [
        ("343.30",), ("461.26",), ("0.00",), ("12.00",)]
    _hashes_agree_with_sql(sql)


def _quiet_day_warned(sql) -> None:
    assert sql("select outcome, rows_in, rows_loaded from meta.source_file") == [("LOADED", 0, 0)]
    assert sql("select rule, severity, source_line from meta.data_quality_issue") == [("volume", "warning", None)]
    assert sql("select details->>'volume' from meta.etl_run where step = 'ingest'") == [("empty",)]


def _lines_after_quoted_newline(sql) -> None:
    assert sql("select source_line from raw.contributions order by 1") == [(2,), (5,)]


HEADERLESS = "DEC_20261120_000001,TAXP_63976,2026-11-20,343.3,EUR,INCOME_TAX,DUE,LU"
HUGE = "9" * (1 << 20)
CASES = [
    Case("utf8_bom", landed(codecs.BOM_UTF8 + text(row(1), row(2)).encode()), loaded=2),
    Case("crlf_line_endings", landed(text(row(1), row(2), row(3, country="XX"), newline="\r\n")),
         loaded=2, quarantined=1, reasons={4: "country: accepted_values"}, check=_no_carriage_returns),
    Case("bom_and_crlf", landed(codecs.BOM_UTF8 + text(row(1), row(2), newline="\r\n").encode()), loaded=2),
    Case("latin1_encoding", landed(text(row(1), row(2, taxpayer_id="Jos\xe9")), "latin-1"),
         refused="not valid UTF-8 at line 3"),
    Case("utf16_encoding", landed(text(row(1)), "utf-16"), refused="not valid UTF-8 at line 1"),
    Case("ragged_rows", landed(text(row(1), "D2,1,2026-11-01,1.00,EUR,INCOME_TAX,DUE",
                                    row(3) + ",EXTRA", row(4))),
         loaded=2, quarantined=2, reasons={3: "field_count", 4: "field_count"}),
    Case("quoted_newline", landed(text(row(1), row(2, status='"DU\nE"'), row(3))),
         loaded=2, quarantined=1, reasons={3: "status: accepted_values"}, check=_lines_after_quoted_newline),
    Case("unbalanced_quote", landed(text(row(1), row(2, status='"DUE'), row(3))),
         refused="unbalanced quote"),
    Case("nul_byte", landed(text(row(1), row(2, declaration_id="D\x002"))),
         loaded=1, quarantined=1, reasons={3: "declaration_id"}, check=_raw_text_kept("D\\x002")),
    Case("huge_field", landed(text(row(1), row(2, taxpayer_id=HUGE))),
         loaded=1, quarantined=1, reasons={3: "taxpayer_id: identifier_too_long"}, check=_huge_value_described),
    Case("field_over_16_mib", landed(text(row(1), row(2, taxpayer_id=HUGE * 17))),
         refused="field larger than field limit"),
    Case("spreadsheet_formulas", landed(text(
        row(1, declaration_id="=cmd|' /C calc'!A0"), row(2, taxpayer_id="=1+1"), row(3, country="@SUM(A1)"),
        row(4, amount="+100"), row(5, status="-DUE"), row(6))),
         loaded=1, quarantined=5,
         reasons={2: "declaration_id: identifier_formula_prefix", 3: "taxpayer_id: identifier_formula_prefix",
                  4: "country", 5: "amount", 6: "status"}),
    Case("sql_in_values", landed(text(row(1, declaration_id="D1'; DROP TABLE raw.contributions; --"),
                                      row(2, country="LU' OR '1'='1"), row(3))),
         loaded=2, quarantined=1, reasons={3: "country"}, check=_sql_text_is_data),
    Case("copy_escapes_in_values", landed(text(row(1, taxpayer_id="\\N"), row(2, country="LU\\tFR"),
                                               row(3, declaration_id="D3\\."), row(4))),
         loaded=3, quarantined=1, reasons={3: "country"}, check=_backslashes_are_characters),
    Case("identifiers_with_commas_and_quotes", landed(text(row(1, declaration_id='"D1,a"'),
                                                           row(2, declaration_id='"D1"",a"'),
                                                           row(3, taxpayer_id='"T,1"'), row(4))),
         loaded=4, check=_quoted_identifiers_kept),
    Case("padded_or_controlled_identifiers", landed(text(row(1, taxpayer_id=" 10001"),
                                                         row(2, declaration_id="D2\u00a0"),
                                                         row(3, taxpayer_id="T\x1b[31m"), row(4))),
         loaded=1, quarantined=3, reasons={2: "identifier_surrounding_whitespace",
                                           3: "identifier_surrounding_whitespace",
                                           4: "identifier_control_character"}),
    Case("source_export_format", landed(text(
        "DEC_20261120_000001,TAXP_63976,2026-11-20,343.3,EUR,INCOME_TAX,DUE,LU",
        "DEC_20261120_000002,TAXP_10002,2026-11-19,461.26,EUR,PENALTY,PAID,FR",
        "DEC_20261120_000003,TAXP_99999,2026-11-18,0.0,EUR,REFUND,CANCELLED,DE",
        "DEC_20261120_000004,TAXP_10002,2026-11-17,12.0,EUR,PROPERTY_TAX,DUE,BE")),
         loaded=4, check=_source_amounts_read_as_cents),
    Case("non_finite_amounts", landed(text(*(row(n, amount=a) for n, a in enumerate(
        ["1e309", "NaN", "inf", "-Infinity", "1E5", "0x10", "1_000"], 1)), row(8))),
         loaded=1, quarantined=7, reasons={n: "amount" for n in range(2, 9)}),
    Case("unicode_digits", landed(text(row(1, amount="\uff11\uff10\uff10.00"),
                                       row(2, event_date="\uff12\uff10\uff12\uff16-11-01"),
                                       row(3, amount="\u0661\u0660"), row(4))),
         loaded=1, quarantined=3, reasons={2: "amount", 3: "event_date", 4: "amount"}),
    Case("padded_values", landed(text(row(1, country=" LU"), row(2, amount="10.00 "), row(3))),
         loaded=1, quarantined=2, reasons={2: "country", 3: "amount"}),
    Case("duplicate_declarations", landed(text(row(1), row(2), row(1), row(2, amount="99.00"), row(3))),
         loaded=3, quarantined=2, reasons={4: "unique_in_file", 5: "unique_in_file"}),
    Case("missing_column", landed(text(",".join(["D1", "1", "2026-11-01", "1.00", "EUR", "PENALTY", "DUE"]),
                                       header=",".join(COLUMNS[:-1]))),
         refused="missing column(s) country"),
    Case("extra_column", landed(text(row(1) + ",x", header=HEADER + ",comment")),
         refused="unexpected column(s) 'comment'"),
    Case("renamed_column", landed(text(row(1), header=HEADER.replace("amount", "amount_eur"))),
         refused="missing column(s) amount; unexpected column(s) 'amount_eur'"),
    Case("repeated_column", landed(text(row(1) + ",LU", header=HEADER + ",country")),
         refused="repeated column(s) country"),
    Case("reordered_columns", landed(text(*(",".join(reversed(row(n).split(","))) for n in (1, 2)),
                                          header=",".join(reversed(COLUMNS)))), loaded=2),
    Case("blank_lines", landed(text(row(1), "", row(2), "", "")), loaded=2),
    Case("dates_at_the_calendars_edges", landed(text(
        row(1, event_date="0001-01-01"), row(2, event_date="9999-12-31"), row(3, event_date="2024-02-29"),
        row(4, event_date="0000-01-01"), row(5, event_date="2023-02-29"), row(6, event_date="10000-01-01"))),
         loaded=3, quarantined=3, reasons={5: "event_date: date_in_range ('0000-01-01')",
                                           6: "event_date: real_calendar_date ('2023-02-29')", 7: "iso_date"},
         check=_dates_at_the_bounds_load),
    Case("swapped_columns", landed(text(row(1, amount="TAXP_63976", taxpayer_id="343.3"),
                                        row(2, status="TAXP_63976"), row(3))),
         loaded=1, quarantined=2, reasons={2: "amount: amount_is_decimal_number ([10 characters",
                                           3: "status: accepted_values ([10 characters"},
         check=_no_taxpayer_id_in_reasons),
    Case("headerless", landed(text(row(1), header=HEADERLESS)),
         refused="the first line looks like a data row, not a header (8 values); missing column(s)"),
    Case("empty_file", landed(b""), refused="the file is empty"),
    Case("header_only", landed(text()), check=_quiet_day_warned),
    Case("path_outside_landing", _outside, refused="outside the landing folder", read=False),
    Case("symlink_escaping_landing", _symlink, refused="is a symbolic link", read=False),
    Case("named_for_another_date", _wrong_date, read=False,
         refused="is the file for 2026-11-21, not for the run date 2026-11-20"),
    Case("file_sent_twice", _sent_twice, already=3),
    Case("resent_under_another_name", _resent, already=3, check=_recorded_as_duplicate),
    Case("rows_already_loaded", _overlapping, loaded=1, already=2),
]


def _records(path: Path) -> int:
    """Data records the way a reader counts them: CSV records after the header, blank lines aside."""
    import csv
    limit = csv.field_size_limit(1 << 26)  # process-wide: the reader's own limit is put back below
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return sum(1 for r in csv.reader(fh) if r) - 1
    finally:
        csv.field_size_limit(limit)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_file(case: Case, database, sql, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CONTRIBFLOW_REJECT_THRESHOLD", "1.0")  # show every row's outcome
    landing, elsewhere = Path(database["CONTRIBFLOW_LANDING_DIR"]), tmp_path / "elsewhere"
    landing.mkdir(parents=True)
    elsewhere.mkdir()
    assert cli.main(["init-db"]) == 0
    path = case.build(landing, elsewhere)
    before = sql("select count(*) from raw.contributions")[0][0]
    capsys.readouterr()

    code = cli.main(["ingest", "--date", DAY.isoformat(), "--file", str(path)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    loaded = sql("select count(*) from raw.contributions")[0][0] - before
    quarantine = dict(sql("select source_line, array_to_string(reasons, ' | ') from raw.contributions_quarantine"))
    steps = sql("select status, rows_in, rows_loaded, rows_rejected, error from meta.etl_run "
                "where step = 'ingest' order by id desc limit 1")
    if not case.read:  # an argument refused before any work: nothing recorded
        assert code == 1 and steps == [] and (loaded, quarantine) == (0, {})
        [line] = err.strip().splitlines()
        assert case.refused and case.refused in line and line.startswith("contribflow ingest: error: --file ")
        assert sql("select count(*) from meta.source_file where file_date = %s", (DAY,)) == [(0,)]
        return
    status, rows_in, rows_loaded, rows_rejected, error = steps[0]

    if case.refused:
        assert code == 1
        [line] = err.strip().splitlines()
        assert case.refused in line and line.startswith("contribflow ingest: error: ")
        assert "TAXP_63976" not in line  # a headerless file's first row is never quoted
        assert (loaded, quarantine) == (0, {})
        assert status == "FAILED" and case.refused in error
        ledger = sql("select outcome, detail from meta.source_file")
        assert ledger == ([("REFUSED", error)] if case.read else [])
        return

    assert code == 0, err
    assert status == "SUCCESS"
    assert (loaded, len(quarantine)) == (case.loaded, case.quarantined)
    assert (rows_loaded, rows_rejected) == (case.loaded, case.quarantined)
    assert rows_in == _records(path) == case.loaded + case.quarantined + case.already
    for line, reason in case.reasons.items():
        assert line in quarantine and re.search(re.escape(reason), quarantine[line]), (line, quarantine)
    issues = sql("select count(distinct source_line) from meta.data_quality_issue")[0][0]
    assert issues == case.quarantined
    if case.check:
        case.check(sql)


def test_the_readme_documents_every_case():
    page = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    section = page.split("## Hostile files", 1)[1].split("\n## ", 1)[0]
    assert len(CASES) >= 15
    missing = [c.name for c in CASES if f"`{c.name}`" not in section]
    assert missing == []
