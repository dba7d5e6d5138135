"""Row-level problems stay row-level (issue 25, observation 5): every value validation admits is
stored, and a row that cannot be stored is quarantined with a reason, never a crash of the file.

1. A table of boundary values for every column goes through the CLI with the compiled encoder
   and with the Python one (one row a chunk, so that each plain row meets the encoder): each row
   ends loaded, reading back equal, or quarantined with the rule the table names.
2. The safety net (ingest._Load._salvage), with validation switched off so that values raw
   cannot store reach the encoders and PostgreSQL: each row ends loaded or quarantined as
   ``not_storable``, as PostgreSQL's own ``pg_input_is_valid`` says of its values.
3. A property: any row validation accepts is stored and reads back equal (hypothesis).
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contribflow import cli, contract
from contribflow.contract import COLUMNS
from contribflow.ingest import load as ingest
from contribflow.ingest.validate import is_calendar_date

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 11, 20)
GOOD = {"declaration_id": "D", "taxpayer_id": "TAXP_12345", "event_date": "2026-11-01", "amount": "1.00",
        "currency": "EUR", "contribution_type": "INCOME_TAX", "status": "DUE", "country": "LU"}

LOADED = None
BOUNDARIES = [  # (column, value as it stands in the file, None when it loads / the rule that quarantines it)
    ("amount", "0", LOADED), ("amount", "0.0", LOADED), ("amount", "00.5", LOADED),
    ("amount", "999999999999.99", LOADED), ("amount", "999999999999", LOADED),
    ("amount", "1000000000000", "amount_two_decimals_max_12_digits"),
    ("amount", "0.001", "amount_two_decimals_max_12_digits"), ("amount", "-0.00", "amount_not_negative"),
    ("amount", "1e3", "amount_is_decimal_number"), ("amount", ".5", "amount_is_decimal_number"),
    ("event_date", "0001-01-01", LOADED), ("event_date", "9999-12-31", LOADED), ("event_date", "2024-02-29", LOADED),
    ("event_date", "2000-02-29", LOADED), ("event_date", "1900-02-29", "real_calendar_date"),
    ("event_date", "0000-01-01", "date_in_range"), ("event_date", "10000-01-01", "iso_date"),
    ("event_date", "2023-02-29", "real_calendar_date"), ("event_date", "2026-04-31", "real_calendar_date"),
    ("declaration_id", "D" * 64, LOADED), ("declaration_id", "D" * 65, "identifier_too_long"),
    ("declaration_id", "Décl-ü_ß", LOADED), ("declaration_id", "D\U0001F600\U0001D11E", LOADED),
    ("declaration_id", "\U0001F600" * 64, LOADED), ("declaration_id", "D\\1", LOADED), ("declaration_id", "\\N", LOADED),
    ("declaration_id", "D\\.", LOADED), ("declaration_id", '"D,1"', LOADED), ("declaration_id", '"D""q"', LOADED),
    ("declaration_id", "=D", "identifier_formula_prefix"), ("declaration_id", '"D\t1"', "identifier_control_character"),
    ("taxpayer_id", "T" * 64, LOADED), ("taxpayer_id", "Ünïcödé", LOADED), ("taxpayer_id", "T\U0001F642", LOADED),
    ("taxpayer_id", "T\\x", LOADED), ("taxpayer_id", '"T,""q"', LOADED), ("taxpayer_id", "\u3000T", "identifier_surrounding_whitespace"),
    ("taxpayer_id", '"T\x00"', "identifier_control_character"), ("taxpayer_id", "", "not_null"),
    ("currency", "EUR", LOADED), ("currency", "eur", "accepted_values"),
    ("contribution_type", "REFUND", LOADED), ("status", "CANCELLED", LOADED), ("country", "BE", LOADED),
]


def _csv_value(text: str) -> str:
    """A value as it stands in a CSV field (the table writes quoted fields quoted already)."""
    return text[1:-1].replace('""', '"') if text.startswith('"') and text.endswith('"') and len(text) > 1 else text


def _write(landing: Path, rows: list[tuple[str, str]]) -> tuple[Path, list[tuple[int, dict[str, str]]]]:
    """A file with one row per (column, value); each row a distinct declaration (unless the value is
    the declaration id); each row's first physical line and its values as a reader reads them."""
    landing.mkdir(parents=True, exist_ok=True)
    lines, values, line = [",".join(COLUMNS)], [], 2
    for n, (column, value) in enumerate(rows, 1):
        row = {**GOOD, "declaration_id": f"D{n:04d}", column: value}
        lines.append(",".join(row[c] for c in COLUMNS))
        values.append((line, {c: _csv_value(row[c]) for c in COLUMNS}))
        line += 1 + lines[-1].count("\n")
    path = landing / contract.file_name(DAY)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, values


