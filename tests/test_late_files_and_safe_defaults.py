"""Late files and defaults that cannot harm production (issue 17), against a real PostgreSQL:
pick waits for a file up to a deadline, then fails as "late"; generate never overwrites a
different file and refuses to run in production."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from contribflow import generate
from contribflow.contract import file_name
from contribflow.local import runner
from contribflow.settings import Settings

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 11, 26)
ROOT = Path(__file__).resolve().parents[1]


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "contribflow", *args], env=env, capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


def local_run(env: dict[str, str], rows: int = 800) -> dict[str, str]:
    params = {"run-date": DAY.isoformat(), "rows": str(rows), "defect-rate": "0", "generate": "false"}
    return {r.stage: r.state for r in runner.run_graph(Settings.from_env(env), params, env)}


# --- late files -------------------------------------------------------------------------------------

def test_a_file_that_never_arrives_is_waited_for_then_fails_as_late(database, sql):
    env = dict(os.environ, CONTRIBFLOW_LATE_DEADLINE_S="3", CONTRIBFLOW_LATE_POLL_S="0.5",
               CONTRIBFLOW_RUN_ID="run-late")
    started = time.monotonic()
    states = local_run(env)
    assert time.monotonic() - started >= 3, "pick waited for the deadline"
    assert states["pick"] == "failed" and states["ingest"] == "blocked" and states["finish"] == "failed"
    [(status, error, error_class, details)] = sql(
        "select status, error, error_class, details from meta.etl_run where step = 'pick'")
    assert (status, error_class) == ("FAILED", "late")
    assert error.startswith(f"file for {DAY.isoformat()} is late: expected ") and details["waited_s"] >= 3
    assert "is late" in sql("select error from meta.etl_run where step = 'finish'")[0][0]
    report = cli(["audit", "--date", DAY.isoformat()], env)
    assert report.returncode == 0, report.stderr
    assert f"LATE: error: file for {DAY.isoformat()} is late" in report.stdout


def test_a_file_arriving_within_the_deadline_is_picked_up_and_the_run_succeeds(database, sql):
    env = dict(os.environ, CONTRIBFLOW_LATE_DEADLINE_S="120", CONTRIBFLOW_LATE_POLL_S="0.5",
               CONTRIBFLOW_RUN_ID="run-waits")
    landing = Path(database["CONTRIBFLOW_LANDING_DIR"])

    def source_system_drops_the_file() -> None:
        """3.5 s after pick started waiting (however long the stages before it took)."""
        deadline = time.monotonic() + 120
        with psycopg.connect(autocommit=True) as conn:
            while time.monotonic() < deadline:
                try:
                    if conn.execute("select 1 from meta.etl_run where step = 'pick'").fetchone():
                        break
                except psycopg.errors.UndefinedTable:
                    pass  # init-db has not created meta yet
                time.sleep(0.1)
        time.sleep(3.5)
        landing.mkdir(parents=True, exist_ok=True)
        generate.write_file(landing / file_name(DAY), generate.rows_for(DAY, 800))

    dropper = threading.Thread(target=source_system_drops_the_file)
    dropper.start()
    try:
        states = local_run(env)
    finally:
        dropper.join()
    assert set(states.values()) == {"ok", "skipped"}, states
    [(status, details)] = sql("select status, details from meta.etl_run where step = 'pick'")
    assert status == "SUCCESS" and 3 <= details["waited_s"] < 60
    assert sql("select count(*) > 0 from marts.fct_contributions where file_date = %s", (DAY,)) == [(True,)]


def test_without_wait_pick_exits_76_until_the_deadline_then_1_as_late(database, sql):
    """What Argo sees: each attempt is a new pod; 76 is retried with backoff, the deadline counts
    from the run's first attempt (meta.etl_run), and after it the step fails for good."""
    env = dict(os.environ, CONTRIBFLOW_LATE_DEADLINE_S="2", CONTRIBFLOW_RUN_ID="run-argo-late")
    assert cli(["init-db"], env).returncode == 0
    first = cli(["pick", "--date", DAY.isoformat()], env)
    assert first.returncode == 76, first.stderr
    assert f"file for {DAY.isoformat()} has not arrived yet" in first.stderr
    time.sleep(2.2)
    last = cli(["pick", "--date", DAY.isoformat()], env)
    assert last.returncode == 1 and f"file for {DAY.isoformat()} is late" in last.stderr
    assert sql("select status, error_class from meta.etl_run where step = 'pick' order by id") == [
        ("FAILED", "waiting"), ("FAILED", "late")]


