"""The pipeline end to end against a real PostgreSQL (issue: the pipeline, end to end)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

import pytest

from contribflow import cli
from contribflow.local import runner
from contribflow.settings import Settings

from conftest import TEST_KEY
from helpers import good_row, write_source

pytestmark = pytest.mark.integration

DAY1 = dt.date(2026, 11, 24)
DAY2 = dt.date(2026, 11, 25)

COUNTS = """
select (select count(*) from raw.contributions),
       (select count(*) from raw.contributions_quarantine),
       (select count(*) from marts.fct_contributions),
       (select count(*) from marts.dim_taxpayer)
"""


def run_day(day: dt.date, rows: int = 2000, defect_rate: float = 0.01) -> list[runner.StepResult]:
    settings = Settings.from_env()
    return runner.run_graph(settings, {"run-date": day.isoformat(), "rows": str(rows),
                                       "defect-rate": str(defect_rate)})


def states(results: list[runner.StepResult]) -> dict[str, str]:
    return {r.stage: r.state for r in results}


def test_full_run_for_a_date_loads_raw_and_marts_and_audits_every_step(database, sql):
    results = run_day(DAY1)
    assert states(results) == {s: "ok" for s in
                               ("init-db", "generate", "pick", "ingest", "dbt-build", "dbt-test", "publish", "finish")}
    raw, quarantined, fct, dim = sql(COUNTS)[0]
    assert raw + quarantined == 2000
    assert 0 < quarantined < 100
    assert fct == raw  # day one: every raw row is a distinct declaration
    assert dim > 0
    steps = sql("select step, status, run_id from meta.etl_run order by id")
    assert [s for s, _, _ in steps] == ["init-db", "generate", "pick", "ingest", "dbt-build", "dbt-test", "publish", "finish"]
    assert {st for _, st, _ in steps} == {"SUCCESS"}
    assert len({r for _, _, r in steps}) == 1
    ingest = sql("select rows_in, rows_loaded, rows_rejected, source_file from meta.etl_run where step='ingest'")[0]
    assert ingest == (2000, raw, quarantined, "contributions_20261124.csv")
    ledger = sql("select file_name, outcome, rows_in, length(sha256) from meta.source_file")
    assert ledger == [("contributions_20261124.csv", "LOADED", 2000, 64)]
    tests = sql("select count(*) filter (where status='pass'), count(*) from meta.dbt_node_result where step='dbt-test'")[0]
    assert tests[0] == tests[1] > 10


def test_the_same_date_twice_changes_no_row_count(database, sql):
    run_day(DAY1)
    before = sql(COUNTS)[0]
    results = run_day(DAY1)
    assert states(results)["ingest"] == "ok"
    assert sql(COUNTS)[0] == before
    second = sql("select rows_loaded, details->>'already_ingested_by' from meta.etl_run "
                 "where step='ingest' order by id desc limit 1")[0]
    assert second[0] == 0 and second[1] is not None


def test_a_later_file_updates_a_declaration_status_without_duplicates(database, sql):
    run_day(DAY1, defect_rate=0)
    due_before = sql("select count(*) from marts.fct_contributions where status = 'DUE'")[0][0]
    results = run_day(DAY2, defect_rate=0)
    assert states(results)["dbt-test"] == "ok"  # unique, not_null, relationships all hold
    resent = sql("""select r.declaration_id from raw.contributions r
                     where r.file_date = %s and r.declaration_id like %s""", (DAY2, f"DEC_{DAY1:%Y%m%d}_%"))
    assert resent, "day two re-sends declarations of day one"
    changed = sql("""select f.declaration_id, f.status, f.source_file
                       from marts.fct_contributions f
                       join raw.contributions old on old.declaration_id = f.declaration_id
                      where old.file_date = %s and old.status = 'DUE'
                        and f.file_date = %s""", (DAY1, DAY2))
    assert changed and all(status == "PAID" and src == "contributions_20261125.csv" for _, status, src in changed)
    assert sql("select count(*) - count(distinct declaration_id) from marts.fct_contributions")[0][0] == 0
    due_after = sql("select count(*) from marts.fct_contributions where status = 'DUE' and file_date = %s", (DAY1,))[0][0]
    assert due_after == due_before - len(changed)
    orphans = sql("""select count(*) from marts.fct_contributions f
                     left join marts.dim_taxpayer d using (taxpayer_key) where d.taxpayer_key is null""")
    assert orphans == [(0,)]


def test_bad_rows_are_quarantined_with_lines_and_reasons_and_nothing_is_lost(database, sql, tmp_path, monkeypatch):
    monkeypatch.setenv("CONTRIBFLOW_REJECT_THRESHOLD", "0.6")
    rows = [good_row(i) for i in range(1, 9)]
    rows[1][3] = "-5.00"          # line 3: negative amount
    rows[3][6] = "LOST"           # line 5: unknown status
    rows[4][2] = "2026-02-30"     # line 6: no such day
    rows[6][0] = rows[5][0]       # line 8: declaration_id repeated from line 7
    path = write_source(tmp_path / "landing", DAY1, rows + ["D99,12345,2026-11-01"])  # line 10: ragged
    assert cli.main(["init-db"]) == 0
    assert cli.main(["ingest", "--date", DAY1.isoformat(), "--file", str(path)]) == 0
    loaded = sql("select count(*) from raw.contributions")[0][0]
    quarantine = sql("select source_line, raw_line, reasons from raw.contributions_quarantine order by source_line")
    assert loaded == 4
    assert loaded + len(quarantine) == 9
    assert [q[0] for q in quarantine] == [3, 5, 6, 8, 10]
    assert quarantine[0][1] == ",".join(rows[1]) + "\n"
    reasons = {line: " ".join(r) for line, _, r in quarantine}
    assert "amount_not_negative" in reasons[3]
    assert "status: accepted_values" in reasons[5]
    assert "real_calendar_date" in reasons[6]
    assert "unique_in_file" in reasons[8]
    assert "field_count" in reasons[10]
    issues = sql("select source_line, rule, column_name, failing_value from meta.data_quality_issue order by source_line")
    assert (3, "amount_not_negative", "amount", "-5.00") in issues
    assert (5, "accepted_values", "status", "LOST") in issues
    assert {i[0] for i in issues} == {3, 5, 6, 8, 10}
    step = sql("select status, rows_in, rows_loaded, rows_rejected from meta.etl_run where step = 'ingest'")
    assert step == [("SUCCESS", 9, 4, 5)]


def test_too_many_bad_rows_fail_the_step_and_load_nothing(database, sql, tmp_path, monkeypatch):
    monkeypatch.setenv("CONTRIBFLOW_REJECT_THRESHOLD", "0.1")
    rows = [good_row(i) for i in range(1, 11)]
    rows[0][4] = rows[1][4] = "USD"
    path = write_source(tmp_path / "landing", DAY1, rows)
    assert cli.main(["init-db"]) == 0
    assert cli.main(["ingest", "--date", DAY1.isoformat(), "--file", str(path)]) == 1
    assert sql("select count(*) from raw.contributions") == [(0,)]
    assert sql("select count(*) from raw.contributions_quarantine") == [(2,)]
    assert sql("select outcome from meta.source_file") == [("REJECTED",)]
    status, error = sql("select status, error from meta.etl_run where step = 'ingest'")[0]
    assert status == "FAILED" and "2 of 10 rows failed validation" in error


@pytest.mark.parametrize(("content", "message"), [
    (b"", "the file is empty"),
    (b"declaration_id,taxpayer_id,event_date,amount\nD1,1,2026-11-01,1.00\n", "missing column(s) currency"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not valid UTF-8"),
])
def test_a_structurally_broken_file_is_refused_whole(database, sql, tmp_path, capsys, content, message):
    path = write_source(tmp_path / "landing", DAY1, [], raw=content)
    assert cli.main(["init-db"]) == 0
    assert cli.main(["ingest", "--date", DAY1.isoformat(), "--file", str(path)]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert sql("select count(*) from raw.contributions") == [(0,)]
    status, error = sql("select status, error from meta.etl_run where step = 'ingest'")[0]
    assert status == "FAILED" and message in error
    assert sql("select outcome from meta.source_file") == [("REFUSED",)]


def test_a_missing_file_fails_pick_with_the_expected_path(database, sql, capsys):
    assert cli.main(["init-db"]) == 0
    assert cli.main(["pick", "--date", DAY1.isoformat()]) == 1  # CONTRIBFLOW_LATE_DEADLINE_S=0: no wait
    err = capsys.readouterr().err
    assert "file for 2026-11-24 is late: expected " in err and "contributions_20261124.csv" in err
    assert sql("select status, error_class from meta.etl_run where step = 'pick'") == [("FAILED", "late")]


def test_analyst_marts_hold_no_raw_taxpayer_id(database, sql):
    run_day(DAY1, rows=500, defect_rate=0)
    columns = sql("select table_name, column_name from information_schema.columns where table_schema = 'marts'")
    assert columns and not [c for c in columns if "taxpayer_id" in c[1]]
    ids = {r[0] for r in sql("select distinct taxpayer_id from raw.contributions")}
    keys = {r[0] for r in sql("select taxpayer_key from marts.dim_taxpayer")}
    assert not ids & keys
    expected = {hmac.new(TEST_KEY.encode(), i.encode(), hashlib.sha256).hexdigest() for i in ids}
    assert keys == expected
    text = " ".join(str(v) for row in sql("select * from marts.fct_contributions") for v in row)
    assert not [i for i in ids if f" {i} " in f" {text} "]
