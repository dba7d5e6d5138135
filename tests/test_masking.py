"""No raw taxpayer id outside raw and the quarantine's raw text (issue 25, observation 7).

The rule (contribflow/redact.py): identifier values are described by length and character
classes; another column's failing value is quoted only when it cannot be a taxpayer id; a header
that is a data row is never quoted; database errors lose the values they quote. The unit tests
pin the rule and its SQL twin (migration 0011); the hostile day runs every defect the generator
knows, swapped columns, a headerless and a header-only file, hostile identifiers, a rejection, a
re-ingest and a re-send through the CLI (processes, JSON logs, OpenLineage file transport), builds
the marts and the evidence pack, and greps everything an auditor or an operator can read for
every raw taxpayer id of those files.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from contribflow import contract, redact
from contribflow.generate import DEFECTS, rows_for
from contribflow.ingest.reader import read_header

from conftest import ROOT

DAY = dt.date(2026, 11, 10)
BASE = contract.BASE


# --- the rule ------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("TAXP_63976", "[10 characters: uppercase, digits, punctuation]"),
    ("=1+1", "[4 characters: digits, punctuation]"),
    ("T\x1b[31m", "[6 characters: uppercase, lowercase, digits, punctuation, control characters]"),
    ("Jos\u00e9 \U0001F600", "[6 characters: uppercase, lowercase, spaces, non-ASCII]"),
    ("x", "[1 character: lowercase]"),
    ("", "[0 characters]"),
])
def test_a_value_is_described_by_its_length_and_character_classes(value, expected):
    assert redact.describe(value) == expected
    assert redact.DESCRIPTION.match(expected)
    assert value not in expected or value in ("", "x")


def _shown(column: str, value: str, ids=("TAXP_63976", "T9"), source=BASE) -> str | None:
    text, described = redact.FailingValues(source).shown(column, value, lambda: redact.TaxpayerIds(ids))
    return None if described else text


@pytest.mark.parametrize("column, value, quoted", [
    ("amount", "-12.50", True), ("amount", "10.505", True), ("amount", "1e309", True), ("amount", "abc", False),
    ("amount", "1234567890123", False),  # 13 digits in a row: a national id, not a mistyped amount
    ("amount", "TAXP_63976", False), ("amount", "x" * 70, False),
    ("event_date", "2026-02-30", True), ("event_date", "0000-01-01", True), ("event_date", "TAXP_10001", False),
    ("event_date", "730101123", False),
    ("status", "UNKNOWN", True), ("currency", "USD", True), ("country", "@SUM(A1)", False),
    ("status", "DUE\n", False), ("status", "TAXP", True),
    ("amount", "99.5T9", False),  # holds a taxpayer id of its chunk
    ("taxpayer_id", "=1+1", False), ("declaration_id", "D-1", False),
])
def test_a_failing_value_is_quoted_only_when_it_cannot_be_a_taxpayer_id(column, value, quoted):
    assert _shown(column, value) == (value if quoted else None)


def test_the_deployments_taxpayer_pattern_masks_what_looks_like_one():
    source = BASE.with_overrides({"columns": {"taxpayer_id": {"pattern": "^[A-Z]{3}$"}}})
    assert _shown("currency", "USD", source=source) is None
    assert _shown("currency", "USD") == "USD"


def test_a_header_is_quoted_only_when_it_is_not_a_data_row():
    def refusal(line: str) -> str:
        with pytest.raises(Exception) as refused:
            read_header(csv.reader(io.StringIO(line)), "f.csv")
        return str(refused.value)

    headerless = refusal("DEC_20261110_000001,TAXP_63976,2026-11-10,343.3,EUR,INCOME_TAX,DUE,LU\n")
    assert "looks like a data row" in headerless and "TAXP_63976" not in headerless and "DEC_" not in headerless
    renamed = refusal(",".join(contract.COLUMNS).replace("amount", "amount_eur") + "\n")
    assert "unexpected column(s) 'amount_eur'" in renamed
    odd = refusal(",".join(contract.COLUMNS) + ",TAXP_63976,comment\n")
    assert "'comment'" in odd and "TAXP_63976" not in odd and "column 9 [10 characters: uppercase, digits" in odd


@pytest.mark.integration
def test_the_sql_twins_of_the_rule_agree_with_python(database, sql):
    from contribflow import cli

    assert cli.main(["init-db"]) == 0
    values = ["TAXP_63976", "=1+1", "T\x1b[31m", "Jos\u00e9 \U0001F600", "x", "", "A]`\\^_[{~}|", "\x7f\x85\xa0",
              "-12.50", "1e309", "abc", "1234567890123", "2026-02-30", "730101123", "UNKNOWN", "DUE\n", "x" * 70]
    failing = redact.FailingValues(BASE)
    for value in values:
        assert sql("select meta.describe_value(%s)", (value,)) == [(redact.describe(value),)], value
        for column in contract.COLUMNS:
            if column in failing.identifiers:
                continue
            assert sql("select meta.quotable_failing_value(%s, %s)", (column, value)) == [
                (failing.quotable_shape(column, value),)], (column, value)


# --- the hostile day -------------------------------------------------------------------------------

SWAPPED = [  # a taxpayer id where another column's value belongs (ZZTX_: never generated, each only here)
    ("amount", "ZZTX_0001"), ("event_date", "ZZTX_0002"), ("status", "ZZTX_0003"), ("country", "ZZTX_0004"),
    ("declaration_id", "ZZTX_0005"), ("currency", "ZZTX_0006"), ("contribution_type", "ZZTX_0007"),
]
HOSTILE_IDS = ["=ZZTX_0011", "+ZZTX_0012", "-ZZTX_0013", "@ZZTX_0014", "ZZTX_0015\x1b[31m",
               " ZZTX_0016", "ZZTX_0017\u00a0", "ZZTX_0018\t", "ZZTX_" + "9" * 70, "ZZTX_0019,\"q\""]


def _line(values: dict[str, str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow([values[c] for c in contract.COLUMNS])
    return out.getvalue()


def _hostile_files(landing: Path) -> dict[str, Path]:
    landing.mkdir(parents=True, exist_ok=True)
    header = ",".join(contract.COLUMNS) + "\n"
    rows = list(rows_for(DAY, 400, seed=3, defect_rate=0.3))  # every defect of generate.DEFECTS
    body = "".join(_line(dict(zip(contract.COLUMNS, r))) for r in rows)
    base = dict(zip(contract.COLUMNS, rows[0]))
    for n, (column, taxpayer) in enumerate(SWAPPED):
        body += _line({**base, "declaration_id": f"SW{n}", column: taxpayer,
                       "taxpayer_id": base["amount"] if column == "amount" else base["taxpayer_id"]})
    for n, taxpayer in enumerate(HOSTILE_IDS):
        body += _line({**base, "declaration_id": f"HI{n}", "taxpayer_id": taxpayer})
    body += 'BADQ,"ZZTX_0020"x,2026-11-01,1.0,EUR,REFUND,DUE,LU\n'  # not CSV
    body += "SHORT,ZZTX_0021,2026-11-01\n"  # too few fields
    body += ",".join(["DUP0", "ZZTX_0022", *rows[1][2:]]) + "\n" + ",".join(["DUP0", "ZZTX_0023", *rows[2][2:]]) + "\n"
    files = {"day": landing / contract.file_name(DAY), "headerless": landing / contract.file_name(DAY + dt.timedelta(1))}
    files["day"].write_text(header + body, encoding="utf-8")
    files["headerless"].write_text(body, encoding="utf-8")
    files["header_only"] = landing / contract.file_name(DAY + dt.timedelta(2))
    files["header_only"].write_text(header, encoding="utf-8")
    files["resent"] = landing / contract.file_name(DAY + dt.timedelta(3))
    files["resent"].write_bytes(files["day"].read_bytes())
    files["odd_header"] = landing / contract.file_name(DAY + dt.timedelta(4))
    files["odd_header"].write_text(header.rstrip("\n") + ",ZZTX_0030\n" + "".join(
        line.rstrip("\n") + ",x\n" for line in body.splitlines(keepends=True)[:5]), encoding="utf-8")
    return files


def _taxpayer_ids(files: dict[str, Path]) -> set[str]:
    """Every raw taxpayer id in the files: the taxpayer_id field of each record (those that are
    ids, not a swapped-in amount or an empty field), and the ids swapped into other columns."""
    found = {taxpayer for _, taxpayer in SWAPPED} | {"ZZTX_0030"}
    position = contract.COLUMNS.index("taxpayer_id")
    amount = re.compile(BASE.column("amount").amount_regex).fullmatch
    for path in files.values():
        for record in csv.reader(io.StringIO(path.read_text(encoding="utf-8"))):
            if len(record) > position and record[position] not in contract.COLUMNS:
                value = record[position]
                if value.strip() and not amount(value):
                    found.add(value)
    assert {"ZZTX_0020", "ZZTX_0021", "ZZTX_0022", "ZZTX_0023"} - found == {"ZZTX_0020"}  # not CSV
    found.add("ZZTX_0020")
    return found


def _run(args: list[str], env: dict[str, str], outputs: list[str]) -> int:
    done = subprocess.run([sys.executable, "-m", "contribflow", *args], env=env, capture_output=True, text=True,
                          timeout=600)
    outputs += [done.stdout, done.stderr]
    return done.returncode


def _decoded(output: str) -> list[str]:
    """A process's output, and its JSON (a whole document, or one per line) with every string
    decoded, so that an escaped character of an id (\\u00a0) is found too."""
    texts = [output]
    for piece in [output, *output.splitlines()]:
        try:
            texts.append(json.dumps(json.loads(piece), ensure_ascii=False))
        except ValueError:
            continue
    return texts


def _meta_texts(sql) -> list[tuple[str, str, str]]:
    """(table, column, text) of every text, text[] and jsonb value of every meta table, and of the
    quarantine's reasons (which the auditor reads)."""
    columns = sql("""select table_schema, table_name, column_name from information_schema.columns
                      where (table_schema = 'meta' or (table_schema, table_name, column_name)
                             = ('raw', 'contributions_quarantine', 'reasons'))
                        and (data_type in ('text', 'character varying', 'jsonb', 'json') or udt_name = '_text')""")
    assert len(columns) > 20
    texts = []
    for schema, table, column in columns:
        for (value,) in sql(f'select "{column}"::text from {schema}.{table} where "{column}" is not null'):
            texts.append((f"{schema}.{table}", column, value))
    return texts