def _outcome(sql, path: Path) -> tuple[dict[int, tuple], dict[int, list[str]]]:
    loaded = {r[0]: r[1:] for r in sql(
        """select source_line, declaration_id, taxpayer_id, event_date::text, amount::text, currency, contribution_type,
                  status, country, record_hash = raw.record_hash(declaration_id, taxpayer_id, event_date, amount,
                                                                 currency, contribution_type, status, country)
             from raw.contributions where source_file = %s""", (path.name,))}
    quarantined = dict(sql("select source_line, reasons from raw.contributions_quarantine where source_file = %s",
                           (path.name,)))
    return loaded, quarantined


def _as_stored(values: dict[str, str]) -> tuple:
    """The typed values raw must hold for a row's text (dates and amounts as PostgreSQL prints them),
    computed apart from ingest."""
    return (values["declaration_id"], values["taxpayer_id"], dt.date.fromisoformat(values["event_date"]).isoformat(),
            str(decimal.Decimal(values["amount"]).quantize(decimal.Decimal("0.01"))), values["currency"],
            values["contribution_type"], values["status"], values["country"], True)


@pytest.mark.parametrize("encoder", ["compiled", "python"])
def test_every_boundary_value_is_loaded_and_reads_back_or_quarantined_with_its_rule(
        database, sql, monkeypatch, capsys, encoder):
    assert ingest._copyrows is not None, "the compiled encoder must be built here (tests/test_copyrows.py)"
    if encoder == "python":
        monkeypatch.setattr(ingest, "_copyrows", None)
    monkeypatch.setenv("CONTRIBFLOW_CHUNK_ROWS", "1")  # each plain row a chunk of its own: the encoder's
    monkeypatch.setenv("CONTRIBFLOW_REJECT_THRESHOLD", "1.0")
    path, values = _write(Path(database["CONTRIBFLOW_LANDING_DIR"]), [(c, v) for c, v, _ in BOUNDARIES])
    assert cli.main(["init-db"]) == 0
    assert cli.main(["ingest", "--date", DAY.isoformat(), "--file", str(path)]) == 0, capsys.readouterr().err
    loaded, quarantined = _outcome(sql, path)
    assert set(loaded) | set(quarantined) == {line for line, _ in values} and not set(loaded) & set(quarantined)
    for (column, value, rule), (line, row) in zip(BOUNDARIES, values):
        if rule is LOADED:
            assert loaded.get(line) == _as_stored(row), (column, value, quarantined.get(line))
        else:
            assert line in quarantined, (column, value, loaded.get(line))
            assert any(r.startswith(f"{column}: {rule}") for r in quarantined[line]), (column, value, quarantined[line])
    ledger = sql("select outcome, rows_in, rows_loaded, rows_already_in_raw, rows_rejected, rows_withheld "
                 "from meta.source_file")
    assert ledger == [("LOADED", len(BOUNDARIES), len(loaded), 0, len(quarantined), 0)]


