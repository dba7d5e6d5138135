"""The operations runbook (docs/runbook.md), step by step, against a real PostgreSQL: every
procedure it gives an operator is run here with the commands it names."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from contribflow import cli
from contribflow.contract import COLUMNS

from helpers import good_row, write_source

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 11, 2)
NEXT = dt.date(2026, 11, 3)
ROOT = Path(__file__).resolve().parents[1]
HEADER = ",".join(COLUMNS)


def _ingest(path: Path, day: dt.date = DAY) -> int:
    return cli.main(["ingest", "--date", day.isoformat(), "--file", str(path)])


def _day_with_bad_rows(landing: Path, bad: int, total: int = 20, day: dt.date = DAY) -> Path:
    rows = [good_row(i) for i in range(1, total + 1)]
    for row in rows[:bad]:
        row[3] = "-1.0"  # amount_not_negative
    return write_source(landing, day, rows)


def test_reprocessing_a_day_after_the_reject_threshold_tripped(database, sql, tmp_path):
    landing = Path(database["CONTRIBFLOW_LANDING_DIR"])
    assert cli.main(["init-db"]) == 0
    path = _day_with_bad_rows(landing, bad=3)  # 15 % > 5 %
    assert _ingest(path) == 1
    assert sql("select outcome from meta.source_file") == [("REJECTED",)]
    assert sql("select count(*) from raw.contributions") == [(0,)]

    # Either the source re-sends a corrected file (a new sha256: the rejected one never counts as
    # loaded), which loads as any file does ...
    archived = tmp_path / "archive"
    archived.mkdir()
    shutil.move(path, archived / path.name)
    corrected = _day_with_bad_rows(landing, bad=0)
    assert _ingest(corrected) == 0
    assert sql("select outcome from meta.source_file order by id") == [("REJECTED",), ("LOADED",)]
    assert sql("select count(*) from raw.contributions") == [(20,)]


def test_accepting_a_rejected_file_with_a_threshold_for_that_run_only(database, sql, people, capfd):
    landing = Path(database["CONTRIBFLOW_LANDING_DIR"])
    assert cli.main(["init-db"]) == 0
    path = _day_with_bad_rows(landing, bad=3)
    assert _ingest(path) == 1
    # ... or the business accepts the file as it is: one run with a higher threshold, asked by an
    # operator, approved by another person, applied by the pipeline (which then publishes the day).
    issues = sql("select source_line, rule, column_name from meta.data_quality_issue order by 1, 2")
    operator, approver = people.add("operator"), people.add("approver")
    request = people.request(operator, ["reprocess", "--date", DAY.isoformat(), "--threshold", "0.2",
                                        "--reason", "the business accepts 15 % (ticket 9)"], capfd)
    assert people.cli(approver, ["approve", str(request)]) == 0
    assert people.cli(None, ["apply", str(request)]) == 0
    assert "rows_loaded=17" in capfd.readouterr().out
    assert sql("select count(*) from marts.fct_contributions") == [(17,)]  # published
    assert sql("select outcome, rows_loaded, rows_rejected, rows_withheld from meta.source_file order by id") == [
        ("REJECTED", 0, 3, 17), ("LOADED", 17, 3, 0)]
    assert sql("select count(*) from raw.contributions") == [(17,)]
    assert sql("select count(*) from raw.contributions_quarantine") == [(3,)]
    # The same issues of the same file, found again, are not stored again.
    assert sql("select source_line, rule, column_name from meta.data_quality_issue order by 1, 2") == issues


def test_correcting_and_reloading_quarantined_rows(database, sql, tmp_path, people, capfd):
    landing = Path(database["CONTRIBFLOW_LANDING_DIR"])
    assert cli.main(["init-db"]) == 0
    original = _day_with_bad_rows(landing, bad=1)
    assert _ingest(original) == 0
    assert sql("select count(*) from raw.contributions") == [(19,)]

    # 1. the quarantined lines, exactly as they arrived
    [(line, raw)] = sql("select source_line, raw_line from raw.contributions_quarantine "
                        "where source_file = %s order by source_line", (original.name,))
    assert line == 2 and raw.split(",")[3] == "-1.0"
    # 2. the corrected file for the same date: the header and the corrected lines only
    archived = tmp_path / "archive"
    archived.mkdir()
    shutil.move(original, archived / original.name)
    fixed = raw.replace(",-1.0,", ",1.0,")
    correction = write_source(landing, DAY, [fixed.rstrip("\n")], header=HEADER)
    # 3. request its load; another person approves; apply: only the corrected row is new
    operator, approver = people.add("operator"), people.add("approver")
    request = people.request(operator, ["reload-corrected", "--date", DAY.isoformat(), "--file", correction.name,
                                        "--reason", "amount corrected by the source (ticket 11)"], capfd)
    assert people.cli(approver, ["approve", str(request)]) == 0
    assert people.cli(None, ["apply", str(request)]) == 0
    assert "rows_linked=1" in capfd.readouterr().out
    assert sql("select declaration_id, quarantine_line, corrected_line from meta.correction_link") == [
        (fixed.split(",")[0], 2, 2)]
    assert sql("select count(*) from raw.contributions") == [(20,)]
    assert sql("select source_line, amount::text from raw.contributions where declaration_id = %s",
               (fixed.split(",")[0],)) == [(2, "1.00")]
    # the quarantine keeps the original bad row (append-only evidence), the ledger both files
    assert sql("select count(*) from raw.contributions_quarantine") == [(1,)]
    assert sql("select count(*) from meta.source_file where outcome = 'LOADED'") == [(2,)]
    trace = cli.main(["trace", "--declaration", fixed.split(",")[0]])
    out = capfd.readouterr().out
    assert trace == 0 and "CORRECTED" in out and f"request {request}" in out and approver in out, out


def test_purging_the_quarantine_after_its_retention_keeps_the_records(database, sql, capsys, people):
    landing = Path(database["CONTRIBFLOW_LANDING_DIR"])
    assert cli.main(["init-db"]) == 0
    for offset, day in enumerate((DAY, NEXT)):
        rows = [good_row(100 * offset + i) for i in range(1, 21)]
        rows[0][1] = "=HYPERLINK(1)"  # a hostile taxpayer id: quarantined with its raw text
        path = write_source(landing, day, rows)
        assert _ingest(path, day) == 0
    raw_before = sql("select count(*) from raw.contributions")

    assert cli.main(["purge-quarantine", "--before", NEXT.isoformat()]) == 1  # not without a request
    assert f"contribflow request purge-quarantine --before {NEXT}" in capsys.readouterr().err
    request = people.approved(["purge-quarantine", "--before", NEXT.isoformat(), "--reason", "90 days passed"])
    assert cli.main(["apply", str(request)]) == 0
    assert "files=1, quarantined_rows_removed=1, identifier_values_masked=1" in capsys.readouterr().out
    assert sql("select file_date from raw.contributions_quarantine") == [(NEXT,)]
    # The day kept shows the failing identifier as ingest wrote it: its length and character
    # classes, never the value (contribflow/redact.py).
    assert sql("""select f.file_date, i.failing_value from meta.data_quality_issue i
                  join meta.source_file f on f.sha256 = i.source_sha256 order by 1""") == [
        (DAY, "[purged]"), (NEXT, "[13 characters: uppercase, digits, punctuation]")]
    assert sql("select count(*) from raw.contributions") == raw_before  # the legal record stays
    assert sql("select status, details->>'quarantined_rows_removed' from meta.etl_run where step = 'apply'") == [
        ("SUCCESS", "1")]


def test_the_runbook_names_only_commands_that_exist():
    runbook = (ROOT / "docs" / "runbook.md").read_text(encoding="utf-8")
    parser = cli.build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)  # the subcommands argparse knows
    named = {word.split()[1] for word in runbook.split("`") if word.startswith("contribflow ")}
    assert named and named <= commands, named - commands
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = {word.split()[1] for word in runbook.split("`") if word.startswith("make ")}
    assert all(f"\n{t}:" in makefile for t in targets), targets


def test_deleting_records_after_their_retention_is_possible_only_as_the_runbook_says(database, sql):
    landing = Path(database["CONTRIBFLOW_LANDING_DIR"])
    assert cli.main(["init-db"]) == 0
    for offset, day in enumerate((DAY, NEXT)):
        assert _ingest(write_source(landing, day, [good_row(100 * offset + i) for i in range(1, 6)]), day) == 0
    with pytest.raises(Exception, match="append-only"):
        sql("DELETE FROM raw.contributions WHERE file_date < %s", (NEXT,))
    block = (ROOT / "docs" / "runbook.md").read_text().split("```sql\n  BEGIN;")[1].split("```")[0]
    statements = [s.strip() for s in ("BEGIN;" + block).split(";") if s.strip()]
    statements = [s.replace("DATE '2016-01-01'", f"DATE '{NEXT.isoformat()}'") for s in statements]
    for statement in statements:
        sql(statement)
    assert sql("select file_date, count(*) from raw.contributions group by 1") == [(NEXT, 5)]
    with pytest.raises(Exception, match="append-only"):  # the trigger is back
        sql("DELETE FROM raw.contributions")


def test_withdrawing_a_loaded_file_as_the_runbook_says(database, sql, capfd, people):
    """docs/runbook.md "Withdraw a loaded file": day 2's file re-sent two declarations in a new
    state and brought a new one; withdrawn, the first two fall back to day 1, the third leaves."""
    import os
    import subprocess
    import sys

    landing = Path(database["CONTRIBFLOW_LANDING_DIR"])

    def run_day(day: dt.date, run_id: str) -> str:
        done = subprocess.run([sys.executable, "-m", "contribflow", "run", "--date", day.isoformat(),
                               "--no-generate"], env=dict(os.environ, CONTRIBFLOW_RUN_ID=run_id), cwd=ROOT,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout

    write_source(landing, DAY, [good_row(1), good_row(2), good_row(3)])
    run_day(DAY, "rb-day1")
    write_source(landing, NEXT, [good_row(1, status="PAID"), good_row(2, status="CANCELLED"), good_row(4)])
    run_day(NEXT, "rb-day2")
    marts = "select declaration_id, status, file_date from marts.fct_contributions order by 1"
    assert [r[1] for r in sql(marts)] == ["PAID", "CANCELLED", "DUE", "DUE"]

    # 1. find the load; 2. an operator requests the withdrawal with the reason
    audit = subprocess.run([sys.executable, "-m", "contribflow", "audit", "--date", NEXT.isoformat()],
                           capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "contributions_20261103.csv" in audit.stdout and "rb-day2" in audit.stdout
    operator, approver = people.add("operator"), people.add("approver")
    request = people.request(operator, ["withdraw-file", "--date", NEXT.isoformat(),
                                        "--reason", "test export sent by mistake"], capfd)
    # 3. another person approves it
    assert people.cli(approver, ["approve", str(request)]) == 0
    assert [r[1] for r in sql(marts)] == ["PAID", "CANCELLED", "DUE", "DUE"]  # not applied yet
    # 4. apply it: recorded, rebuilt and published
    capfd.readouterr()
    assert people.cli(None, ["apply", str(request)]) == 0
    out = capfd.readouterr().out
    assert "withdrawals_applied=1" in out and "fct_rows_removed=1" in out, out
    assert sql(marts) == [("DEC_20261101_000001", "DUE", DAY), ("DEC_20261101_000002", "DUE", DAY),
                          ("DEC_20261101_000003", "DUE", DAY)]
    assert sql("select count(*) from raw.contributions") == [(6,)]  # raw keeps every row
    # 5. check: trace and audit show it
    trace = subprocess.run([sys.executable, "-m", "contribflow", "trace", "--declaration", "DEC_20261101_000004"],
                           capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "WITHDRAWN" in trace.stdout and "test export sent by mistake" in trace.stdout
    assert "applied by build" in trace.stdout
    assert f"request {request} (withdraw-file): requested by {operator}" in trace.stdout
    assert f"approved by {approver}" in trace.stdout
    audit = subprocess.run([sys.executable, "-m", "contribflow", "audit", "--date", NEXT.isoformat()],
                           capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "test export sent by mistake" in audit.stdout and "applied by build" in audit.stdout


def test_rotating_the_evidence_signing_key(database, tmp_path, monkeypatch, capsys):
    """docs/runbook.md, "Rotating the evidence-signing key", with the commands it gives."""
    import subprocess

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True)

    assert cli.main(["init-db"]) == 0
    day = DAY.isoformat()
    for year in ("2026", "2027"):
        openssl("genpkey", "-algorithm", "ed25519", "-out", f"signing-key-{year}.pem")
        openssl("pkey", "-in", f"signing-key-{year}.pem", "-pubout", "-out", f"signing-key-{year}.pub.pem")
    monkeypatch.setenv("CONTRIBFLOW_SIGNING_KEY_FILE", str(tmp_path / "signing-key-2026.pem"))
    assert cli.main(["audit", "--from", day, "--to", day, "--html", str(tmp_path / "OLD.html")]) == 0
    monkeypatch.setenv("CONTRIBFLOW_SIGNING_KEY_FILE", str(tmp_path / "signing-key-2027.pem"))  # rotated
    assert cli.main(["audit", "--from", day, "--to", day, "--html", str(tmp_path / "NEW.html")]) == 0
    capsys.readouterr()
    old_pub, new_pub = (str(tmp_path / f"signing-key-{y}.pub.pem") for y in ("2026", "2027"))
    assert cli.main(["verify-pack", str(tmp_path / "OLD.html"), "--public-key", old_pub]) == 0
    assert cli.main(["verify-pack", str(tmp_path / "NEW.html"), "--public-key", new_pub]) == 0
    assert cli.main(["verify-pack", str(tmp_path / "NEW.html"), "--public-key", old_pub]) == 1
    assert "not by the key given" in capsys.readouterr().err
    assert cli.main(["verify-pack", str(tmp_path / "NEW.html")]) == 0  # the installation's key is the new one