@pytest.mark.integration
def test_no_raw_taxpayer_id_of_a_hostile_day_reaches_meta_lineage_logs_audit_or_the_evidence_pack(
        database, sql, tmp_path):
    landing = Path(database["CONTRIBFLOW_LANDING_DIR"])
    files = _hostile_files(landing)
    needles = _taxpayer_ids(files)
    events = tmp_path / "lineage.ndjson"
    env = dict(os.environ, CONTRIBFLOW_LOG_FORMAT="json", OPENLINEAGE__TRANSPORT__TYPE="file",
               OPENLINEAGE__TRANSPORT__LOG_FILE_PATH=str(events), OPENLINEAGE__TRANSPORT__APPEND="true",
               PYTHONPATH=str(ROOT))
    outputs: list[str] = []
    day = DAY.isoformat()
    assert _run(["init-db"], env, outputs) == 0
    assert _run(["ingest", "--date", day, "--file", str(files["day"])], env, outputs) == 1  # over 5 %: REJECTED
    accept = dict(env, CONTRIBFLOW_REJECT_THRESHOLD="0.9")
    assert _run(["run", "--no-generate", "--date", day], accept, outputs) == 0  # the runbook's re-ingest, and dbt
    for name, code in (("headerless", 1), ("header_only", 0), ("resent", 0), ("odd_header", 1)):
        target = files[name]
        date = contract.file_date(target).isoformat()
        assert _run(["ingest", "--date", date, "--file", str(target)], env, outputs) == code, (name, outputs[-1])
    keep = dict(env, CONTRIBFLOW_SCHEMA_DRIFT="keep", CONTRIBFLOW_REJECT_THRESHOLD="1")
    assert _run(["ingest", "--date", contract.file_date(files["odd_header"]).isoformat(), "--file",
                 str(files["odd_header"])], keep, outputs) == 0
    last = (DAY + dt.timedelta(4)).isoformat()
    pack = tmp_path / "pack.html"
    assert _run(["audit", "--from", day, "--to", last, "--html", str(pack)], env, outputs) == 0
    for offset in range(5):
        date = (DAY + dt.timedelta(offset)).isoformat()
        assert _run(["audit", "--date", date], env, outputs) == 0
        assert _run(["audit", "--date", date, "--json"], env, outputs) == 0

    # The day really was hostile, and its ids really are where they belong (so a leak would be found).
    outcomes = sql("select file_name, outcome from meta.source_file order by id")
    assert [o for _, o in outcomes] == ["REJECTED", "LOADED", "REFUSED", "LOADED", "DUPLICATE", "REFUSED", "LOADED"]
    rules = {r for (r,) in sql("select distinct rule from meta.data_quality_issue")}
    assert {"not_null", "real_calendar_date", "amount_not_negative", "accepted_values", "unique_in_file",
            "identifier_formula_prefix", "identifier_control_character", "identifier_surrounding_whitespace",
            "identifier_too_long", "csv_syntax", "field_count", "resent_file", "schema_drift", "volume"} <= rules
    quarantine = " ".join(r for (r,) in sql("select raw_line from raw.contributions_quarantine"))
    assert all(t in quarantine for c, t in SWAPPED if c != "declaration_id") and "=ZZTX_0011" in quarantine
    assert sql("select count(*) from raw.contributions where declaration_id = 'ZZTX_0005'") == [(1,)]  # valid there
    assert sql("select count(*) from raw.contributions where taxpayer_id like 'TAXP_%%'")[0][0] > 200
    lineage = [json.loads(line) for line in events.read_text(encoding="utf-8").splitlines() if line.strip()]
    failed = [e for e in lineage if e["eventType"] == "FAIL" and e["job"]["name"] == "contribflow.ingest"]
    assert len(failed) == 3 and any("looks like a data row" in e["run"]["facets"]["errorMessage"]["message"]
                                    for e in failed)
    page = html.unescape(pack.read_text(encoding="utf-8"))
    assert "DUPLICATE" in page and "looks like a data row" in page
    logs = "\n".join(outputs)
    assert '"level": "ERROR"' in logs and "identifier_formula_prefix" in "".join(outputs)

    # No raw id anywhere else.
    places = [(f"{table}.{column}", text) for table, column, text in _meta_texts(sql)]
    places += [("lineage", json.dumps(e, ensure_ascii=False)) for e in lineage]
    places += [("output", text) for output in outputs for text in _decoded(output)]
    places += [("evidence pack", page)]
    leaks = sorted({(where, needle) for where, text in places for needle in needles if needle in text})
    assert leaks == []


