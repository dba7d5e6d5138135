"""Replay of the rendered WorkflowTemplate against a real PostgreSQL (issue 3): the manifest's own
commands, args, env and output parameters, run in its DAG order, leave the same warehouse as
``contribflow run``, and a broken input stops the dependants and is recorded FAILED."""

from __future__ import annotations

import datetime as dt
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml

from contribflow import roles
from contribflow.cluster import k8s
from contribflow.contract import file_name
from contribflow.graph import EXIT_STAGE, STAGES
from contribflow.local import runner
from contribflow.settings import Settings

from argo_replay import Replay, ReplayResult
from conftest import ROOT, TEST_KEY
from helpers import good_row, write_source

pytestmark = pytest.mark.integration

DAILY = ROOT / "workflows" / "rendered" / "workflowtemplate-contribflow-daily.yaml"
BACKFILL = ROOT / "workflows" / "rendered" / "workflowtemplate-contribflow-backfill.yaml"
DAY = dt.date(2026, 11, 24)
PARAMS = {"run-date": DAY.isoformat(), "rows": "1500", "defect-rate": "0.02", "generate": "true"}
VENV_BIN = Path(sys.executable).parent
COMPARED_SCHEMAS = ("raw", "staging", "marts", "meta")
NOT_COMPARED = {"id", "run_id", "row_digest", "content_hash", "published_by"}
"""Plus every timestamptz column: they differ between any two runs by construction (the digests and
content hashes of the published rows too: a row's canonical text holds its raw_loaded_at). Who
published differs by design: each replayed pod logs in as its stage's login, contribflow run as
the test's superuser."""
PER_RUN_TABLES = {("meta", "etl_run"), ("meta", "dbt_node_result"), ("meta", "source_freshness"),
                  ("meta", "audit_chain"), ("meta", "audit_chain_head")}
"""Also the audit chain: each entry's hash covers its row's timestamps and run ids."""


def server_settings(server: dict[str, str], dbname: str) -> dict[str, str]:
    """The ConfigMap contribflow-settings as the chart would fill it, pointing at the test server."""
    return {
        **{k: v for k, v in server.items() if k != "PGUSER"},
        "PGDATABASE": dbname,
        "CONTRIBFLOW_ENV": "dev",
        "CONTRIBFLOW_DBT_PROJECT_DIR": str(ROOT / "dbt"),
        "CONTRIBFLOW_DB_CONNECT_ATTEMPTS": "2",
        "CONTRIBFLOW_DB_CONNECT_BACKOFF_S": "0.1",
    }


def stand_in_secrets(logins: dict[str, str]) -> dict[str, dict[str, str]]:
    """The Secrets as the chart fills them: each role's own login (the test server trusts its
    socket, so passwords are not checked); the pseudonym key is the test key."""
    db = {}
    for role in k8s.DB_ROLES:
        user_key, password_key = k8s.db_secret_keys(role)
        db[user_key], db[password_key] = logins[role], f"unused-{role}-password"
    return {k8s.DB_SECRET: db, k8s.PSEUDONYM_SECRET: {k8s.PSEUDONYM_SECRET_KEY: TEST_KEY}}


