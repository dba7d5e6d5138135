"""The auditor's question, per number (issue 18), against a real PostgreSQL.

Two days run with one login per stage (members of the group roles); day 2 re-sends about a tenth of
day 1's declarations with a new status (DUE -> PAID). Then:

- ``contribflow trace`` as the auditor login shows, for such a declaration, both raw states with the
  file, sha256 and line of each, both ingest runs, and the mart row's current value; same as JSON;
- as the analyst login it is refused with a clear message; an unknown key is one clear line;
- the auditor role (migration 0008) reads meta, raw, staging and marts, writes nothing, and may not
  read the quarantine's raw text unless that column is granted explicitly;
- the evidence pack (``contribflow audit --from --to --html``) renders in headless Chromium with the
  right totals.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql as pgsql

from contribflow import roles
from contribflow.cluster import k8s

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
DAY1, DAY2 = dt.date(2026, 11, 1), dt.date(2026, 11, 2)
ROWS = 1500
TEST_KEY = "test-pseudonym-key-not-a-secret"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
# Headless, off the network: no sync, no component or safe-browsing updates, no QUIC, no first-run UI.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-quic", "--disable-default-apps", "--disable-extensions"]


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "contribflow", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def as_login(env: dict[str, str], login: str) -> dict[str, str]:
    out = {k: v for k, v in env.items() if not k.startswith("CONTRIBFLOW_DB_")}
    out["PGUSER"] = login
    return out


@pytest.fixture(scope="module")
def warehouse(pg_server, tmp_path_factory) -> Iterator[dict]:
    """Two days run by the stage logins; logins for the analyst and the auditor."""
    tmp = tmp_path_factory.mktemp("trace")
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = psycopg.connect(host=pg_server["PGHOST"], user=pg_server["PGUSER"],
                            dbname=pg_server["PGDATABASE"], autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    env = {k: v for k, v in os.environ.items()
           if k not in ("CONTRIBFLOW_DSN", "PGSERVICE", "PGHOSTADDR", "PGPORT", "PGPASSWORD",
                        "CONTRIBFLOW_RUN_ID", "CONTRIBFLOW_OUTPUTS_DIR")}
    env.update(pg_server)
    env.update({"PGDATABASE": name, "CONTRIBFLOW_LANDING_DIR": str(tmp / "landing"),
                "CONTRIBFLOW_STATE_DIR": str(tmp / "state"), "CONTRIBFLOW_DBT_PROJECT_DIR": str(ROOT / "dbt"),
                "CONTRIBFLOW_PSEUDONYM_KEY": TEST_KEY, "CONTRIBFLOW_DB_CONNECT_ATTEMPTS": "2",
                "CONTRIBFLOW_DB_CONNECT_BACKOFF_S": "0.1"})
    done = cli(["init-db"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    logins = {role: f"{name}_{role}" for role in k8s.DB_ROLES}
    with psycopg.connect(host=pg_server["PGHOST"], user=pg_server["PGUSER"], dbname=name,
                         autocommit=True) as db:
        for role, login in logins.items():
            db.execute(pgsql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                pgsql.Identifier(login), pgsql.Identifier(roles.group_role(role))))
    stages = dict(env)
    for role in ("migrator", "loader", "transformer"):
        stages[roles.login_vars(role)[0]] = logins[role]
    for day in (DAY1, DAY2):
        done = cli(["run", "--date", day.isoformat(), "--rows", str(ROWS), "--defect-rate", "0.02"], stages)
        assert done.returncode == 0, done.stdout + done.stderr
    try:
        yield {"env": env, "logins": logins, "tmp": tmp, "dbname": name}
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for login in logins.values():
            admin.execute(pgsql.SQL("DROP ROLE IF EXISTS {}").format(pgsql.Identifier(login)))
        admin.close()


def connect_as(warehouse: dict, role: str) -> psycopg.Connection:
    env = warehouse["env"]
    return psycopg.connect(host=env["PGHOST"], dbname=warehouse["dbname"], user=warehouse["logins"][role],
                           autocommit=True)


def resent_declaration(warehouse: dict) -> str:
    with connect_as(warehouse, "auditor") as conn:
        return conn.execute(
            """SELECT declaration_id FROM raw.contributions GROUP BY declaration_id
                HAVING count(*) = 2 AND min(status) = 'DUE' AND max(status) = 'PAID'
                ORDER BY declaration_id LIMIT 1""").fetchone()[0]


def test_trace_shows_both_raw_states_their_files_lines_runs_and_the_current_mart_value(warehouse):
    declaration = resent_declaration(warehouse)
    env = as_login(warehouse["env"], warehouse["logins"]["auditor"])

    done = cli(["trace", "--declaration", declaration, "--json"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    trace = json.loads(done.stdout)
    (d,) = trace["declarations"]
    first, second = d["raw_states"]
    assert (first["status"], second["status"]) == ("DUE", "PAID")
    assert second["changed"] == ["status: DUE -> PAID"]
    assert first["source_file"] == f"contributions_{DAY1:%Y%m%d}.csv"
    assert second["source_file"] == f"contributions_{DAY2:%Y%m%d}.csv"
    assert first["run_id"] != second["run_id"]
    assert all(re.fullmatch(r"[0-9a-f]{64}", s["sha256"]) for s in (first, second))
    assert first["sha256"] != second["sha256"]
    assert all(s["source_line"] >= 2 and s["ingest_status"] == "SUCCESS" and s["ran_on"]
               for s in (first, second))
    assert first["ingestion_ts"] < second["ingestion_ts"]
    (mart,) = d["mart_rows"]
    assert (mart["status"], mart["source_file"], mart["source_line"]) == (
        "PAID", second["source_file"], second["source_line"])
    assert d["staging_row"]["status"] == "PAID"
    assert "TAXP_" not in json.dumps(trace)  # a raw taxpayer id never leaves raw
    assert {f["sha256"] for f in trace["files"]} == {first["sha256"], second["sha256"]}
    assert all(f["outcome"] == "LOADED" and f["rows_in"] == ROWS for f in trace["files"])
    published = trace["published_build"]
    assert published["status"] == "PUBLISHED" and published["run_id"] == second["run_id"]
    assert trace["published_build_tests"]["passed"] > 10
    assert trace["published_build_tests"]["not_passed"] == []

    # The same facts, for people.
    done = cli(["trace", "--declaration", declaration], env)
    assert done.returncode == 0, done.stdout + done.stderr
    text = done.stdout
    for fact in (declaration, first["sha256"], second["sha256"], first["run_id"], second["run_id"],
                 f"{first['source_file']} line {first['source_line']}",
                 f"{second['source_file']} line {second['source_line']}", "status: DUE -> PAID",
                 "marts.fct_contributions: status PAID"):
        assert fact in text, fact

    # By taxpayer key: the same declaration among that taxpayer's.
    done = cli(["trace", "--taxpayer-key", mart["taxpayer_key"], "--json"], env)
    assert done.returncode == 0, done.stderr
    assert declaration in [x["declaration_id"] for x in json.loads(done.stdout)["declarations"]]


def test_trace_is_refused_to_the_analyst_and_an_unknown_key_is_one_clear_line(warehouse):
    declaration = resent_declaration(warehouse)
    analyst = as_login(warehouse["env"], warehouse["logins"]["analyst"])
    done = cli(["trace", "--declaration", declaration], analyst)
    assert done.returncode == 1
    assert "may not trace" in done.stderr and "contribflow_auditor" in done.stderr, done.stderr
    assert done.stdout == ""

    auditor = as_login(warehouse["env"], warehouse["logins"]["auditor"])
    done = cli(["trace", "--declaration", "DEC_19990101_000001"], auditor)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "contribflow trace: error: no declaration 'DEC_19990101_000001' in raw.contributions "
        "(nothing arrived with that id)"]
    done = cli(["trace", "--taxpayer-key", "0" * 64], auditor)
    assert done.returncode == 1 and "no declaration of taxpayer key" in done.stderr
    done = cli(["trace", "--taxpayer-key", "TAXP_12345"], auditor)  # a raw id is never an input
    assert done.returncode == 2 and "never accepted" in done.stderr


def test_the_auditor_role_reads_what_trace_and_audit_need_and_writes_nothing(warehouse):
    with connect_as(warehouse, "auditor") as auditor:
        for table in ("raw.contributions", "meta.etl_run", "meta.source_file", "meta.data_quality_issue",
                      "meta.dbt_node_result", "meta.mart_build", "meta.source_freshness",
                      "meta.schema_migration", "staging.stg_contributions", "marts.fct_contributions"):
            assert auditor.execute(f"SELECT count(*) FROM {table}").fetchone()[0] >= 1, table
        assert auditor.execute("SELECT count(*) FROM raw.contributions_quarantine").fetchone()[0] > 0
        assert auditor.execute("SELECT source_file, source_line, reasons, run_id "
                               "FROM raw.contributions_quarantine LIMIT 1").fetchone()
        # The quarantine's raw text holds raw taxpayer ids: not without an explicit grant.
        for forbidden in ("SELECT raw_line FROM raw.contributions_quarantine LIMIT 1",
                          "SELECT * FROM raw.contributions_quarantine LIMIT 1",
                          "SELECT 1 FROM marts_build.fct_contributions_delta LIMIT 1",
                          "INSERT INTO meta.etl_run (run_id, step, status) VALUES ('x', 'forged', 'SUCCESS')",
                          "UPDATE meta.etl_run SET status = 'FAILED'",
                          "DELETE FROM meta.source_file",
                          "UPDATE raw.contributions SET amount = 0",
                          "DELETE FROM raw.contributions",
                          "TRUNCATE raw.contributions",
                          "INSERT INTO raw.contributions_quarantine (source_sha256, source_line, source_file, "
                          "file_date, raw_line, reasons, run_id) VALUES ('x', 1, 'x', now(), 'x', '{}', 'x')",
                          "UPDATE marts.fct_contributions SET amount = 0",
                          "DELETE FROM marts.fct_contributions",
                          "CREATE TABLE meta.mine (x int)",
                          "CREATE TABLE raw.mine (x int)",
                          "CREATE TABLE marts.mine (x int)",
                          "CREATE TABLE staging.mine (x int)",
                          "CREATE SCHEMA mine"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                auditor.execute(forbidden)
    # The explicit grant README documents lets the auditor read the raw text, and nothing more.
    with psycopg.connect(host=warehouse["env"]["PGHOST"], user=warehouse["env"]["PGUSER"],
                         dbname=warehouse["dbname"], autocommit=True) as admin:
        admin.execute("GRANT SELECT (raw_line) ON raw.contributions_quarantine TO contribflow_auditor")
        try:
            with connect_as(warehouse, "auditor") as auditor:
                assert auditor.execute("SELECT raw_line FROM raw.contributions_quarantine LIMIT 1").fetchone()
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    auditor.execute("DELETE FROM raw.contributions_quarantine")
        finally:
            admin.execute("REVOKE SELECT (raw_line) ON raw.contributions_quarantine FROM contribflow_auditor")
    # The analyst still reads marts only: the new role changed nothing for it.
    with connect_as(warehouse, "analyst") as analyst:
        assert analyst.execute("SELECT count(*) FROM marts.fct_contributions").fetchone()[0] > ROWS
        for forbidden in ("raw.contributions", "meta.etl_run", "staging.stg_contributions"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                analyst.execute(f"SELECT 1 FROM {forbidden} LIMIT 1")


def test_trace_by_declaration_uses_indexes_not_a_scan_of_raw(warehouse):
    declaration = resent_declaration(warehouse)
    with connect_as(warehouse, "auditor") as auditor:
        auditor.execute("SET enable_seqscan = off")  # a 3,000-row table: ask whether an index serves
        from contribflow.audit import trace
        for query in (trace._RAW, trace._STAGING, trace._MART):
            plan = "\n".join(r[0] for r in auditor.execute("EXPLAIN " + query, ([declaration],)))
            assert "Seq Scan on contributions" not in plan, plan
        raw_plan = "\n".join(r[0] for r in auditor.execute("EXPLAIN " + trace._RAW, ([declaration],)))
        assert "contributions_declaration_id_file_date_record_hash_revision_key" in raw_plan, raw_plan


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180)


def test_the_evidence_pack_of_the_two_days_renders_in_chromium_with_the_right_totals(warehouse, tmp_path):
    assert Path(CHROMIUM).exists(), (
        "chromium is missing: `make test` installs it (make chromium); the evidence pack is tested in a real browser")
    pack = tmp_path / "pack.html"
    env = as_login(warehouse["env"], warehouse["logins"]["auditor"])
    done = cli(["audit", "--from", DAY1.isoformat(), "--to", DAY2.isoformat(), "--html", str(pack)], env)
    assert done.returncode == 0, done.stdout + done.stderr

    with connect_as(warehouse, "auditor") as auditor:
        ledger = auditor.execute("SELECT file_date, sha256, rows_loaded, rows_rejected FROM meta.source_file "
                                 "WHERE outcome = 'LOADED' ORDER BY file_date").fetchall()
        published = auditor.execute("SELECT id FROM meta.mart_build WHERE status = 'PUBLISHED' "
                                    "ORDER BY id DESC LIMIT 1").fetchone()[0]
        taxpayer_ids = [r[0] for r in auditor.execute("SELECT DISTINCT taxpayer_id FROM raw.contributions")]
    assert len(ledger) == 2
    loaded, quarantined = sum(r[2] for r in ledger), sum(r[3] for r in ledger)
    assert quarantined > 0

    html = pack.read_text()
    # Self-contained: nothing to fetch, no script.
    assert not re.search(r"""(src|href)\s*=|<script|@import|url\(|https?://(?!www\.w3\.org/2000/svg)""", html)
    assert not any(t in html for t in taxpayer_ids)  # identifiers masked, raw ids never in the pack

    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path))
    dom = chromium(["--dump-dom", pack.as_uri()], profile)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    assert 'id="total-files">2<' in page
    assert f'id="total-loaded">{loaded:,}<' in page
    assert f'id="total-quarantined">{quarantined:,}<' in page
    assert f'id="total-rows-in">{2 * ROWS:,}<' in page
    assert f'id="published-build">build {published}<' in page
    for day, sha, rows_loaded, rows_rejected in ledger:
        assert sha in page and day.isoformat() in page
        assert f"{rows_loaded:,}" in page and f"{rows_rejected:,}" in page
    assert page.count("<rect") >= 4 + 2  # two bars a day, and the legend
    assert "dbt-test" in page and "No late file in this period." in page

    shot = tmp_path / "pack.png"
    done = chromium([f"--screenshot={shot}", "--window-size=1280,2000", pack.as_uri()],
                    Path(tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)))
    assert done.returncode == 0, done.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1280, 2000)
