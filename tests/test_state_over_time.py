"""A state is what the latest file says, over sequences of days (issue 25, items 1 and 4).

Each scenario writes source files, runs the day through the CLI as an operator would (``contribflow
run --date D --no-generate``: init-db, pick, ingest, dbt-build, dbt-test, publish in subprocesses),
and compares the published marts with an expectation computed here from the files alone: for each
declaration, the row of the latest file (greatest file date, then the later arrival) that mentions
it, among the files not withdrawn; per taxpayer, the totals of those rows.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import hmac
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import days
from conftest import TEST_KEY

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
D1, D2, D3 = dt.date(2026, 11, 2), dt.date(2026, 11, 3), dt.date(2026, 11, 4)


def row(n: int, status: str = "DUE", amount: str = "100.0", taxpayer: str = "TAXP_10001",
        kind: str = "INCOME_TAX") -> list[str]:
    return [f"DEC_20261101_{n:06d}", taxpayer, "2026-11-01", amount, "EUR", kind, status, "LU"]


def key(taxpayer: str) -> str:
    return hmac.new(TEST_KEY.encode(), taxpayer.encode(), hashlib.sha256).hexdigest()


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "contribflow", *args], env=env or dict(os.environ), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


@dataclass
class Source:
    """What the source sent, in arrival order (each file is loaded); withdrawn files (positions in
    ``files``) are left out of the expectation, which tests/days.py works out from the files alone."""

    landing: Path
    files: list[tuple[dt.date, list[list[str]], str]] = field(default_factory=list)
    feed: days.Source = field(init=False)
    expect: days.Expectation = field(init=False)

    def __post_init__(self) -> None:
        self.feed = days.Source(self.landing)
        self.expect = days.Expectation(TEST_KEY.encode())

    @property
    def withdrawn(self) -> set[int]:
        return self.expect.withdrawn

    def send(self, day: dt.date, rows: list[list[str]]) -> Path:
        sent = self.feed.send(day, [days.Row(*r) for r in rows])
        self.expect.load(sent)
        self.files.append((day, rows, sent.name))
        return self.landing / sent.name


def assert_marts_match(sql, source: Source) -> None:
    """Both marts, row for row (file and line included), against what the files say."""
    days.assert_published(sql, source.expect, f"{len(source.files)} files")
    # What was published is what was tested: the build's audit view holds the same rows.
    assert sql("select count(*) from (select * from marts.fct_contributions except all "
               "select * from marts_build.fct_contributions) d") == [(0,)]


def run_day(day: dt.date, run_id: str, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CONTRIBFLOW_RUN_ID=run_id)
    done = cli("run", "--date", day.isoformat(), "--no-generate", *extra, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture
def source(database) -> Source:
    return Source(Path(database["CONTRIBFLOW_LANDING_DIR"]))


def test_a_reversal_over_three_days_ends_in_the_third_days_state(database, sql, source):
    """Observation 1: day 1 DUE/100.00, day 2 PAID/120.00, day 3 DUE/100.0 (day 1's state again)."""
    others = [row(n, "PAID", "5.0", taxpayer="TAXP_20002") for n in range(10, 13)]
    source.send(D1, [row(1, "DUE", "100.00"), *others])
    run_day(D1, "reversal-1")
    source.send(D2, [row(1, "PAID", "120.00")])
    run_day(D2, "reversal-2")
    assert sql("select status, amount::text from marts.fct_contributions where declaration_id = %s",
               ("DEC_20261101_000001",)) == [("PAID", "120.00")]
    source.send(D3, [row(1, "DUE", "100.0")])
    done = run_day(D3, "reversal-3")
    assert re.search(r"ingest\s+SUCCESS\s+\S+\s+1\s+1\s+0", done.stdout), done.stdout  # 1 in, 1 loaded
    assert sql("select file_date, status, amount::text, revision from raw.contributions "
               "where declaration_id = %s order by ingestion_ts", ("DEC_20261101_000001",)) == [
        (D1, "DUE", "100.00", 0), (D2, "PAID", "120.00", 0), (D3, "DUE", "100.00", 0)]
    # Day 1's and day 3's rows are one state (one record hash), two arrivals.
    assert sql("select count(distinct record_hash) from raw.contributions where declaration_id = %s",
               ("DEC_20261101_000001",)) == [(2,)]
    assert sql("select status, amount::text, file_date from marts.fct_contributions where declaration_id = %s",
               ("DEC_20261101_000001",)) == [("DUE", "100.00", D3)]
    assert_marts_match(sql, source)
    assert sql("select amount_paid::text, amount_due::text from marts.dim_taxpayer where taxpayer_key = %s",
               (key("TAXP_10001"),)) == [("0.00", "100.00")]


def test_the_same_day_sent_three_times_v1_v2_v3_ends_in_v3(database, sql, source):
    """Within one file date: v1 DUE, v2 PAID, v3 DUE. v3's DUE is v1's state returning after
    another: inserted with revision 1. A v4 equal to v3 adds nothing; a v5 PAID is revision 1 of
    PAID."""
    steady = row(2, "DUE", "7.0")
    source.send(D1, [row(1, "DUE"), steady])
    run_day(D1, "same-day-v1")
    source.send(D1, [row(1, "PAID"), steady])
    run_day(D1, "same-day-v2")
    assert sql("select status from marts.fct_contributions where declaration_id = 'DEC_20261101_000001'") == \
        [("PAID",)]
    source.send(D1, [steady, row(1, "DUE")])  # another order: another file, the same states as v1
    run_day(D1, "same-day-v3")
    assert sql("select status from marts.fct_contributions where declaration_id = 'DEC_20261101_000001'") == \
        [("DUE",)]
    assert_marts_match(sql, source)
    source.send(D1, [row(1, "DUE"), steady, row(3)])  # v4: the same states again, and one new row
    run_day(D1, "same-day-v4")
    source.send(D1, [row(1, "PAID")])
    run_day(D1, "same-day-v5")
    assert sql("select status, revision, run_id from raw.contributions where declaration_id = %s "
               "order by ingestion_ts", ("DEC_20261101_000001",)) == [
        ("DUE", 0, "same-day-v1"), ("PAID", 0, "same-day-v2"), ("DUE", 1, "same-day-v3"),
        ("PAID", 1, "same-day-v5")]
    assert sql("select count(*) from raw.contributions where declaration_id = %s", (steady[0],)) == [(1,)]
    assert sql("select rows_in, rows_loaded from meta.source_file where run_id = 'same-day-v4'") == [(3, 1)]
    assert_marts_match(sql, source)


def test_a_late_file_for_an_older_date_does_not_win(database, sql, source):
    source.send(D2, [row(1, "PAID", "50.0"), row(2, "DUE", "8.0")])
    run_day(D2, "late-newer")
    # Day 1's file arrives after day 2's: its states are older, whatever their arrival.
    source.send(D1, [row(1, "DUE", "50.0"), row(3, "DUE", "9.0")])
    run_day(D1, "late-older")
    assert sql("select status, file_date from marts.fct_contributions where declaration_id = %s",
               ("DEC_20261101_000001",)) == [("PAID", D2)]
    assert_marts_match(sql, source)
    # A full refresh, from all of raw, agrees with the incremental marts.
    incremental = sorted(sql("select * from marts.fct_contributions"))
    done = cli("dbt-build", "--date", D1.isoformat(), "--full-refresh",
               env=dict(os.environ, CONTRIBFLOW_RUN_ID="late-full"))
    assert done.returncode == 0, done.stderr
    for stage in ("dbt-test", "publish"):
        done = cli(stage, "--date", D1.isoformat(), env=dict(os.environ, CONTRIBFLOW_RUN_ID="late-full"))
        assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(sql("select * from marts.fct_contributions")) == incremental


def test_re_ingesting_the_same_rows_on_the_same_day_adds_nothing(database, sql, source):
    rows = [row(n, "DUE", f"{n}.5") for n in range(1, 6)]
    path = source.send(D1, rows)
    run_day(D1, "again-1")
    before = sql("select * from raw.contributions order by declaration_id")
    # The same file again: the ledger answers.
    done = cli("ingest", "--date", D1.isoformat(), "--file", str(path))
    assert done.returncode == 0 and "already ingested" in done.stdout, done.stdout + done.stderr
    # The same rows in another file of the same day (reordered, so another sha256): nothing new.
    source.send(D1, list(reversed(rows)))
    done = cli("ingest", "--date", D1.isoformat(), "--file", str(path))
    assert done.returncode == 0, done.stderr
    assert "5 rows in, 0 loaded, 0 quarantined, 5 already in raw" in done.stdout
    assert sql("select * from raw.contributions order by declaration_id") == before


def test_every_contract_valid_value_builds_and_the_next_day_publishes(database, sql, source):
    """Observation 4: 101 rows of 999999999999.99 for one taxpayer overflowed dim_taxpayer's
    numeric(16,2) sum; that day failed, and so did every later day."""
    top = "999999999999.99"
    source.send(D1, [row(n, "PAID", top, taxpayer="TAXP_99999") for n in range(1, 102)]
                + [row(n, "DUE", top, taxpayer="TAXP_99999") for n in range(102, 203)])
    run_day(D1, "wide-1")
    source.send(D2, [row(500, "PAID", "1.0", taxpayer="TAXP_11111")])
    run_day(D2, "wide-2")
    total = decimal.Decimal(top) * 101
    assert sql("select amount_paid, amount_due, declarations from marts.dim_taxpayer where taxpayer_key = %s",
               (key("TAXP_99999"),)) == [(total, total, 202)]
    assert_marts_match(sql, source)
    assert sql("select status from meta.mart_build order by id") == [("PUBLISHED",), ("PUBLISHED",)]


@pytest.mark.parametrize("where", ["the last", "the first"])
def test_withdrawing_a_file_falls_back_to_the_latest_remaining_state_or_leaves_the_marts(
        database, sql, source, where, people):
    """A file withdrawn: each declaration it mentioned shows the state of the latest remaining file
    that mentioned it, or leaves the marts if none remains; raw keeps every row; a full refresh
    gives the same marts as the incremental build."""
    source.send(D1, [row(1, "DUE", "10.0"), row(2, "DUE", "20.0"), row(4, "PAID", "4.0", taxpayer="TAXP_40004")])
    run_day(D1, "w-day1")
    source.send(D2, [row(1, "PAID", "10.0"), row(3, "DUE", "30.0"), row(5, "PAID", "5.0", taxpayer="TAXP_50005")])
    run_day(D2, "w-day2")
    source.send(D3, [row(2, "CANCELLED", "20.0"), row(6, "DUE", "6.0", taxpayer="TAXP_60006")])
    run_day(D3, "w-day3")
    raw_before = sql("select * from raw.contributions order by declaration_id, ingestion_ts")

    name, number = (source.files[1][2], 1) if where == "the last" else (source.files[0][2], 0)
    request = people.approved(["withdraw-file", "--date", source.files[number][0].isoformat(),
                               "--reason", "the source sent it by mistake (ticket 42)"])
    done = cli("apply", str(request), "--no-publish")
    assert done.returncode == 0, done.stderr
    assert f"file={name}" in done.stdout and "withdrawal_id=1" in done.stdout, done.stdout
    # Recorded, not yet applied: the marts still show the file.
    assert sql("select file_name, file_date, run_id, raw_rows, reason, applied_build_id, withdrawn_by_login = "
               "session_user from meta.file_withdrawal") == [
        (name, source.files[number][0], f"w-day{number + 1}", 3, "the source sent it by mistake (ticket 42)",
         None, True)]
    published_before = sql("select * from marts.fct_contributions order by 1")
    trace = cli("trace", "--declaration", source.files[number][1][0][0])
    assert trace.returncode == 0, trace.stderr
    assert "WITHDRAWN" in trace.stdout and "ticket 42" in trace.stdout and "not published yet" in trace.stdout

    source.withdrawn.add(number)
    done = run_day(D3, "w-rerun")  # re-running the latest day applies it
    assert re.search(r"publish\s+SUCCESS.*withdrawals_applied=1", done.stdout), done.stdout
    assert sql("select * from marts.fct_contributions order by 1") != published_before
    assert_marts_match(sql, source)
    assert sql("select * from raw.contributions order by declaration_id, ingestion_ts") == raw_before
    [(build,)] = sql("select id from meta.mart_build where run_id = 'w-rerun'")
    assert sql("select applied_build_id from meta.file_withdrawal") == [(build,)]
    audit = cli("audit", "--date", source.files[number][0].isoformat())
    assert audit.returncode == 0, audit.stderr
    assert f"{name}" in audit.stdout and "ticket 42" in audit.stdout and f"applied by build {build}" in audit.stdout

    # The next day builds incrementally on it, and a full refresh gives the same marts.
    source.send(dt.date(2026, 11, 5), [row(7, "DUE", "7.0")])
    run_day(dt.date(2026, 11, 5), "w-day4")
    assert_marts_match(sql, source)
    incremental = sorted(sql("select * from marts.fct_contributions"))
    dim = sorted(sql("select * from marts.dim_taxpayer"))
    env = dict(os.environ, CONTRIBFLOW_RUN_ID="w-full")
    for args in (["dbt-build", "--full-refresh"], ["dbt-test"], ["publish"]):
        done = cli(*args, "--date", "2026-11-05", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(sql("select * from marts.fct_contributions")) == incremental
    assert sorted(sql("select * from marts.dim_taxpayer")) == dim


def test_withdraw_file_refuses_what_it_cannot_withdraw(database, sql, source, people):
    source.send(D1, [row(1)])
    run_day(D1, "refuse-1")
    source.send(D1, [row(1, "PAID")])  # the same name, loaded again by another run
    run_day(D1, "refuse-2")
    day = D1.isoformat()
    done = cli("apply", str(people.approved(["withdraw-file", "--date", day, "--reason", "x"])))
    assert done.returncode == 1 and "loaded by 2 runs" in done.stderr and "refuse-1" in done.stderr \
        and "--run" in done.stderr, done.stderr
    done = cli("apply", str(people.approved(["withdraw-file", "--date", day, "--run", "refuse-9", "--reason", "x"])))
    assert done.returncode == 1 and "only a LOADED file can be withdrawn" in done.stderr, done.stderr
    done = cli("request", "withdraw-file", "--date", day, "--run", "refuse-2", "--reason", "  ")
    assert done.returncode == 2 and "argument --reason" in done.stderr, done.stderr  # argparse's usage error
    request = people.approved(["withdraw-file", "--date", day, "--run", "refuse-2", "--reason", "v2 was wrong"])
    assert cli("apply", str(request), "--no-publish").returncode == 0
    again = people.approved(["withdraw-file", "--date", day, "--run", "refuse-2", "--reason", "again"])
    done = cli("apply", str(again), "--no-publish")
    assert done.returncode == 1 and "already withdrawn" in done.stderr, done.stderr
    assert sql("select count(*) from meta.correction_application") == [(1,)]  # refused: nothing applied
    assert sql("select count(*) from meta.file_withdrawal") == [(1,)]
    # Nobody but the owner records one: the pipeline's roles may only read it.
    for role in ("contribflow_loader", "contribflow_transformer", "contribflow_auditor"):
        with pytest.raises(Exception, match="permission denied"):
            sql(f"set role {role}; insert into meta.file_withdrawal (source_file_id, file_name, sha256, "
                "file_date, run_id, raw_rows, reason) values (1, 'f', 's', '2026-11-02', 'r', 0, 'x')")
        sql("reset role")
    # A corrected file for the withdrawn one's date loads its states again (the withdrawn rows do
    # not count as already there), and wins.
    source.withdrawn.add(1)
    source.send(D1, [row(1, "PAID"), row(2)])  # not the withdrawn bytes: those the ledger still knows
    run_day(D1, "refuse-3")
    assert sql("select declaration_id, status, revision from raw.contributions where run_id = 'refuse-3' "
               "order by 1") == [("DEC_20261101_000001", "PAID", 1), ("DEC_20261101_000002", "DUE", 0)]
    assert_marts_match(sql, source)


def test_the_models_never_select_the_raw_taxpayer_id():
    """A failed dbt node's message reaches meta.etl_run.error (transform.failure_text): no model,
    macro or test may read raw.contributions.taxpayer_id, so no database message can quote one."""
    found = []
    for path in (ROOT / "dbt").rglob("*.sql"):
        text = re.sub(r"\{#.*?#\}", "", path.read_text(), flags=re.S)
        text = re.sub(r"--[^\n]*", "", text)
        text = re.sub(r"'[^']*'", "''", text)  # the guard test names the column in a string
        if re.search(r"\btaxpayer_id\b", text):
            found.append(str(path.relative_to(ROOT)))
    assert found == []


def test_a_failed_build_names_the_failing_node_and_the_databases_message(database, sql, source, tmp_path):
    """Observation 4's other half: the cause reaches meta.etl_run.error, the run summary and audit.
    The types are now wide enough for any contract-valid file, so the overflow is made here: a copy
    of the dbt project whose dim_taxpayer narrows a total to numeric(3,2)."""
    source.send(D1, [row(1)])
    run_day(D1, "cause-1")
    source.send(D2, [row(2, amount="123456.0")])
    project = tmp_path / "dbt"
    shutil.copytree(ROOT / "dbt", project, ignore=shutil.ignore_patterns("target", "logs"))
    dim = project / "models" / "marts" / "dim_taxpayer.sql"
    dim.write_text(dim.read_text().replace("::numeric(38, 2) as amount_due",
                                           "::numeric(3, 2)::numeric(38, 2) as amount_due"))
    env = dict(os.environ, CONTRIBFLOW_RUN_ID="cause-2", CONTRIBFLOW_DBT_PROJECT_DIR=str(project))
    done = cli("run", "--date", D2.isoformat(), "--no-generate", env=env)
    assert done.returncode == 1
    [(error,)] = sql("select error from meta.etl_run where run_id = 'cause-2' and step = 'dbt-build'")
    assert "model.contribflow.dim_taxpayer" in error and "numeric field overflow" in error, error
    assert "precision 3, scale 2" in error, error
    assert "numeric field overflow" in done.stdout  # the run summary
    audit = cli("audit", "--date", D2.isoformat())
    assert "numeric field overflow" in audit.stdout
    assert "TAXP_" not in error and "TAXP_" not in done.stdout


def test_a_withdrawal_recorded_after_a_build_waits_for_the_next_and_a_same_day_repeat_is_warned(
        database, sql, source, people):
    """A build applies the withdrawals recorded before it started: one recorded between dbt-build and
    publish stays pending (the marts still show the file) and the next run applies it. And withdrawing
    a file whose states a later file of the same date repeated keeps those states, from the later
    file (stored once in raw, as the withdrawn file's; the repeat recorded in contributions_restated)."""
    source.send(D1, [row(1, "DUE", "1.0"), row(2, "DUE", "2.0")])
    run_day(D1, "late-w-1")
    source.send(D1, [row(1, "DUE", "1.0"), row(3, "PAID", "3.0")])  # repeats row 1's state for D1
    run_day(D1, "late-w-2")
    source.send(D2, [row(4, "DUE", "4.0")])
    env = dict(os.environ, CONTRIBFLOW_RUN_ID="late-w-3")
    path = Path(os.environ["CONTRIBFLOW_LANDING_DIR"]) / f"contributions_{D2:%Y%m%d}.csv"
    for args in (["ingest", "--file", str(path)], ["dbt-build"]):
        assert cli(*args, "--date", D2.isoformat(), env=env).returncode == 0

    request = people.approved(["withdraw-file", "--date", D1.isoformat(), "--run", "late-w-1",
                               "--reason", "wrong export"])
    done = cli("apply", str(request), "--no-publish")
    assert done.returncode == 0, done.stderr
    assert "kept_by_later_files=1" in done.stdout, done.stdout
    for stage in ("dbt-test", "publish"):
        done = cli(stage, "--date", D2.isoformat(), env=env)
        assert done.returncode == 0, done.stdout + done.stderr
    assert "withdrawals_applied" not in done.stdout
    assert sql("select applied_build_id from meta.file_withdrawal") == [(None,)]
    assert_marts_match(sql, source)  # the withdrawal is not in this publication

    run_day(D2, "late-w-4")
    [(build,)] = sql("select id from meta.mart_build where run_id = 'late-w-4'")
    assert sql("select applied_build_id from meta.file_withdrawal") == [(build,)]
    # Row 1's DUE for D1 was stored once, as late-w-1's, and repeated by late-w-2: it stays, from
    # late-w-2's file and line; row 2 (only in the withdrawn file) leaves.
    assert sql("select declaration_id, status, run_id from marts.fct_contributions f join raw.contributions_restated m "
               "using (declaration_id, source_file, source_line) order by 1") == [("DEC_20261101_000001", "DUE", "late-w-2")]
    assert sql("select declaration_id from marts.fct_contributions order by 1") == [
        ("DEC_20261101_000001",), ("DEC_20261101_000003",), ("DEC_20261101_000004",)]
