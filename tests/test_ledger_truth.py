"""The ledger tells the truth (issue 25, observations 6 and 8): for every outcome its row and the
step's counts say what became of each row, a re-sent export is noticed, and a re-ingest after a
rejection stores the day's quality issues once.

Every expected count below is computed from the files the test writes (which rows are bad, which
the warehouse holds already), never read back from ingest.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

from contribflow import cli
from contribflow.ingest import load as ingest
from contribflow.settings import Settings, SettingsError
from contribflow.step import StepRun

from helpers import good_row, write_source

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 11, 2)
NEXT = dt.date(2026, 11, 3)


def _ingest(path: Path, day: dt.date = DAY) -> int:
    return cli.main(["ingest", "--date", day.isoformat(), "--file", str(path)])


def _rows(first: int, count: int, bad: set[int] = frozenset()) -> list[list[str]]:
    """Rows ``first``..``first + count - 1``; those numbered in ``bad`` with a negative amount."""
    rows = [good_row(n) for n in range(first, first + count)]
    for row in rows:
        if int(row[0][-6:]) in bad:
            row[3] = "-1.0"
    return rows


def _ledger(sql, name: str | None = None) -> list[tuple]:
    return sql("""select file_name, file_date, outcome, rows_in, rows_loaded, rows_already_in_raw, rows_rejected,
                         rows_withheld from meta.source_file where %s::text is null or file_name = %s order by id""",
               (name, name))


def _step(sql) -> tuple:
    return sql("""select status, rows_in, rows_loaded, rows_rejected, details from meta.etl_run
                   where step = 'ingest' order by id desc limit 1""")[0]


def _counts_add_up(sql) -> None:
    assert sql("""select count(*) from meta.source_file where rows_in is not null and
                  rows_in <> rows_loaded + rows_already_in_raw + rows_rejected + rows_withheld""") == [(0,)]
    for status, rows_in, loaded, rejected, d in sql(
            "select status, rows_in, rows_loaded, rows_rejected, details from meta.etl_run "
            "where step = 'ingest' and rows_in is not null"):
        assert rows_in == (loaded + rejected + d["rows_already_loaded"] + d["rows_quarantined_earlier"]
                           + d["rows_withheld"]), (status, rows_in, loaded, rejected, d)


def _archive(path: Path, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir(exist_ok=True)
    shutil.move(path, archive / f"{path.name}.{len(list(archive.iterdir()))}")


def test_a_loaded_file_counts_what_it_loaded_what_raw_held_and_what_it_quarantined(
        database, sql, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CONTRIBFLOW_REJECT_THRESHOLD", "0.2")
    landing = Path(database["CONTRIBFLOW_LANDING_DIR"])
    assert cli.main(["init-db"]) == 0
    first = write_source(landing, DAY, _rows(1, 10))
    assert _ingest(first) == 0
    _archive(first, tmp_path)
    # A corrected file for the same date: 5 rows raw holds, 6 new, 2 bad.
    rows = _rows(1, 5) + _rows(11, 8, bad={12, 15})
    second = write_source(landing, DAY, rows)
    capsys.readouterr()
    assert _ingest(second) == 0
    assert "13 rows in, 6 loaded, 2 quarantined, 5 already in raw" in capsys.readouterr().out
    assert _ledger(sql)[-1] == (second.name, DAY, "LOADED", 13, 6, 5, 2, 0)
    status, rows_in, loaded, rejected, details = _step(sql)
    assert (status, rows_in, loaded, rejected, details["rows_already_loaded"]) == ("SUCCESS", 13, 6, 2, 5)
    assert sql("select count(*) from raw.contributions") == [(16,)]
    _counts_add_up(sql)


def test_a_rejected_file_loads_nothing_and_says_which_rows_were_withheld(database, sql, tmp_path, monkeypatch, capsys):
    landing = Path(database["CONTRIBFLOW_LANDING_DIR"])
    assert cli.main(["init-db"]) == 0
    first = write_source(landing, DAY, _rows(1, 4))
    assert _ingest(first) == 0
    _archive(first, tmp_path)
    # 10 rows: 2 raw holds (rows 1, 2), 3 bad (30 % > 5 %), 5 valid new ones.
    rows = _rows(1, 2) + _rows(101, 8, bad={101, 102, 103})
    path = write_source(landing, DAY, rows)
    assert _ingest(path) == 1
    assert _ledger(sql)[1:] == [(path.name, DAY, "REJECTED", 10, 0, 2, 3, 5)]  # after the first file's
    status, rows_in, loaded, rejected, details = _step(sql)
    assert (status, rows_in, loaded, rejected) == ("FAILED", 10, 0, 3)
    assert (details["rows_already_loaded"], details["rows_withheld"]) == (2, 5)
    assert sql("select count(*) from raw.contributions") == [(4,)]
    issues = sql("select source_line, rule from meta.data_quality_issue order by 1, 2")
    assert {line for line, _ in issues} == {4, 5, 6}  # the three bad rows' lines, each rule it broke

    # The runbook's "re-process a rejected day": the same file, a higher threshold for one run.
    monkeypatch.setenv("CONTRIBFLOW_REJECT_THRESHOLD", "0.5")
    capsys.readouterr()
    assert _ingest(path) == 0
    assert "10 rows in, 5 loaded, 3 quarantined, 2 already in raw" in capsys.readouterr().out
    assert _ledger(sql)[1:] == [(path.name, DAY, "REJECTED", 10, 0, 2, 3, 5),
                                (path.name, DAY, "LOADED", 10, 5, 2, 3, 0)]
    # Each quality issue once, though two runs found it ...
    assert sql("select source_line, rule from meta.data_quality_issue order by 1, 2") == issues
    # ... and the audit of the day counts each once.
    capsys.readouterr()
    assert cli.main(["audit", "--date", DAY.isoformat(), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sum(i["issues"] for i in report["quality_issues"]) == len(issues)
    assert {i["rule"]: i["rows"] for i in report["quality_issues"]} == {rule: 3 for _, rule in issues}
    assert [(f["outcome"], f["rows_withheld"]) for f in report["files"]][-2:] == [("REJECTED", 5), ("LOADED", 0)]
    _counts_add_up(sql)


def test_a_refused_file_has_no_counts(database, sql):
    landing = Path(database["CONTRIBFLOW_LANDING_DIR"])
    assert cli.main(["init-db"]) == 0
    assert _ingest(write_source(landing, DAY, [], raw=b"")) == 1
    assert [r[2:] for r in _ledger(sql)] == [("REFUSED", None, None, None, None, None)]
    assert _step(sql)[:4] == ("FAILED", None, None, None)


@pytest.mark.parametrize("front", ["cli", "heavy"], ids=["light-front", "under-the-lock"])
def test_yesterdays_export_resent_under_todays_name_is_recorded_as_duplicate_with_a_warning(
        database, sql, monkeypatch, capsys, front):
    monkeypatch.setenv("CONTRIBFLOW_REJECT_THRESHOLD", "0.1")
    landing = Path(database["CONTRIBFLOW_LANDING_DIR"])
    assert cli.main(["init-db"]) == 0
    rows = _rows(1, 30, bad={7, 8})
    yesterday = write_source(landing, DAY, rows)
    assert _ingest(yesterday) == 0
    raw_before = sql("select count(*), max(ingestion_ts) from raw.contributions")
    today = landing / yesterday.name.replace("20261102", "20261103")
    today.write_bytes(yesterday.read_bytes())
    capsys.readouterr()
    if front == "cli":
        assert _ingest(today, NEXT) == 0
        out = capsys.readouterr().out
        assert (f"ingest: warning: {today.name} has the same content as {yesterday.name}, loaded for 2026-11-02"
                in out and "recorded as DUPLICATE; nothing loaded (30 rows: 28 already in raw, "
                "2 quarantined when first seen)" in out), out
    else:  # the same content loaded meanwhile, found again under the raw-writer lock
        settings = Settings.from_env()
        with StepRun(settings, "ingest", NEXT) as step:
            ingest.load_into(step, settings, NEXT, today)
    assert _ledger(sql, today.name) == [(today.name, NEXT, "DUPLICATE", 30, 0, 28, 2, 0)]
    assert sql("select count(*), max(ingestion_ts) from raw.contributions") == raw_before
    assert sql("select count(*) from raw.contributions where file_date = %s", (NEXT,)) == [(0,)]
    [(rule, severity, detail)] = sql("select rule, severity, failing_value from meta.data_quality_issue "
                                     "where source_file = %s", (today.name,))
    assert (rule, severity) == ("resent_file", "warning") and yesterday.name in detail
    status, rows_in, loaded, rejected, details = _step(sql)
    assert (status, rows_in, loaded, rejected) == ("SUCCESS", 30, 0, 0)
    assert (details["rows_already_loaded"], details["rows_quarantined_earlier"], details["duplicate_of"]) == (
        28, 2, yesterday.name)

    # Run again: the re-send is recorded once; the same file for its own date is still a no-op.
    assert _ingest(today, NEXT) == 0
    assert _ingest(yesterday) == 0
    assert "was already ingested by run" in capsys.readouterr().out
    assert [r[2] for r in _ledger(sql)] == ["LOADED", "DUPLICATE"]
    assert sql("select count(*) from meta.data_quality_issue where rule = 'resent_file'") == [(1,)]
    _counts_add_up(sql)


def test_a_resent_export_is_refused_when_the_deployment_says_so(database, sql, monkeypatch, capsys):
    landing = Path(database["CONTRIBFLOW_LANDING_DIR"])
    assert cli.main(["init-db"]) == 0
    yesterday = write_source(landing, DAY, _rows(1, 5))
    assert _ingest(yesterday) == 0
    today = landing / yesterday.name.replace("20261102", "20261103")
    today.write_bytes(yesterday.read_bytes())
    monkeypatch.setenv("CONTRIBFLOW_RESENT_FILE", "refuse")
    capsys.readouterr()
    assert _ingest(today, NEXT) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("contribflow ingest: error: ") and yesterday.name in line and "RESENT_FILE=refuse" in line
    assert [r[2:] for r in _ledger(sql, today.name)] == [("REFUSED", None, None, None, None, None)]
    assert sql("select detail from meta.source_file where outcome = 'REFUSED'")[0][0] in line
    assert _step(sql)[0] == "FAILED"
    assert sql("select count(*) from raw.contributions where file_date = %s", (NEXT,)) == [(0,)]


def test_the_resent_file_setting_is_checked_at_start():
    assert Settings.from_env({}).resent_file == "warn"
    assert Settings.from_env({"CONTRIBFLOW_RESENT_FILE": "refuse"}).resent_file == "refuse"
    for bad in ("ignore", " Refuse ", "REFUSE"):  # one spelling, as every choice setting (settings._choice)
        with pytest.raises(SettingsError, match=f"CONTRIBFLOW_RESENT_FILE={bad!r} is not one of warn, refuse"):
            Settings.from_env({"CONTRIBFLOW_RESENT_FILE": bad})