SAFETY_NET = [  # (column, value): validation is off; PostgreSQL decides
    ("event_date", "0000-01-01"), ("event_date", "2023-02-29"), ("event_date", "10000-01-01"),
    ("event_date", "2026-13-01"), ("event_date", "0001-01-01"), ("event_date", "yesterday"),
    ("amount", "1234567890123"), ("amount", "999999999999.99"), ("amount", "-1.00"), ("amount", "abc"),
    ("amount", "0"), ("taxpayer_id", '"T\x00"'), ("taxpayer_id", '"T\tX"'), ("taxpayer_id", '"T\nX"'),
    ("declaration_id", "D" * 65), ("currency", "USD"), ("status", "DUE"),
]


@pytest.mark.parametrize("encoder", ["compiled", "python"])
@pytest.mark.parametrize("chunk_rows", ["1", "1000"])
def test_the_safety_net_stores_what_postgresql_takes_and_quarantines_the_rest_as_not_storable(
        database, sql, monkeypatch, capsys, encoder, chunk_rows):
    """With validation switched off, rows PostgreSQL cannot store reach the COPY (and the compiled
    encoder, which refuses some): the file still loads, each row loaded or quarantined."""
    if encoder == "python":
        monkeypatch.setattr(ingest, "_copyrows", None)
    monkeypatch.setattr(ingest, "validate_chunk", lambda frame, duplicate, source: {})
    monkeypatch.setenv("CONTRIBFLOW_CHUNK_ROWS", chunk_rows)
    monkeypatch.setenv("CONTRIBFLOW_REJECT_THRESHOLD", "1.0")
    path, values = _write(Path(database["CONTRIBFLOW_LANDING_DIR"]), SAFETY_NET)
    assert cli.main(["init-db"]) == 0
    code = cli.main(["ingest", "--date", DAY.isoformat(), "--file", str(path)])
    out = capsys.readouterr()
    assert code == 0 and "Traceback" not in out.err, out.err
    loaded, quarantined = _outcome(sql, path)
    assert set(loaded) | set(quarantined) == {line for line, _ in values} and not set(loaded) & set(quarantined)

    def storable(row: dict[str, str]) -> bool:  # PostgreSQL's own verdict on each typed value
        return "\x00" not in "".join(row.values()) and sql(
            "select pg_input_is_valid(%s, 'date') and pg_input_is_valid(%s, 'numeric(14,2)')",
            (row["event_date"], row["amount"]))[0][0]

    for (column, value), (line, row) in zip(SAFETY_NET, values):
        if storable(row):
            assert line in loaded, (column, value, quarantined.get(line))
            assert loaded[line][:4] == (row["declaration_id"], row["taxpayer_id"], *sql(
                "select %s::date::text, %s::numeric(14,2)::text", (row["event_date"], row["amount"]))[0])
        else:
            assert line in quarantined, (column, value)
            [reason] = quarantined[line]
            assert reason.startswith((f"{column}: not_storable (", "not_storable: ")), (column, reason)
            assert value.strip('"') not in reason  # the database's message, without the value
    assert "out of range" in " ".join(r for rs in quarantined.values() for r in rs)
    steps = sql("select rows_in, rows_loaded, rows_rejected, details from meta.etl_run where step = 'ingest'")
    [(rows_in, rows_loaded, rows_rejected, details)] = steps
    assert (rows_in, rows_loaded, rows_rejected) == (len(SAFETY_NET), len(loaded), len(quarantined))
    assert details["rows_not_storable"] == len(quarantined)


_IDENTIFIER = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=64).filter(
    lambda v: not re.search(r"[\x00-\x1f\x7f-\x9f]", v) and v == v.strip() and v[0] not in "=+-@")
_AMOUNT = st.builds(lambda whole, cents, form: form(whole, cents),
                    st.integers(0, 10 ** 12 - 1), st.integers(0, 99),
                    st.sampled_from([lambda w, c: f"{w}.{c:02d}", lambda w, c: f"{w}", lambda w, c: f"{w}.{c // 10}"]))