# --- migration 0011 on what older versions stored --------------------------------------------------

@pytest.mark.integration
def test_migration_0011_completes_the_ledger_and_masks_what_older_versions_stored(database, sql, monkeypatch):
    from contribflow import cli
    from contribflow.warehouse import migrate

    shipped = migrate.migration_files()
    assert any(v.startswith("0011") for v, _ in shipped)
    monkeypatch.setattr(migrate, "migration_files", lambda: [m for m in shipped if m[0] < "0011"])
    assert cli.main(["init-db"]) == 0
    # What the code before 0011 wrote: a REJECTED row whose rows_loaded counted rows it undid, a
    # LOADED one, a refusal that quoted a headerless file's first row, quoted failing values,
    # issues stored twice by a re-ingest, and a step error quoting a value.
    first_row = "'DEC_20261110_000001', 'TAXP_63976', '2026-11-10', '343.3', 'EUR', 'INCOME_TAX', 'DUE', 'LU'"
    sql("""insert into meta.source_file (file_name, sha256, file_date, size_bytes, rows_in, rows_loaded,
                                         rows_rejected, outcome, detail, run_id) values
           ('contributions_20261110.csv', 'a', '2026-11-10', 10, 4480, 4132, 348, 'REJECTED', 'too many', 'r1'),
           ('contributions_20261110.csv', 'a', '2026-11-10', 10, 4480, 4000, 348, 'LOADED', null, 'r2'),
           ('contributions_20261111.csv', 'b', '2026-11-11', 10, null, null, null, 'REFUSED', %s, 'r3')""",
        ("contributions_20261111.csv: header does not match the source contract: missing column(s) "
         f"declaration_id, taxpayer_id; unexpected column(s) {first_row} (expected ...)",))
    for run in ("r1", "r2"):
        sql("""insert into meta.data_quality_issue (run_id, source_file, source_sha256, source_line, rule,
                                                    column_name, failing_value) values
               (%s, 'contributions_20261110.csv', 'a', 7, 'identifier_formula_prefix', 'taxpayer_id', '=TAXP_1'),
               (%s, 'contributions_20261110.csv', 'a', 8, 'accepted_values', 'status', 'TAXP_70002'),
               (%s, 'contributions_20261110.csv', 'a', 9, 'accepted_values', 'currency', 'USD')""", (run,) * 3)
    sql("""insert into raw.contributions_quarantine (source_sha256, source_line, source_file, file_date, raw_line,
                                                     reasons, run_id) values
           ('a', 7, 'contributions_20261110.csv', '2026-11-10', 'D,=TAXP_1,...', %s, 'r1')""",
        (["taxpayer_id: identifier_formula_prefix ('=TAXP_1')", "status: accepted_values ('TAXP_70002')",
          "currency: accepted_values ('USD')", "field_count: 3 fields, expected 8"],))
    sql("""insert into meta.etl_run (run_id, step, logical_date, status, error) values
           ('r0', 'ingest', '2026-11-09', 'FAILED', %s)""",
        ('date/time field value out of range: "0000-01-01"\nCONTEXT:  COPY contributions, line 3, column '
         'event_date: "0000-01-01"',))

    monkeypatch.setattr(migrate, "migration_files", lambda: shipped)
    assert cli.main(["init-db"]) == 0
    assert sql("""select outcome, rows_in, rows_loaded, rows_already_in_raw, rows_rejected, rows_withheld
                    from meta.source_file order by id""") == [
        ("REJECTED", 4480, 0, 0, 348, 4132), ("LOADED", 4480, 4000, 132, 348, 0),
        ("REFUSED", None, None, None, None, None)]
    [(detail,)] = sql("select detail from meta.source_file where outcome = 'REFUSED'")
    assert "TAXP_63976" not in detail and "DEC_20261110" not in detail and "missing column(s)" in detail
    assert sql("select distinct source_line, failing_value from meta.data_quality_issue order by 1") == [
        (7, "[7 characters: uppercase, digits, punctuation]"), (8, "[10 characters: uppercase, digits, punctuation]"),
        (9, "USD")]
    assert sql("select count(*) from meta.data_quality_issue") == [(6,)]  # no row of the trail is deleted
    assert sql("select reasons from raw.contributions_quarantine") == [(
        ["taxpayer_id: identifier_formula_prefix ([7 characters: uppercase, digits, punctuation])",
         "status: accepted_values ([10 characters: uppercase, digits, punctuation])",
         "currency: accepted_values ('USD')", "field_count: 3 fields, expected 8"],)]
    [(error,)] = sql("select error from meta.etl_run where run_id = 'r0'")
    assert "0000-01-01" not in error and "out of range" in error
    # The counts now add up, and the audit counts each issue of the re-ingested day once.
    with pytest.raises(Exception, match="source_file_counts_add_up"):
        sql("""insert into meta.source_file (file_name, sha256, file_date, size_bytes, rows_in, rows_loaded,
               rows_already_in_raw, rows_rejected, rows_withheld, outcome, run_id)
               values ('f', 'c', '2026-11-12', 1, 10, 10, 1, 0, 0, 'LOADED', 'r9')""")
    sql("insert into meta.etl_run (run_id, step, logical_date, status) values ('r1', 'ingest', '2026-11-10', 'FAILED'),"
        " ('r2', 'ingest', '2026-11-10', 'SUCCESS')")
    from contribflow.audit import report as audit_report
    from contribflow.db import connect
    from contribflow.settings import Settings

    with connect(Settings.from_env()) as conn:
        report = audit_report.collect(conn, DAY, 3600)
    assert sorted((i["rule"], i["column_name"], i["issues"]) for i in report["quality_issues"]) == [
        ("accepted_values", "currency", 1), ("accepted_values", "status", 1),
        ("identifier_formula_prefix", "taxpayer_id", 1)]


