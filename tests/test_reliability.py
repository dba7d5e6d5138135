"""Reliability and security, proved by breaking things on purpose against a real PostgreSQL (issue 7):
a crash mid-load, two loads at once, the server down, dbt failing, secrets, and `contribflow audit`.
Least privilege is in test_least_privilege.py, hostile files in test_hostile_files.py."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contribflow import generate
from contribflow.contract import file_name
from contribflow.settings import DEV_PSEUDONYM_KEY

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 11, 20)
ROOT = Path(__file__).resolve().parents[1]


def cli(args: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``contribflow …`` as its own process, as a container runs it."""
    return subprocess.run([sys.executable, "-m", "contribflow", *args], env=env or dict(os.environ),
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "contribflow", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def write_clean_file(landing: Path, day: dt.date, rows: int) -> Path:
    landing.mkdir(parents=True, exist_ok=True)
    path = landing / file_name(day)
    generate.write_file(path, generate.rows_for(day, rows))
    return path


def file_totals(path: Path) -> tuple[int, decimal.Decimal]:
    with open(path, newline="", encoding="utf-8") as fh:
        amounts = [decimal.Decimal(r["amount"]) for r in csv.DictReader(fh)]
    return len(amounts), sum(amounts)


def wait_until(condition, timeout: float, what: str, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def audit(env: dict[str, str], day: dt.date = DAY) -> dict:
    done = cli(["audit", "--date", day.isoformat(), "--json"], env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# --- 1. crash safety ------------------------------------------------------------------------------

LOADING = """
select a.pid from pg_stat_activity a
 where a.datname = current_database() and a.pid <> pg_backend_pid() and a.backend_xid is not null
   and (pg_relation_size('raw.contributions') > 0 or (a.state = 'active' and a.query ilike 'copy%%'))
"""


def test_sigkill_mid_load_leaves_no_rows_no_ledger_entry_and_a_stale_running_step(database, sql):
    rows = 300_000
    assert cli(["init-db"]).returncode == 0
    env = dict(os.environ, CONTRIBFLOW_CHUNK_ROWS="25000", CONTRIBFLOW_RUN_ID="run-killed")
    path = write_clean_file(Path(database["CONTRIBFLOW_LANDING_DIR"]), DAY, rows)

    proc = spawn(["ingest", "--date", DAY.isoformat(), "--file", str(path)], env)
    try:
        def loading():
            if proc.poll() is not None:
                pytest.fail(f"ingest ended (exit {proc.returncode}) before it could be killed mid-load")
            return sql(LOADING)

        backend = wait_until(loading, 120, "rows streaming into raw")[0][0]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    wait_until(lambda: not sql("select 1 from pg_stat_activity where pid = %s", (backend,)), 30,
               "the killed client's backend to roll back and exit")

    assert sql("select count(*) from raw.contributions") == [(0,)]
    assert sql("select count(*) from raw.contributions_quarantine") == [(0,)]
    assert sql("select count(*) from meta.source_file") == [(0,)]
    assert sql("select step, status from meta.etl_run where run_id = 'run-killed'") == [("ingest", "RUNNING")]

    fresh = audit(env)
    assert fresh["stale_steps"] == []  # within CONTRIBFLOW_STALE_AFTER_S (default 1h): maybe still running
    assert [(r["run_id"], r["status"]) for r in fresh["runs"]] == [("run-killed", "RUNNING")]
    stale_env = dict(env, CONTRIBFLOW_STALE_AFTER_S="0")
    stale = audit(stale_env)
    assert [(s["run_id"], s["step"]) for s in stale["stale_steps"]] == [("run-killed", "ingest")]
    table = cli(["audit", "--date", DAY.isoformat()], stale_env).stdout
    assert "STALE" in table and "run-killed" in table

    rerun = cli(["ingest", "--date", DAY.isoformat(), "--file", str(path)],
                dict(env, CONTRIBFLOW_RUN_ID="run-after-crash"))
    assert rerun.returncode == 0, rerun.stderr
    expected_rows, expected_sum = file_totals(path)
    assert expected_rows == rows
    assert sql("select count(*), sum(amount) from raw.contributions") == [(expected_rows, expected_sum)]
    assert sql("select count(distinct declaration_id) from raw.contributions") == [(rows,)]
    assert sql("select outcome, rows_loaded, run_id from meta.source_file") == [("LOADED", rows, "run-after-crash")]
    assert sql("select status from meta.etl_run where run_id = 'run-after-crash'") == [("SUCCESS",)]


# --- 2. concurrency -------------------------------------------------------------------------------

WAITERS = "select pid from pg_locks where locktype = 'advisory' and not granted"


def test_two_ingests_of_the_same_date_at_once_load_it_once(database, sql):
    env = dict(os.environ)
    assert cli(["init-db"], env).returncode == 0
    assert cli(["generate", "--date", DAY.isoformat(), "--rows", "100000", "--defect-rate", "0.01"],
               env).returncode == 0
    path = Path(database["CONTRIBFLOW_LANDING_DIR"]) / file_name(DAY)
    args = ["ingest", "--date", DAY.isoformat(), "--file", str(path)]
    # Hold the raw-writer lock so that both start before either can load, whatever their timing.
    sql("select pg_advisory_lock(hashtextextended('contribflow:raw-writer', 0))")
    procs = [spawn(args, dict(env, CONTRIBFLOW_RUN_ID=f"racer-{n}")) for n in (1, 2)]
    try:
        waiting = wait_until(lambda: len(sql(WAITERS)) == 2 or any(p.poll() is not None for p in procs),
                             120, "both ingests to wait on the raw-writer lock")
    finally:
        sql("select pg_advisory_unlock(hashtextextended('contribflow:raw-writer', 0))")
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert waiting is True, "both ingests must have waited on the raw-writer advisory lock"

    steps = {r[0]: r[1:] for r in sql(
        "select run_id, rows_in, rows_loaded, rows_rejected, details->>'already_ingested_by' "
        "from meta.etl_run where step = 'ingest'")}
    winner = next(run for run, s in steps.items() if s[3] is None)
    loser = next(run for run in steps if run != winner)
    rows_in, loaded, rejected, _ = steps[winner]
    assert steps[loser] == (rows_in, 0, 0, winner)
    assert loaded + rejected == rows_in == 100_000 and rejected > 0
    assert any("already ingested by run " + winner in out for out, _ in outputs)

    assert sql("select count(*) from raw.contributions") == [(loaded,)]
    assert sql("select count(distinct run_id) from raw.contributions") == [(1,)]
    assert sql("select count(*) from raw.contributions_quarantine") == [(rejected,)]
    assert sql("select outcome, run_id from meta.source_file") == [("LOADED", winner)]
    assert sql("select count(distinct run_id) from meta.data_quality_issue") == [(1,)]


def test_two_full_runs_of_the_same_date_at_once_both_succeed_and_load_once(database, sql, tmp_path):
    """Each run has its own state folder (dbt target), as each pod has its own; landing and
    warehouse are shared. Generate, ingest and dbt all meet the other run and must cope."""
    runs = []
    for n in (1, 2):
        env = dict(os.environ, CONTRIBFLOW_STATE_DIR=str(tmp_path / f"state-{n}"), CONTRIBFLOW_RUN_ID=f"twin-{n}")
        runs.append(spawn(["run", "--date", DAY.isoformat(), "--rows", "3000", "--defect-rate", "0.01"], env))
    outputs = [p.communicate(timeout=300) for p in runs]
    assert [p.returncode for p in runs] == [0, 0], outputs

    loads = sql("select run_id, rows_loaded, rows_rejected from meta.etl_run where step = 'ingest' order by rows_loaded")
    assert [r[1] for r in loads][0] == 0 and loads[1][1] + loads[1][2] == 3000
    assert sql("select count(*), count(distinct run_id) from raw.contributions") == [(loads[1][1], 1)]
    assert sql("select count(*) from meta.source_file where outcome = 'LOADED'") == [(1,)]
    assert sql("select count(*) from marts.fct_contributions") == [(loads[1][1],)]
    assert sql("select count(*) from meta.etl_run where status <> 'SUCCESS'") == [(0,)]
    assert sql("select count(*) from meta.dbt_node_result where status not in ('pass', 'success')") == [(0,)]


def test_a_dbt_step_waits_while_another_dbt_holds_the_warehouse(database, sql):
    assert cli(["init-db"]).returncode == 0
    sql("select pg_advisory_lock(hashtextextended('contribflow:dbt', 0))")
    proc = spawn(["dbt-build", "--date", DAY.isoformat()], dict(os.environ))
    try:
        wait_until(lambda: sql("select 1 from pg_locks where locktype = 'advisory' and not granted")
                   or proc.poll() is not None, 120, "dbt-build to wait on the dbt lock", interval=0.1)
        time.sleep(1)
        assert proc.poll() is None, "dbt-build must not start building while another dbt holds the lock"
        assert sql("select count(*) from pg_class where relnamespace = 'marts_build'::regnamespace") == [(0,)]
    finally:
        sql("select pg_advisory_unlock(hashtextextended('contribflow:dbt', 0))")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "another dbt run holds the warehouse; waiting for it to finish" in err
    assert sql("select to_regclass('marts_build.fct_contributions') is not null") == [(True,)]
    assert sql("select to_regclass('marts.fct_contributions') is null") == [(True,)], "built, not published"


# --- 3. the database unavailable ------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("where", ["socket folder without a server", "closed TCP port"])
def test_an_unreachable_database_is_retried_with_backoff_then_exits_75_in_one_line(database, tmp_path, where):
    env = dict(os.environ, CONTRIBFLOW_DB_CONNECT_ATTEMPTS="3", CONTRIBFLOW_DB_CONNECT_BACKOFF_S="0.3")
    if where == "closed TCP port":
        env.update(PGHOST="127.0.0.1", PGPORT=str(_free_port()))
    else:
        (tmp_path / "nothing-here").mkdir()
        env["PGHOST"] = str(tmp_path / "nothing-here")
    path = write_clean_file(Path(database["CONTRIBFLOW_LANDING_DIR"]), DAY, 10)  # arguments are checked first
    started = time.monotonic()
    done = cli(["ingest", "--date", DAY.isoformat(), "--file", str(path)], env, timeout=60)
    elapsed = time.monotonic() - started
    assert done.returncode == 75
    lines = done.stderr.strip().splitlines()
    assert lines[:2] == ["database not reachable (attempt 1/3), retrying in 0.3s",
                         "database not reachable (attempt 2/3), retrying in 0.6s"]
    assert len(lines) == 3 and lines[2].startswith(
        "contribflow ingest: error: cannot connect to PostgreSQL after 3 attempts: ")
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert 0.9 <= elapsed < 30


@pytest.fixture
def password_login(pg_server, database):
    """A login that must give a password (scram-sha-256 over the socket and TCP, via a pg_hba.conf
    line on the test server), with a known password."""
    import uuid

    import psycopg

    name, password = f"cf17_{uuid.uuid4().hex[:8]}", "the-right-password"
    with psycopg.connect(host=pg_server["PGHOST"], user=pg_server["PGUSER"], dbname=pg_server["PGDATABASE"],
                         autocommit=True) as admin:
        hba = Path(admin.execute("show hba_file").fetchone()[0])
        original = hba.read_text()
        hba.write_text("local all /^cf17_ scram-sha-256\nhost all /^cf17_ 127.0.0.1/32 scram-sha-256\n" + original)
        admin.execute("select pg_reload_conf()")
        admin.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        time.sleep(0.3)
        try:
            yield name, password
        finally:
            hba.write_text(original)
            admin.execute("select pg_reload_conf()")
            admin.execute(f"DROP ROLE IF EXISTS {name}")


@pytest.mark.parametrize("case", ["wrong password", "missing role", "missing database"])
def test_a_login_the_server_refuses_is_not_retried_and_exits_1(database, password_login, case):
    user, password = password_login
    env = dict(os.environ, CONTRIBFLOW_DB_CONNECT_ATTEMPTS="5", CONTRIBFLOW_DB_CONNECT_BACKOFF_S="2",
               PGUSER=user, PGPASSWORD="not-the-password")
    if case == "missing role":
        env.update(PGUSER="cf17_nobody_here", PGPASSWORD=password)
    elif case == "missing database":
        env.update(PGPASSWORD=password, PGDATABASE="no_such_database_here")
    started = time.monotonic()
    done = cli(["init-db"], env, timeout=60)
    assert done.returncode == 1, done.stderr
    assert time.monotonic() - started < 10, "no retries, no backoff"
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("contribflow init-db: error: PostgreSQL refused the login (not retried")
    assert {"wrong password": "password authentication failed", "missing role": "authentication failed",
            "missing database": "does not exist"}[case] in line
    assert "not-the-password" not in done.stderr and "the-right-password" not in done.stderr


def test_a_connection_lost_mid_load_is_transient_loads_nothing_and_the_step_says_so(database, sql):
    assert cli(["init-db"]).returncode == 0
    env = dict(os.environ, CONTRIBFLOW_CHUNK_ROWS="20000", CONTRIBFLOW_RUN_ID="run-cut")
    path = write_clean_file(Path(database["CONTRIBFLOW_LANDING_DIR"]), DAY, 200_000)
    proc = spawn(["ingest", "--date", DAY.isoformat(), "--file", str(path)], env)
    try:
        [(backend,)] = wait_until(lambda: sql(LOADING) or (proc.poll() is not None and pytest.fail(
            f"ingest ended (exit {proc.returncode}) before its connection could be cut")), 120, "rows streaming")
        assert sql("select pg_terminate_backend(%s)", (backend,)) == [(True,)]  # as a server restart would
    finally:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    assert err.strip().splitlines()[-1].startswith("contribflow ingest: database error (connection lost?): ")
    assert "Traceback" not in err
    assert sql("select count(*) from raw.contributions") == [(0,)]
    assert sql("select count(*) from meta.source_file") == [(0,)]
    status, error = sql("select status, error from meta.etl_run where run_id = 'run-cut'")[0]
    # The client reads the server's "terminating connection …" when the cut finds it waiting for a
    # reply, and only "connection socket closed" when it finds it writing COPY data.
    assert status == "FAILED" and re.search(r"terminating connection|socket closed|closed the connection",
                                            error), error


# --- 4. dbt failures ------------------------------------------------------------------------------

def _raw_row(declaration: str, status: str = "PAID", amount: str = "1.00", taxpayer_key: str = "k-injected") -> tuple:
    return (declaration, "99999", taxpayer_key, "2026-11-01", amount, "EUR", "INCOME_TAX", status, "LU",
            DAY, "injected.csv", 1, "injected")


INSERT_RAW = """insert into raw.contributions (declaration_id, taxpayer_id, taxpayer_key, event_date, amount,
    currency, contribution_type, status, country, file_date, source_file, source_line, run_id, record_hash)
    select v.*, raw.record_hash(d, t, e, a, c, ty, s, co)
      from (values (%s, %s, %s, %s::date, %s::numeric(14,2), %s, %s, %s, %s, %s::date, %s, %s::int, %s))
           as v(d, t, k, e, a, c, ty, s, co, fd, sf, sl, r)"""

MART = "select count(*), md5(coalesce(string_agg(t::text, ',' order by t::text), '')) from marts.{} t"


def test_a_failing_dbt_test_fails_the_step_and_is_listed_in_meta_and_in_the_audit(database, sql):
    env = dict(os.environ, CONTRIBFLOW_RUN_ID="run-dbt-test")
    assert cli(["init-db"], env).returncode == 0
    assert cli(["generate", "--date", DAY.isoformat(), "--rows", "300"], env).returncode == 0
    path = Path(database["CONTRIBFLOW_LANDING_DIR"]) / file_name(DAY)
    assert cli(["ingest", "--date", DAY.isoformat(), "--file", str(path)], env).returncode == 0
    # A row that bypassed ingest's validation (a manual fix, a bug): dbt's tests are the second net.
    sql(INSERT_RAW, _raw_row("DINJECTED1", status="LOST"))
    assert cli(["dbt-build", "--date", DAY.isoformat()], env).returncode == 0
    done = cli(["dbt-test", "--date", DAY.isoformat()], env)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    failing = {"test.contribflow.accepted_values_fct_contributions_status__PAID__DUE__CANCELLED",
               "test.contribflow.accepted_values_stg_contributions_status__PAID__DUE__CANCELLED"}
    recorded = sql("select unique_id, failures from meta.dbt_node_result "
                   "where step = 'dbt-test' and status = 'fail'")
    assert {u.split(".")[0] + "." + u.split(".")[1] + "." + u.split(".")[2] for u, _ in recorded} >= failing
    assert all(f == 1 for _, f in recorded)
    status, error, details = sql("select status, error, details from meta.etl_run where step = 'dbt-test'")[0]
    assert status == "FAILED" and details["tests_failed"] == len(recorded) == 2
    assert all(u in error for u, _ in recorded)
    assert sql("select count(*) from meta.dbt_node_result where step = 'dbt-test' and status = 'pass'")[0][0] > 10

    report = audit(env)
    dbt_test = next(d for d in report["dbt"] if d["step"] == "dbt-test")
    assert dbt_test["counts"]["fail"] == 2
    assert {n["unique_id"] for n in dbt_test["not_passed"]} == {u for u, _ in recorded}
    assert "FAIL: test.contribflow.accepted_values_fct_contributions_status" in cli(
        ["audit", "--date", DAY.isoformat()], env).stdout


def test_a_failing_model_build_leaves_the_published_marts_intact(database, sql, tmp_path):
    env = dict(os.environ)
    assert cli(["init-db"], env).returncode == 0
    assert cli(["generate", "--date", DAY.isoformat(), "--rows", "300"], env).returncode == 0
    path = Path(database["CONTRIBFLOW_LANDING_DIR"]) / file_name(DAY)
    assert cli(["ingest", "--date", DAY.isoformat(), "--file", str(path)], env).returncode == 0
    first = dict(env, CONTRIBFLOW_RUN_ID="run-first")
    for stage in ("dbt-build", "dbt-test", "publish"):
        done = cli([stage, "--date", DAY.isoformat()], first)
        assert done.returncode == 0, done.stderr
    marts_before = {m: sql(MART.format(m)) for m in ("dim_taxpayer", "fct_contributions")}
    relations_before = sql("select relname, relfilenode from pg_class where relnamespace = 'marts'::regnamespace "
                           "and relkind = 'r' order by 1")

    # Valid rows, each within numeric(14,2), whose sum overflows a numeric(16,2) total. Since issue 25
    # dim_taxpayer's totals are numeric(38,2) and hold any contract-valid data (test_state_over_time),
    # so the failing model is dim_taxpayer as it was: a copy of the project with its old total type.
    for n in range(200):
        sql(INSERT_RAW, _raw_row(f"DHUGE{n:04d}", amount="999999999999.99"))
    project = tmp_path / "dbt"
    shutil.copytree(ROOT / "dbt", project, ignore=shutil.ignore_patterns("target", "logs"))
    for name in ("dim_taxpayer.sql", "dim_taxpayer.yml"):
        model = project / "models" / "marts" / name
        model.write_text(model.read_text().replace("numeric(38, 2)", "numeric(16, 2)")
                         .replace("numeric(38,2)", "numeric(16,2)"))
    failing = dict(env, CONTRIBFLOW_RUN_ID="run-dbt-model", CONTRIBFLOW_DBT_PROJECT_DIR=str(project))
    done = cli(["dbt-build", "--date", DAY.isoformat()], failing)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    results = dict(sql("select unique_id, status from meta.dbt_node_result where run_id = 'run-dbt-model'"))
    assert results["model.contribflow.dim_taxpayer"] == "error"
    assert results["model.contribflow.fct_contributions_delta"] == "success"
    error = sql("select error from meta.etl_run where run_id = 'run-dbt-model'")[0][0]
    assert "model.contribflow.dim_taxpayer" in error and "numeric field overflow" in error, error
    assert sql("select status from meta.mart_build where run_id = 'run-dbt-model'") == [("BUILD_FAILED",)]
    done = cli(["publish", "--date", DAY.isoformat()], failing)
    assert done.returncode == 1 and "BUILD_FAILED, not TESTED" in done.stderr

    # Both marts untouched, still served: the fact rows that were built are not published either.
    assert {m: sql(MART.format(m)) for m in marts_before} == marts_before
    relations_after = sql("select relname, relfilenode from pg_class where relnamespace = 'marts'::regnamespace "
                          "and relkind = 'r' order by 1")
    assert relations_after == relations_before
    assert sql("select count(*) from marts.fct_contributions where declaration_id like 'DHUGE%%'") == [(0,)]
    assert sql("select count(*) from marts_build.fct_contributions_delta where declaration_id like 'DHUGE%%'") \
        == [(200,)], "the failed build is kept for inspection"


# --- 7. secrets -----------------------------------------------------------------------------------

REFUSAL = ("contribflow ingest: error: CONTRIBFLOW_ENV=production but CONTRIBFLOW_PSEUDONYM_KEY is unset: "
           "refusing to pseudonymise with the dev default key")


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize("key", [None, DEV_PSEUDONYM_KEY])
def test_production_refuses_the_dev_pseudonym_key(database, sql, key, log_format):
    env = dict(os.environ, CONTRIBFLOW_ENV="production", CONTRIBFLOW_LOG_FORMAT=log_format)
    env.pop("CONTRIBFLOW_PSEUDONYM_KEY", None)
    if key:
        env["CONTRIBFLOW_PSEUDONYM_KEY"] = key
    assert cli(["init-db"], env).returncode == 0
    path = write_clean_file(Path(database["CONTRIBFLOW_LANDING_DIR"]), DAY, 10)
    done = cli(["ingest", "--date", DAY.isoformat(), "--file", str(path)], env)
    assert done.returncode == 1
    if log_format == "text":
        assert done.stderr.strip().splitlines() == [REFUSAL]
    else:  # one JSON object per line (the refusal among them), and no secret in any record
        records = [json.loads(line) for line in done.stderr.strip().splitlines()]
        assert records[-1]["message"] == REFUSAL and records[-1]["level"] == "ERROR"
        assert all(r["step"] == "ingest" for r in records)
        assert DEV_PSEUDONYM_KEY not in done.stderr and DEV_PSEUDONYM_KEY not in done.stdout
    assert sql("select count(*) from raw.contributions") == [(0,)]
    status, error = sql("select status, error from meta.etl_run where step = 'ingest'")[0]
    assert status == "FAILED" and "dev default key" in error


# --- 8. contribflow audit -------------------------------------------------------------------------

def test_audit_answers_for_a_date_runs_steps_file_sha256_issues_and_dbt(database, sql):
    from contribflow.local import runner
    from contribflow.settings import Settings

    results = runner.run_graph(Settings.from_env(), {"run-date": DAY.isoformat(), "rows": "1500",
                                                     "defect-rate": "0.03"})
    assert all(r.state == "ok" for r in results)
    run_id = sql("select distinct run_id from meta.etl_run")[0][0]
    report = audit(dict(os.environ))
    assert report["date"] == DAY.isoformat() and report["stale_steps"] == []
    [run] = report["runs"]
    assert run["run_id"] == run_id and run["status"] == "SUCCESS"
    assert [s["step"] for s in run["steps"]] == ["init-db", "generate", "pick", "ingest", "dbt-build", "dbt-test", "publish", "finish"]
    ingest = next(s for s in run["steps"] if s["step"] == "ingest")
    raw, quarantined = sql("select (select count(*) from raw.contributions), "
                           "(select count(*) from raw.contributions_quarantine)")[0]
    assert (ingest["rows_in"], ingest["rows_loaded"], ingest["rows_rejected"]) == (1500, raw, quarantined)

    import hashlib
    path = Path(os.environ["CONTRIBFLOW_LANDING_DIR"]) / file_name(DAY)
    [f] = report["files"]
    assert (f["file_name"], f["sha256"], f["outcome"]) == (path.name, hashlib.sha256(path.read_bytes()).hexdigest(), "LOADED")

    issues = sql("select rule, column_name, count(*) from meta.data_quality_issue group by 1, 2")
    assert {(i["rule"], i["column_name"], i["issues"]) for i in report["quality_issues"]} == set(issues)
    assert all(0 < len(i["examples"]) <= 3 and all("line" in e for e in i["examples"]) for i in report["quality_issues"])
    tests = sql("select count(*) from meta.dbt_node_result where step = 'dbt-test'")[0][0]
    assert {d["step"]: d["counts"] for d in report["dbt"]}["dbt-test"] == {"pass": tests}

    table = cli(["audit", "--date", DAY.isoformat()], dict(os.environ)).stdout
    for expected in (run_id, f["sha256"], "LOADED", "no stale steps", "dbt-test", "pass=", issues[0][0]):
        assert expected in table
    empty = audit(dict(os.environ), DAY - dt.timedelta(days=1))
    assert empty["runs"] == [] and empty["files"] == []