# --- generate ---------------------------------------------------------------------------------------

def test_generate_never_overwrites_a_different_file_and_rewrites_the_same_bytes_harmlessly(database, sql):
    env = dict(os.environ)
    assert cli(["init-db"], env).returncode == 0
    args = ["generate", "--date", DAY.isoformat(), "--rows", "50"]
    assert cli(args, env).returncode == 0
    path = Path(database["CONTRIBFLOW_LANDING_DIR"]) / file_name(DAY)
    assert cli(args, env).returncode == 0, "the same bytes again: a re-run is harmless"
    manifest = path.with_name(path.name + ".manifest.json")
    written = manifest.read_bytes()

    dropped = b"declaration_id,taxpayer_id,event_date,amount,currency,contribution_type,status,country\n"
    path.write_bytes(dropped)  # what the source system dropped
    mtime = path.stat().st_mtime_ns
    done = cli(args, env)
    assert done.returncode == 1
    assert done.stderr.strip() == (f"contribflow generate: error: refusing to overwrite {path}: it exists with "
                                   "different content (a file the source system dropped, or another seed/size); "
                                   "move it away first if it really is to be replaced")
    assert path.read_bytes() == dropped and path.stat().st_mtime_ns == mtime
    assert manifest.read_bytes() == written, "a refused generate does not touch the manifest either"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, manifest.name], "no partial file left behind"
    assert sql("select status from meta.etl_run where step = 'generate' order by id") == [
        ("SUCCESS",), ("SUCCESS",), ("FAILED",)]


def test_generate_refuses_to_run_at_all_in_production(database, sql, tmp_path):
    env = dict(os.environ, CONTRIBFLOW_ENV="production", CONTRIBFLOW_PSEUDONYM_KEY="a-production-length-key-" * 2)
    assert cli(["init-db"], env).returncode == 0
    done = cli(["generate", "--date", DAY.isoformat(), "--rows", "50"], env)
    assert done.returncode == 1
    assert "generate writes synthetic data and is refused when CONTRIBFLOW_ENV=production" in done.stderr
    assert not (Path(database["CONTRIBFLOW_LANDING_DIR"]) / file_name(DAY)).exists()
    assert sql("select count(*) from meta.etl_run where step = 'generate'") == [(0,)]
    out = cli(["generate", "--date", DAY.isoformat(), "--rows", "50", "--out", str(tmp_path / "x.csv")], env)
    assert out.returncode == 1 and not (tmp_path / "x.csv").exists()



# --- the local warehouse ----------------------------------------------------------------------------

def test_without_pg_variables_the_stages_and_the_audit_use_the_local_embedded_warehouse():
    import shutil
    import tempfile

    from contribflow import cli as cli_module
    from contribflow.graph import EXIT_STAGE, STAGES

    assert {s.name for s in (*STAGES, EXIT_STAGE)} | {"audit", "trace", "purge-quarantine", "withdraw-file",
                                                   "request", "requests", "approve", "reject", "apply",
                                                   "publications", "reproduce", "verify"} \
        == cli_module.WAREHOUSE_COMMANDS
    state = Path(tempfile.mkdtemp(prefix="cf17-"))  # short: the server's socket lives in it
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PG") and k not in ("CONTRIBFLOW_DSN", "CONTRIBFLOW_RUN_ID")}
    env.update(CONTRIBFLOW_STATE_DIR=str(state), CONTRIBFLOW_LANDING_DIR=str(state / "landing"),
               CONTRIBFLOW_RUN_ID="run-local", CONTRIBFLOW_DB_CONNECT_ATTEMPTS="1")
    try:
        assert cli(["init-db"], env).returncode == 0
        assert cli(["pick", "--date", DAY.isoformat()], env).returncode == 1  # no file: late at once
        done = cli(["audit", "--date", DAY.isoformat()], env)
        assert done.returncode == 0, done.stderr
        assert "run run-local" in done.stdout and f"file for {DAY.isoformat()} is late" in done.stdout
        assert (state / "pgdata" / "postmaster.pid").exists()
    finally:
        cli(["db", "stop"], env)
        shutil.rmtree(state, ignore_errors=True)