@pytest.fixture
def stage_logins(database, pg_server) -> Iterator[dict[str, str]]:
    """What the database needs before the first run: per role, a NOLOGIN group role and a LOGIN
    user in it; CONNECT for every group, CREATE on the database for the migrator and transformer
    (as the chart's init script does). The replayed pods then connect as their own role only."""
    dbname = database["PGDATABASE"]
    logins = {role: f"{dbname}_{role}" for role in k8s.DB_ROLES}
    with psycopg.connect(host=pg_server["PGHOST"], user=pg_server["PGUSER"], dbname=dbname,
                         autocommit=True) as admin:
        for role, login in logins.items():
            group = roles.group_role(role)
            if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (group,)).fetchone():
                admin.execute(f'CREATE ROLE "{group}" NOLOGIN')
            admin.execute(f'CREATE ROLE "{login}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE')
            admin.execute(f'GRANT "{group}" TO "{login}"')
            admin.execute(f'GRANT CONNECT ON DATABASE "{dbname}" TO "{group}"')
            if role in ("migrator", "transformer"):
                admin.execute(f'GRANT CREATE ON DATABASE "{dbname}" TO "{group}"')
        # The people's group roles (migration 0016), which the chart's init script creates too.
        for group in ("contribflow_operator", "contribflow_approver"):
            if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (group,)).fetchone():
                admin.execute(f'CREATE ROLE "{group}" NOLOGIN')
            admin.execute(f'GRANT CONNECT ON DATABASE "{dbname}" TO "{group}"')
        # What migration 0002 asks an administrator for when the migrator may not create roles:
        # the migrator (acting as its group) may SET every group role, to grant and own for it.
        migrator = roles.group_role("migrator")
        granted = []
        for role in k8s.DB_ROLES:
            group = roles.group_role(role)
            if role != "migrator" and not admin.execute(
                    "SELECT pg_has_role(%s, %s, 'SET')", (migrator, group)).fetchone()[0]:
                admin.execute(f'GRANT "{group}" TO "{migrator}" WITH INHERIT TRUE, SET TRUE')
                granted.append(group)
    yield logins
    with psycopg.connect(host=pg_server["PGHOST"], user=pg_server["PGUSER"], dbname=pg_server["PGDATABASE"],
                         autocommit=True) as admin:
        for group in granted:  # roles are server-wide: leave other tests the server as it was
            admin.execute(f'REVOKE "{group}" FROM "{migrator}"')
        for login in logins.values():
            admin.execute(f'DROP ROLE IF EXISTS "{login}"')


def replay(tmp: Path, server: dict[str, str], dbname: str, params: dict[str, str], logins: dict[str, str],
           claims: dict[str, Path] | None = None, rendered: Path = DAILY,
           settings: dict[str, str] | None = None) -> tuple[ReplayResult, str, str]:
    template = yaml.safe_load(rendered.read_text(encoding="utf-8"))
    uid, name = str(uuid.uuid4()), f"{template['metadata']['name']}-replay"
    result = Replay(
        template, parameters=params,
        workflow_templates={k8s.WORKFLOW_TEMPLATE: yaml.safe_load(DAILY.read_text(encoding="utf-8"))},
        secrets=stand_in_secrets(logins),
        config_maps={k8s.CONFIGMAP: {**server_settings(server, dbname), **(settings or {})}},
        work_dir=tmp, workflow_uid=uid, workflow_name=name, claims=claims,
        base_env={"PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
                  "HOME": str(tmp), "LANG": "C.UTF-8"},
    ).run()
    return result, uid, name


