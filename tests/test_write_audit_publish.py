"""Write-audit-publish against a real PostgreSQL (issue 17): what analysts read has passed every
test, a failing day leaves the published marts byte for byte as they were, and a passing day
appears all at once."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time

import psycopg
import pytest

from contribflow.local import runner
from contribflow.settings import Settings

pytestmark = pytest.mark.integration

DAY1 = dt.date(2026, 11, 24)
DAY2 = dt.date(2026, 11, 25)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARTS = ("fct_contributions", "dim_taxpayer")
HASH = "select count(*), md5(coalesce(string_agg(t::text, ',' order by t::text), '')) from marts.{} t"
INSERT_RAW = """insert into raw.contributions (declaration_id, taxpayer_id, taxpayer_key, event_date, amount,
    currency, contribution_type, status, country, file_date, source_file, source_line, run_id, record_hash)
    values (%s, '99999', 'k-injected', '2026-11-20', 1.00, 'EUR', 'INCOME_TAX', %s, 'LU', %s, 'injected.csv', 1,
            'injected', raw.record_hash(%s, '99999', '2026-11-20', 1.00, 'EUR', 'INCOME_TAX', %s, 'LU'))"""
# What an analyst reads, in one statement (one snapshot under READ COMMITTED): the day's fact rows
# and the taxpayer dimension's content.
ANALYST_VIEW = """select (select count(*) from marts.fct_contributions where file_date = %s),
                         (select md5(coalesce(string_agg(t::text, ',' order by t::text), '')) from marts.dim_taxpayer t)"""


def cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "contribflow", *args], env=env or dict(os.environ),
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def run_day(day: dt.date, rows: int = 1500, run_id: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if run_id:
        env["CONTRIBFLOW_RUN_ID"] = run_id
    settings = Settings.from_env(env)
    results = runner.run_graph(settings, {"run-date": day.isoformat(), "rows": str(rows), "defect-rate": "0"}, env)
    return {r.stage: r.state for r in results}


def mart_hashes(sql) -> dict[str, tuple]:
    return {m: sql(HASH.format(m))[0] for m in MARTS}


class Analyst(threading.Thread):
    """An analyst (contribflow_analyst) reading the marts over and over while a run goes on."""

    def __init__(self, database: dict[str, str], day: dt.date) -> None:
        super().__init__(daemon=True)
        self.conn = psycopg.connect(host=database["PGHOST"], user=database["PGUSER"],
                                    dbname=database["PGDATABASE"], autocommit=True)
        self.conn.execute("SET ROLE contribflow_analyst")
        self.day = day
        self.seen: list[tuple[int, str]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.seen.append(self.conn.execute(ANALYST_VIEW, (self.day,)).fetchone())
            except psycopg.Error as exc:  # pragma: no cover - reported by the test
                self.errors.append(str(exc))
            time.sleep(0.005)

    def finish(self) -> list[tuple[int, str]]:
        self.stop.set()
        self.join(timeout=30)
        self.conn.close()
        return self.seen


def test_a_failing_dbt_test_leaves_the_published_marts_byte_for_byte_and_analysts_never_see_the_day(
        database, sql):
    assert run_day(DAY1, run_id="run-day1")["publish"] == "ok"
    before = mart_hashes(sql)
    assert before["fct_contributions"][0] > 1000
    # A row that bypassed ingest's validation (a manual fix, a bug): dbt's tests are the second net.
    sql(INSERT_RAW, ("DINJECTED1", "LOST", DAY2, "DINJECTED1", "LOST"))

    analyst = Analyst(database, DAY2)
    analyst.start()
    try:
        states = run_day(DAY2, run_id="run-day2")
    finally:
        seen = analyst.finish()
    assert states == {"init-db": "ok", "generate": "ok", "pick": "ok", "ingest": "ok", "dbt-build": "ok",
                      "dbt-test": "failed", "publish": "blocked", "finish": "failed"}
    assert analyst.errors == []
    assert len(seen) > 20 and {day_rows for day_rows, _ in seen} == {0}, "no row of the failed day, ever"
    assert len({dim for _, dim in seen}) == 1
    assert mart_hashes(sql) == before, "the published marts are byte for byte what they were"

    failing = "test.contribflow.accepted_values_fct_contributions_status__PAID__DUE__CANCELLED"
    [(status, error)] = sql("select status, error from meta.etl_run where run_id = 'run-day2' and step = 'finish'")
    assert status == "FAILED" and failing in error and "dbt-test" in error
    assert sql("select status from meta.mart_build where run_id = 'run-day2'") == [("TEST_FAILED",)]
    # The failed build is kept for inspection (until the next run builds), out of analysts' sight.
    assert sql("select status from marts_build.fct_contributions_delta where declaration_id = 'DINJECTED1'") == \
        [("LOST",)]
    with psycopg.connect(host=database["PGHOST"], user=database["PGUSER"], dbname=database["PGDATABASE"]) as c:
        c.execute("SET ROLE contribflow_analyst")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("select 1 from marts_build.fct_contributions_delta")
        c.rollback()
        c.execute("SET ROLE contribflow_analyst")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("select 1 from marts_failed.fct_contributions_delta")

    done = cli(["audit", "--date", DAY2.isoformat(), "--json"])
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["published"]["run_id"] == "run-day1"
    assert [(b["run_id"], b["status"]) for b in report["builds"]] == [("run-day2", "TEST_FAILED")]

    # The fix (the source re-sends the declaration with a valid status) and a re-run of the day:
    # its build moves the failed one to marts_failed, kept until this run publishes.
    sql(INSERT_RAW, ("DINJECTED1", "PAID", DAY2, "DINJECTED1", "PAID"))
    fix = dict(os.environ, CONTRIBFLOW_RUN_ID="run-day2-fixed")
    done = cli(["dbt-build", "--date", DAY2.isoformat()], fix)
    assert done.returncode == 0, done.stderr
    assert sql("select status from marts_failed.fct_contributions_delta where declaration_id = 'DINJECTED1'") == \
        [("LOST",)]
    assert sql("select obj_description('marts_failed'::regnamespace, 'pg_namespace')") == [
        (f"build {sql('select id from meta.mart_build where run_id = %s', ('run-day2',))[0][0]} "
         "of run run-day2 (TEST_FAILED)",)]
    for stage in ("dbt-test", "publish"):
        done = cli([stage, "--date", DAY2.isoformat()], fix)
        assert done.returncode == 0, done.stderr
    assert sql("select count(*) from pg_class where relnamespace = 'marts_failed'::regnamespace") == [(0,)]
    assert sql("select status from marts.fct_contributions where declaration_id = 'DINJECTED1'") == [("PAID",)]
    assert sql("select count(*) > 1000 from marts.fct_contributions where file_date = %s", (DAY2,)) == [(True,)]


def test_a_passing_day_appears_to_analysts_all_at_once_in_one_transaction(database, sql):
    assert run_day(DAY1, run_id="run-day1")["publish"] == "ok"
    dim_before = sql("select md5(coalesce(string_agg(t::text, ',' order by t::text), '')) from marts.dim_taxpayer t")
    dim_rows_before = {row for row, in sql("select t::text from marts.dim_taxpayer t")}
    analyst = Analyst(database, DAY2)
    analyst.start()
    try:
        states = run_day(DAY2, run_id="run-day2")
    finally:
        seen = analyst.finish()
    assert set(states.values()) == {"ok"}, states
    assert analyst.errors == []
    day_rows = sql("select count(*) from marts.fct_contributions where file_date = %s", (DAY2,))[0][0]
    [(dim_after,)] = sql("select md5(coalesce(string_agg(t::text, ',' order by t::text), '')) "
                         "from marts.dim_taxpayer t")
    assert day_rows > 1000 and dim_after != dim_before[0][0]
    # Every read saw the whole day or none of it: never the day's facts with yesterday's dimension.
    assert set(seen) == {(0, dim_before[0][0]), (day_rows, dim_after)}, set(seen)
    assert seen[0] == (0, dim_before[0][0]) and seen[-1] == (day_rows, dim_after)
    # One commit: the day's fact rows, the dimension's changed rows and the publication record. The
    # dimension is no longer a new relation (a table swapped in is invisible to older snapshots,
    # tests/test_snapshot_publish.py): its relation is the same as before, its changed rows new.
    fct_xmins = sql("select distinct xmin::text from marts.fct_contributions where file_date = %s", (DAY2,))
    build_xmin = sql("select xmin::text from meta.mart_build where run_id = 'run-day2'")
    dim_rows = sql("select t::text, xmin::text from marts.dim_taxpayer t")
    changed = {x for row, x in dim_rows if row not in dim_rows_before}
    kept = {x for row, x in dim_rows if row in dim_rows_before}
    assert fct_xmins == build_xmin and changed == {build_xmin[0][0]} and build_xmin[0][0] not in kept
    assert sql("select xmin::text from pg_class where oid = 'marts.dim_taxpayer'::regclass") != build_xmin
    assert sql("select status, delta_rows > 0 from meta.mart_build order by id") == [
        ("PUBLISHED", True), ("PUBLISHED", True)]
    # What was published is what was tested: the audit view and the published table agree.
    assert sql("select count(*) from (select * from marts.fct_contributions except all "
               "select * from marts_build.fct_contributions) d") == [(0,)]