def test_every_defect_the_generator_knows_is_in_the_hostile_day():
    assert len(DEFECTS) >= 10


@pytest.mark.integration
def test_purge_masks_what_a_version_older_than_0011_wrote_after_the_upgrade(database, sql, capsys, people):
    """During an upgrade an older ingest may still write quoted values; purge-quarantine masks them
    for the files it purges (and leaves the later files' own text alone)."""
    from contribflow import cli

    assert cli.main(["init-db"]) == 0
    for day, sha in (("2026-11-01", "old"), ("2026-11-20", "new")):
        sql("""insert into meta.source_file (file_name, sha256, file_date, size_bytes, outcome, detail, run_id)
               values (%s, %s, %s, 1, 'REFUSED', %s, 'r')""",
            (f"contributions_{day.replace('-', '')}.csv", sha, day,
             "header does not match the source contract: unexpected column(s) 'TAXP_63976', 'amount_eur'"))
        sql("""insert into meta.data_quality_issue (run_id, source_file, source_sha256, source_line, rule,
                                                    column_name, failing_value) values
               ('r', 'f', %s, 2, 'accepted_values', 'status', 'TAXP_70002')""", (sha,))
        sql("""insert into meta.etl_run (run_id, step, logical_date, status, error)
               values ('r', 'ingest', %s, 'FAILED', 'invalid input syntax for type numeric: "TAXP_70003"')""", (day,))
    request = people.approved(["purge-quarantine", "--before", "2026-11-10", "--reason", "retention ended"])
    assert cli.main(["apply", str(request)]) == 0
    assert "other_values_masked=1, ledger_details_masked=1, step_errors_masked=1" in capsys.readouterr().out
    texts = sql("""select f.file_date::text, f.detail, i.failing_value, r.error from meta.source_file f
                     join meta.data_quality_issue i on i.source_sha256 = f.sha256
                     join meta.etl_run r on r.logical_date = f.file_date order by 1""")
    old, new = texts
    assert "TAXP_" not in "".join(old[1:]) and "'amount_eur'" in old[1]
    assert all("TAXP_" in text for text in new[1:])  # not purged yet: the later file's text is untouched
    # the masked rows were sealed into the audit chain: purge records its change there (migration 0015)
    assert sql("select relation, kind, reason like 'purge-quarantine --before 2026-11-10%%' from meta.audit_chain "
               "where kind <> 'seal' order by seq") == [
        ("meta.data_quality_issue", "reseal", True), ("meta.source_file", "reseal", True),
        ("meta.etl_run", "reseal", True)]
    assert cli.main(["verify"]) == 0 and capsys.readouterr().out.startswith("intact: ")