@pytest.fixture
def other_database(pg_server: dict[str, str]) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host=pg_server["PGHOST"], user=pg_server["PGUSER"], dbname=pg_server["PGDATABASE"],
                         autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(host=pg_server["PGHOST"], user=pg_server["PGUSER"], dbname=pg_server["PGDATABASE"],
                         autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def warehouse(server: dict[str, str], dbname: str) -> dict[str, list[tuple]]:
    """Every table and view of raw/staging/marts/meta, row by row, without ids, run ids and
    timestamps (which differ between any two runs)."""
    with psycopg.connect(host=server["PGHOST"], user=server["PGUSER"], dbname=dbname) as conn:
        columns = conn.execute(
            """SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns
                WHERE table_schema = ANY(%s) ORDER BY table_schema, table_name, ordinal_position""",
            (list(COMPARED_SCHEMAS),)).fetchall()
        tables: dict[tuple[str, str], list[str]] = {}
        for schema, table, column, data_type in columns:
            keep = column not in NOT_COMPARED and data_type != "timestamp with time zone"
            cols = tables.setdefault((schema, table), [])
            if keep:
                cols.append(column)
        contents = {}
        for (schema, table), cols in tables.items():
            if (schema, table) in PER_RUN_TABLES:
                continue
            select = ", ".join(f'"{c}"' for c in cols)
            order = ", ".join(str(i + 1) for i in range(len(cols)))
            contents[f"{schema}.{table}"] = conn.execute(
                f'SELECT {select} FROM "{schema}"."{table}" ORDER BY {order}').fetchall()
    return contents


def etl_runs(server: dict[str, str], dbname: str) -> list[tuple]:
    with psycopg.connect(host=server["PGHOST"], user=server["PGUSER"], dbname=dbname) as conn:
        return conn.execute("""SELECT step, status, run_id, workflow_name, task_name, pod_name, ran_on, error
                                 FROM meta.etl_run ORDER BY id""").fetchall()


def test_replaying_the_rendered_template_leaves_the_warehouse_contribflow_run_leaves(
        database, pg_server, other_database, stage_logins, tmp_path):
    result, uid, wf_name = replay(tmp_path / "replay", pg_server, database["PGDATABASE"], PARAMS, stage_logins)
    failures = {n: (r.phase, r.attempts and r.attempts[-1].stderr) for n, r in result.tasks.items()
                if r.phase != "Succeeded"}
    assert result.status == "Succeeded", failures
    assert result.exit_handler is not None and result.exit_handler.phase == "Succeeded", \
        result.exit_handler.attempts[-1].stderr
    assert list(result.tasks) == [s.name for s in STAGES]
    ingest = result.tasks["ingest"]
    assert ingest.argv[:2] == ["contribflow", "ingest"]
    assert result.tasks["pick"].outputs["file"] == f"{k8s.LANDING_MOUNT}/{file_name(DAY)}"
    assert ingest.argv[-2:] == ["--file", str(tmp_path / "replay" / "pvc" / k8s.LANDING_PVC / file_name(DAY))]
    assert int(ingest.outputs["rows_in"]) == 1500
    assert int(ingest.outputs["rows_loaded"]) + int(ingest.outputs["rows_rejected"]) == 1500
    assert result.tasks["dbt-test"].outputs["tests_failed"] == "0"
    assert "CONTRIBFLOW_PSEUDONYM_KEY" not in result.tasks["dbt-build"].env
    assert result.tasks["publish"].argv[:2] == ["contribflow", "publish"]
    assert int(result.tasks["publish"].outputs["fct_rows_inserted"]) > 1000
    assert result.tasks["dbt-test"].outputs["freshness"] == "pass"

    local_env = {**os.environ, **server_settings(pg_server, other_database), "PGUSER": pg_server["PGUSER"],
                 "CONTRIBFLOW_PSEUDONYM_KEY": TEST_KEY,
                 "CONTRIBFLOW_LANDING_DIR": str(tmp_path / "local" / "landing"),
                 "CONTRIBFLOW_STATE_DIR": str(tmp_path / "local" / "state")}
    local_env.pop("CONTRIBFLOW_RUN_ID", None)
    local = runner.run_graph(Settings.from_env(local_env), PARAMS, local_env)
    assert {r.stage: r.state for r in local} == {s.name: "ok" for s in (*STAGES, EXIT_STAGE)}

    replayed = warehouse(pg_server, database["PGDATABASE"])
    expected = warehouse(pg_server, other_database)
    assert replayed.keys() == expected.keys()
    assert {"raw.contributions", "raw.contributions_quarantine", "marts.fct_contributions",
            "marts.dim_taxpayer", "staging.stg_contributions", "meta.source_file"} <= replayed.keys()
    assert len(replayed["raw.contributions"]) > 1000 and replayed["raw.contributions_quarantine"]
    assert replayed["marts.fct_contributions"] and replayed["marts.dim_taxpayer"]
    for table in expected:
        assert replayed[table] == expected[table], f"{table} differs between the replay and contribflow run"

    rows = etl_runs(pg_server, database["PGDATABASE"])
    steps = [s.name for s in (*STAGES, EXIT_STAGE)]
    assert [r[0] for r in rows] == steps, "one row per task, in DAG order, then the exit handler"
    pods = {**{n: r.pod_name for n, r in result.tasks.items()}, "finish": result.exit_handler.pod_name}
    for step, status, run_id, workflow_name, task_name, pod_name, ran_on, error in rows:
        assert (status, run_id, workflow_name, task_name, error) == ("SUCCESS", uid, wf_name, step, None)
        assert pod_name == ran_on == pods[step]


def test_a_broken_input_stops_the_dependants_and_the_exit_handler_records_failed(
        database, pg_server, stage_logins, tmp_path):
    landing = tmp_path / "landing-pvc"
    write_source(landing, DAY, [good_row(1), good_row(2)], header="declaration_id,taxpayer_id,amount")
    params = {**PARAMS, "generate": "false"}
    result, uid, wf_name = replay(tmp_path / "replay", pg_server, database["PGDATABASE"], params, stage_logins,
                                  claims={k8s.LANDING_PVC: landing})
    phases = {n: r.phase for n, r in result.tasks.items()}
    assert phases == {"init-db": "Succeeded", "generate": "Skipped", "pick": "Succeeded", "ingest": "Failed",
                      "dbt-build": "Omitted", "dbt-test": "Omitted", "publish": "Omitted"}
    ingest = result.tasks["ingest"]
    assert [a.exit_code for a in ingest.attempts] == [1], "a data failure is not retried"
    assert "column" in ingest.attempts[0].stderr
    assert result.status == "Failed"
    finish = result.exit_handler
    assert finish is not None and finish.argv[-2:] == ["--status", "Failed"]
    assert finish.phase == "Failed"

    rows = {r[0]: r for r in etl_runs(pg_server, database["PGDATABASE"])}
    assert set(rows) == {"init-db", "pick", "ingest", "finish"}
    assert rows["ingest"][1] == "FAILED" and rows["ingest"][7]
    assert rows["finish"][1] == "FAILED" and "ingest" in rows["finish"][7]
    assert {r[2] for r in rows.values()} == {uid}
    with psycopg.connect(host=pg_server["PGHOST"], user=pg_server["PGUSER"], dbname=database["PGDATABASE"]) as c:
        assert c.execute("SELECT count(*) FROM raw.contributions").fetchone()[0] == 0
        assert c.execute("SELECT outcome FROM meta.source_file").fetchall() == [("REFUSED",)]


def test_a_late_file_is_retried_on_exit_76_by_the_manifest_then_fails_as_late(database, pg_server, stage_logins,
                                                                             tmp_path):
    landing = tmp_path / "landing-pvc"
    landing.mkdir()
    params = {**PARAMS, "generate": "false"}
    result, uid, _ = replay(tmp_path / "replay", pg_server, database["PGDATABASE"], params, stage_logins,
                            claims={k8s.LANDING_PVC: landing}, settings={"CONTRIBFLOW_LATE_DEADLINE_S": "2"})
    pick = result.tasks["pick"]
    codes = [a.exit_code for a in pick.attempts]
    assert codes[-1] == 1 and set(codes[:-1]) == {76} and 2 <= len(codes) <= 21, codes
    assert f"file for {DAY.isoformat()} is late" in pick.attempts[-1].stderr
    assert pick.phase == "Failed" and result.status == "Failed"
    assert all(r.phase == "Omitted" for n, r in result.tasks.items() if n not in ("init-db", "generate", "pick"))
    with psycopg.connect(host=pg_server["PGHOST"], user=pg_server["PGUSER"], dbname=database["PGDATABASE"]) as c:
        classes = c.execute("SELECT error_class FROM meta.etl_run WHERE step = 'pick' ORDER BY id").fetchall()
    assert [c for (c,) in classes] == ["waiting"] * (len(codes) - 1) + ["late"]


def test_an_unreachable_database_is_retried_by_the_manifest_s_retry_strategy(database, pg_server, stage_logins,
                                                                              tmp_path):
    unreachable = {**pg_server, "PGHOST": str(tmp_path / "no-server-here")}
    (tmp_path / "no-server-here").mkdir()
    result, _, _ = replay(tmp_path / "replay", unreachable, database["PGDATABASE"], PARAMS, stage_logins)
    init_db = result.tasks["init-db"]
    assert [a.exit_code for a in init_db.attempts] == [75] * 4, "exit 75 is retried up to the limit (3)"
    assert all(r.phase == "Omitted" for n, r in result.tasks.items() if n != "init-db")
    assert result.status == "Failed"


def test_the_backfill_runs_one_audited_daily_workflow_per_date(database, pg_server, stage_logins, tmp_path):
    params = {"from": "2026-11-23", "to": "2026-11-24", "rows": "400", "generate": "true"}
    result, _, _ = replay(tmp_path / "replay", pg_server, database["PGDATABASE"], params, stage_logins,
                          rendered=BACKFILL)
    assert result.status == "Succeeded"
    assert result.tasks["dates"].outputs["dates"] == '["2026-11-23", "2026-11-24"]'
    days = result.tasks["run-day"].items
    assert [d.workflow.tasks["init-db"].argv[-1] for d in days] == ["2026-11-23", "2026-11-24"]
    assert all(d.workflow.status == "Succeeded" and d.workflow.exit_handler.phase == "Succeeded" for d in days)
    names = [d.outputs["workflow-name"] for d in days]
    assert names[0].startswith("contribflow-daily-2026-11-23-") and names[1].startswith("contribflow-daily-2026-11-24-")
    with psycopg.connect(host=pg_server["PGHOST"], user=pg_server["PGUSER"], dbname=database["PGDATABASE"]) as c:
        runs = c.execute("""SELECT logical_date::text, workflow_name, count(DISTINCT run_id), count(*),
                                   count(*) FILTER (WHERE status = 'SUCCESS')
                              FROM meta.etl_run GROUP BY 1, 2 ORDER BY 1""").fetchall()
        files = c.execute("SELECT file_date::text, outcome FROM meta.source_file ORDER BY 1").fetchall()
        per_day = c.execute("SELECT file_date::text, count(*) > 0 FROM raw.contributions GROUP BY 1 ORDER BY 1").fetchall()
    steps = len(STAGES) + 1
    assert runs == [("2026-11-23", names[0], 1, steps, steps), ("2026-11-24", names[1], 1, steps, steps)]
    assert files == [("2026-11-23", "LOADED"), ("2026-11-24", "LOADED")]
    assert per_day == [("2026-11-23", True), ("2026-11-24", True)]


APPLY = ROOT / "workflows" / "rendered" / "workflowtemplate-contribflow-apply-request.yaml"


def test_replaying_contribflow_apply_request_applies_an_approved_withdrawal_once_and_publishes_it(
        database, pg_server, stage_logins, people, tmp_path, sql):
    """Issue 28 on the cluster's terms: the rendered contribflow-apply-request, replayed with the
    stage logins, applies an approved request as the migrator and publishes the day without the
    file; replayed again, it changes nothing and rebuilds nothing."""
    dbname = database["PGDATABASE"]
    result, _, _ = replay(tmp_path / "day", pg_server, dbname, {**PARAMS, "rows": "300"}, stage_logins)
    assert result.status == "Succeeded", {n: r.attempts and r.attempts[-1].stderr for n, r in result.tasks.items()
                                          if r.phase != "Succeeded"}
    raw_rows = sql("select count(*) from raw.contributions")
    assert sql("select count(*) from marts.fct_contributions")[0][0] > 0
    request = people.approved(["withdraw-file", "--date", DAY.isoformat(), "--reason", "a test export"])

    applied, _, _ = replay(tmp_path / "apply", pg_server, dbname, {"request-id": str(request)}, stage_logins,
                           rendered=APPLY)
    failures = {n: r.attempts and r.attempts[-1].stderr for n, r in applied.tasks.items() if r.phase != "Succeeded"}
    assert applied.status == "Succeeded", failures
    assert list(applied.tasks) == ["apply", "dbt-build", "dbt-test", "publish"]
    assert applied.tasks["apply"].argv == ["contribflow", "apply", str(request), "--no-publish"]
    assert applied.tasks["apply"].outputs["run_date"] == DAY.isoformat()
    assert applied.tasks["dbt-build"].argv[-2:] == ["--date", DAY.isoformat()]
    assert sql("select w.applied_build_id = b.id from meta.file_withdrawal w, meta.mart_build b "
               "where b.status = 'PUBLISHED' order by b.id desc limit 1") == [(True,)]  # published by this run
    assert sql("select count(*) from marts.fct_contributions") == [(0,)]  # the day's only file is withdrawn
    assert sql("select count(*) from raw.contributions") == raw_rows  # raw keeps it
    assert sql("select a.applied_by = %s, w.request_id from meta.correction_application a "
               "join meta.file_withdrawal w on w.request_id = a.request_id", (stage_logins["migrator"],)) == [
        (True, request)]

    again, _, _ = replay(tmp_path / "again", pg_server, dbname, {"request-id": str(request)}, stage_logins,
                         rendered=APPLY)
    assert again.status == "Succeeded"
    assert {n: r.phase for n, r in again.tasks.items()} == {"apply": "Succeeded", "dbt-build": "Skipped",
                                                            "dbt-test": "Skipped", "publish": "Skipped"}
    assert sql("select count(*) from meta.correction_application") == [(1,)]


AUDIT_CRON = ROOT / "workflows" / "rendered" / "cronworkflow-contribflow-audit.yaml"


def test_replaying_the_weekly_audit_finds_the_record_intact_then_a_published_row_changed(
        database, pg_server, stage_logins, tmp_path, sql):
    """Issue 27 on the cluster's terms: the rendered weekly CronWorkflow's workflow, replayed with the
    auditor's login after a daily run, finds the chain intact and the published marts as recorded;
    after a superuser changes one published row, its reproduce --check-published fails the run,
    naming the table, while verify (the meta record untouched) still passes."""
    dbname = database["PGDATABASE"]
    day, _, _ = replay(tmp_path / "day", pg_server, dbname, {**PARAMS, "rows": "300"}, stage_logins)
    assert day.status == "Succeeded"
    cron = yaml.safe_load(AUDIT_CRON.read_text(encoding="utf-8"))
    workflow = tmp_path / "audit-workflow.yaml"
    workflow.write_text(yaml.safe_dump({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                                        "metadata": {"name": cron["metadata"]["name"]},
                                        "spec": cron["spec"]["workflowSpec"]}), encoding="utf-8")

    weekly, _, _ = replay(tmp_path / "weekly", pg_server, dbname, {}, stage_logins, rendered=workflow)
    failures = {n: r.attempts and r.attempts[-1].stderr for n, r in weekly.tasks.items() if r.phase != "Succeeded"}
    assert weekly.status == "Succeeded", failures
    assert list(weekly.tasks) == ["verify", "reproduce"]
    assert weekly.tasks["verify"].outputs["audit_trail_intact"] == "1"
    assert weekly.tasks["reproduce"].argv == ["contribflow", "reproduce", "--check-published"]
    assert weekly.tasks["reproduce"].env["PGOPTIONS"] == "-c role=contribflow_auditor"

    sql("update marts.fct_contributions set amount = amount + 1 "
        "where declaration_id = (select min(declaration_id) from marts.fct_contributions)")
    tampered, _, _ = replay(tmp_path / "tampered", pg_server, dbname, {}, stage_logins, rendered=workflow)
    assert tampered.status == "Failed"
    assert tampered.tasks["verify"].phase == "Succeeded"
    reproduce = tampered.tasks["reproduce"]
    assert reproduce.phase == "Failed" and reproduce.attempts[-1].exit_code == 1
    said = reproduce.attempts[-1].stdout + reproduce.attempts[-1].stderr
    assert "fct_contributions: DIFFERS" in said and "dim_taxpayer: identical" in said, said