_DATE = st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31)).map(dt.date.isoformat)
_ROW = st.fixed_dictionaries({
    "declaration_id": _IDENTIFIER, "taxpayer_id": _IDENTIFIER, "event_date": _DATE, "amount": _AMOUNT,
    "currency": st.sampled_from(contract.CURRENCIES), "contribution_type": st.sampled_from(contract.CONTRIBUTION_TYPES),
    "status": st.sampled_from(contract.STATUSES), "country": st.sampled_from(contract.COUNTRIES)})


def _field(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if re.search(r'[,"\r\n]', value) else value


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_ROW, min_size=1, max_size=30, unique_by=lambda r: r["declaration_id"]))
def test_any_row_validation_admits_is_stored_and_reads_back_equal(database, sql, monkeypatch, rows):
    monkeypatch.setenv("CONTRIBFLOW_REJECT_THRESHOLD", "0")  # one row quarantined would fail the file
    landing = Path(database["CONTRIBFLOW_LANDING_DIR"])
    landing.mkdir(parents=True, exist_ok=True)
    if not sql("select to_regclass('meta.source_file') is not null")[0][0]:
        assert cli.main(["init-db"]) == 0
    sql("truncate meta.source_file cascade")
    sql("alter table raw.contributions disable trigger contributions_append_only")
    sql("delete from raw.contributions")
    sql("alter table raw.contributions enable trigger contributions_append_only")
    path = landing / contract.file_name(DAY)
    path.write_text("\n".join([",".join(COLUMNS), *(",".join(_field(r[c]) for c in COLUMNS) for r in rows)]) + "\n",
                    encoding="utf-8")
    assert cli.main(["ingest", "--date", DAY.isoformat(), "--file", str(path)]) == 0
    stored = sql("""select declaration_id, taxpayer_id, event_date::text, amount::text, currency, contribution_type, status,
                           country, record_hash = raw.record_hash(declaration_id, taxpayer_id, event_date, amount,
                                                                  currency, contribution_type, status, country)
                      from raw.contributions order by source_line""")
    assert stored == [_as_stored(r) for r in rows]
    assert all(is_calendar_date(r["event_date"]) for r in rows)


def test_an_identifier_raw_cannot_index_is_refused_by_the_contract_not_by_the_load(database, sql, monkeypatch):
    """A declaration id of 512 astral characters (2048 bytes) is the longest a deployment may allow,
    and raw's unique index holds it."""
    monkeypatch.setenv("CONTRIBFLOW_CONTRACT_OVERRIDES", '{"columns": {"declaration_id": {"max_length": 512}}}')
    landing = Path(database["CONTRIBFLOW_LANDING_DIR"])
    path, _ = _write(landing, [("declaration_id", "\U0001F600" * 512), ("declaration_id", "\U0001F601" * 513)])
    assert cli.main(["init-db"]) == 0
    assert cli.main(["ingest", "--date", DAY.isoformat(), "--file", str(path)]) == 1  # 1 of 2 rows: over 5 %
    monkeypatch.setenv("CONTRIBFLOW_REJECT_THRESHOLD", "1.0")
    assert cli.main(["ingest", "--date", DAY.isoformat(), "--file", str(path)]) == 0
    assert sql("select length(declaration_id), octet_length(declaration_id) from raw.contributions") == [(512, 2048)]
    assert sql("select reasons from raw.contributions_quarantine") == [
        (["declaration_id: identifier_too_long ([513 characters: non-ASCII])"],)]
    with pytest.raises(psycopg.errors.ProgramLimitExceeded):  # what the bound keeps away: 700 such characters
        sql("""insert into raw.contributions (declaration_id, taxpayer_id, taxpayer_key, event_date, amount, currency,
                      contribution_type, status, country, file_date, source_file, source_line, run_id, record_hash)
               select string_agg(chr(65536 + (random() * 100000)::int), ''), 'T', 'k', '2026-01-01', 1, 'EUR',
                      'REFUND', 'DUE', 'LU', '2026-01-01', 'f', 1, 'r', gen_random_uuid()
                 from generate_series(1, 700)""")
