"""The tamper-evident audit trail (issue 27, point 4) against a real PostgreSQL.

Rows of the chained meta relations are sealed into meta.audit_chain when they reach their final state
(migration 0015); `contribflow verify` walks the chain and finds a superuser's edit (with or without
triggers), a deleted row and a row inserted around the chain; the stage roles may not change a sealed
row; the migrator may, and verify reports it until meta.chain_reseal records it; concurrent stages
appending at once never fork the chain.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest

from contribflow.audit import chain
from contribflow.settings import Settings
from contribflow.step import StepRun
from contribflow.warehouse.migrate import apply_migrations

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
DAY = dt.date(2026, 11, 3)


def cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "contribflow", *args], env=dict(os.environ), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def connect(database, role: str | None = None, **kw) -> psycopg.Connection:
    conn = psycopg.connect(host=database["PGHOST"], user=database["PGUSER"], dbname=database["PGDATABASE"], **kw)
    if role:
        conn.execute(f"SET ROLE contribflow_{role}")
        conn.commit()  # a rollback later must not undo it
    return conn


def steps(n: int, fail_every: int = 0) -> list[int]:
    """n step records, as stages write them (RUNNING, then closed): their meta.etl_run ids."""
    ids = []
    for i in range(n):
        try:
            with StepRun(Settings.from_env(), f"step-{i}", DAY) as step:
                step.rows_in = i
                step.details = {"n": i, "text": "" if i % 2 else None}
                if fail_every and i % fail_every == 0:
                    raise RuntimeError("failed on purpose")
        except RuntimeError:
            pass
        ids.append(step.row_id)
    return ids


def verify(database, role: str | None = "auditor") -> chain.Result:
    with connect(database, role) as conn:
        return chain.verify(conn)


@pytest.fixture
def warehouse(database):
    apply_migrations(Settings.from_env())
    return database


def test_sealed_rows_and_an_intact_chain(warehouse, sql):
    ids = steps(4, fail_every=3)
    with connect(warehouse, autocommit=True) as conn:  # a row still RUNNING is not sealed yet
        open_id = conn.execute("INSERT INTO meta.etl_run (run_id, step, status) VALUES ('r', 'open', 'RUNNING') "
                               "RETURNING id").fetchone()[0]
    sealed = {int(k) for (k,) in sql("SELECT row_key FROM meta.audit_chain WHERE relation = 'meta.etl_run'")}
    assert set(ids) <= sealed and open_id not in sealed
    assert [s for (s,) in sql("SELECT seq FROM meta.audit_chain ORDER BY seq")] == list(
        range(1, sql("SELECT count(*) FROM meta.audit_chain")[0][0] + 1))
    result = verify(warehouse)
    assert result.intact, result.summary()
    assert result.entries == len(sealed)
    assert result.relations == sql("SELECT count(*) FROM meta.chained_relation")[0][0] == 15  # 0015's 8, 0017's 7
    head_seq, head_link = sql("SELECT seq, encode(link, 'hex') FROM meta.audit_chain_head")[0]
    assert (result.head_seq, result.head_link) == (head_seq, head_link)
    run = cli(["verify"])
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"intact: {result.entries} chain entries")


@pytest.mark.parametrize("how", ["direct", "replica"])
def test_a_superuser_edit_is_found(warehouse, sql, how):
    ids = steps(3)
    target = ids[1]
    seq = sql("SELECT seq FROM meta.audit_chain WHERE relation = 'meta.etl_run' AND row_key = %s", (str(target),))[0][0]
    with connect(warehouse) as conn:
        if how == "replica":  # triggers off: nothing in the database notices
            conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE meta.etl_run SET rows_in = rows_in + 1 WHERE id = %s", (target,))
        conn.commit()
    result = verify(warehouse)
    assert not result.intact
    assert (result.broken.relation, result.broken.row_key, result.broken.seq) == ("meta.etl_run", str(target), seq)
    assert "content does not match" in result.broken.why
    run = cli(["verify"])
    assert run.returncode == 1
    assert f"meta.etl_run row {target} (seq {seq})" in run.stderr and "intact" not in run.stdout


def test_a_deleted_row_and_a_row_around_the_chain_are_found(warehouse, sql):
    ids = steps(3)
    with connect(warehouse) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("INSERT INTO meta.etl_run (run_id, step, status) VALUES ('r', 'forged', 'SUCCESS')")
        conn.commit()
    forged = sql("SELECT id FROM meta.etl_run WHERE step = 'forged'")[0][0]
    broken = verify(warehouse).broken
    assert (broken.relation, broken.row_key, broken.seq) == ("meta.etl_run", str(forged), None)
    assert "not in the chain" in broken.why
    with connect(warehouse) as conn:
        conn.execute("DELETE FROM meta.etl_run WHERE id = %s", (ids[0],))  # the superuser passes the refusal
        conn.commit()
    seq = sql("SELECT seq FROM meta.audit_chain WHERE relation = 'meta.etl_run' AND row_key = %s", (str(ids[0]),))[0][0]
    broken = verify(warehouse).broken  # the first by seq: the deleted row comes before the forged one
    assert (broken.relation, broken.row_key, broken.seq) == ("meta.etl_run", str(ids[0]), seq)
    assert "gone" in broken.why


def test_the_chain_itself_cannot_be_edited_or_cut(warehouse, sql):
    steps(3)
    last = sql("SELECT max(seq) FROM meta.audit_chain")[0][0]
    sql("UPDATE meta.audit_chain SET reason = 'edited' WHERE seq = 2")
    broken = verify(warehouse).broken
    assert broken.seq == 2 and "does not hash to its link" in broken.why
    sql("UPDATE meta.audit_chain SET reason = NULL WHERE seq = 2")
    assert verify(warehouse).intact
    relation, key = sql("SELECT relation, row_key FROM meta.audit_chain WHERE seq = %s", (last,))[0]
    sql("DELETE FROM meta.audit_chain WHERE seq = %s", (last,))  # the tail cut
    broken = verify(warehouse).broken
    assert (broken.relation, broken.row_key, broken.seq) == (relation, key, None)  # its row is around the chain


@pytest.mark.parametrize("role", ["loader", "transformer"])
def test_stage_roles_may_not_change_a_sealed_row(warehouse, sql, role):
    ids = steps(2)
    with connect(warehouse, role) as conn:
        for statement in (f"UPDATE meta.etl_run SET error = 'x' WHERE id = {ids[0]}",
                          f"UPDATE meta.etl_run SET error_class = 'late' WHERE id = {ids[0]}",
                          f"DELETE FROM meta.etl_run WHERE id = {ids[0]}"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
            conn.rollback()
        # a row that is not final yet is still closed by its stage
        row = conn.execute("INSERT INTO meta.etl_run (run_id, step, status) VALUES ('r', 'x', 'RUNNING') "
                           "RETURNING id").fetchone()[0]
        conn.execute("UPDATE meta.etl_run SET status = 'SUCCESS' WHERE id = %s", (row,))
        conn.commit()
    assert sql("SELECT count(*) FROM meta.audit_chain WHERE row_key = %s AND relation = 'meta.etl_run'",
               (str(row),)) == [(1,)]
    assert verify(warehouse).intact


def test_the_migrator_may_change_a_sealed_row_and_verify_reports_it_until_resealed(warehouse, sql):
    ids = steps(3)
    with connect(warehouse, "migrator") as conn:
        conn.execute("UPDATE meta.etl_run SET error = '[masked]' WHERE id = %s", (ids[1],))
        conn.execute("DELETE FROM meta.etl_run WHERE id = %s", (ids[2],))
        conn.commit()
    broken = verify(warehouse).broken
    assert (broken.relation, broken.row_key) == ("meta.etl_run", str(ids[1]))
    with connect(warehouse, "loader") as conn:  # reseal is the migrator's alone
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT meta.chain_reseal('meta.etl_run', 'x')")
    with connect(warehouse, "migrator") as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="reason"):
            conn.execute("SELECT meta.chain_reseal('meta.etl_run', ' ')")
        conn.rollback()
        assert conn.execute("SELECT meta.chain_reseal('meta.etl_run', 'masking, runbook 4.2')").fetchone() == (2,)
        conn.commit()
    assert sql("SELECT row_key, kind, reason FROM meta.audit_chain WHERE kind <> 'seal' ORDER BY seq") == [
        (str(ids[1]), "reseal", "masking, runbook 4.2"), (str(ids[2]), "delete", "masking, runbook 4.2")]
    assert verify(warehouse).intact


def test_concurrent_stages_never_fork_the_chain(warehouse, sql):
    """Three writers at once, each sealing rows in several relations: one gapless, intact chain."""
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            with connect(warehouse, "loader") as conn:
                for _ in range(25):
                    row = conn.execute("INSERT INTO meta.etl_run (run_id, step, status) VALUES (%s, 's', 'RUNNING') "
                                       "RETURNING id", (f"w{n}",)).fetchone()[0]
                    conn.commit()
                    conn.execute("INSERT INTO meta.data_quality_issue (run_id, source_file, source_sha256, rule) "
                                 "VALUES (%s, 'f', 'x', 'r')", (f"w{n}",))
                    conn.execute("UPDATE meta.etl_run SET status = 'SUCCESS' WHERE id = %s", (row,))
                    conn.commit()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    count, low, high = sql("SELECT count(*), min(seq), max(seq) FROM meta.audit_chain")[0]
    assert (low, high) == (1, count) == (1, sql("SELECT seq FROM meta.audit_chain_head")[0][0])
    assert sql("""SELECT relation, count(*) FROM meta.audit_chain c
                   WHERE row_key IN (SELECT id::text FROM meta.etl_run WHERE run_id LIKE 'w%%')
                     AND relation = 'meta.etl_run' GROUP BY 1""") == [("meta.etl_run", 75)]
    assert sql("SELECT count(*) FROM meta.audit_chain WHERE relation = 'meta.data_quality_issue'") == [(75,)]
    assert verify(warehouse).intact


def test_the_canonical_encoding(warehouse, sql):
    """Python's canon (which verify's links use) is the database's; NULL and '' hash differently."""
    doc = {"b": "x;y=z", "a": "", "é": "ünï", "c": None, "B": "12.500"}
    assert sql("SELECT meta.chain_canon(%s::jsonb)", (json.dumps(doc),))[0][0] == chain.canon(doc) == (
        "B=6:12.500;a=0:;b=5:x;y=z;é=5:ünï")
    empty, null = (sql("SELECT encode(meta.chain_row_hash('meta.t', %s::jsonb), 'hex')", (json.dumps(d),))[0][0]
                   for d in ({"v": ""}, {"v": None}))
    assert empty != null
    # a timestamp hashes the same whatever the session's TimeZone: the callers pin UTC
    steps(1)
    with connect(warehouse, "auditor") as conn:
        conn.execute("SET TimeZone = 'America/New_York'")
        assert chain.verify(conn).intact


def test_the_auditor_reads_the_head_and_the_chain(warehouse):
    steps(1)
    with connect(warehouse, "auditor") as conn:
        seq, link = chain.head(conn)
        assert seq >= 1 and len(link) == 64
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM meta.audit_chain")


def test_verify_writes_the_gauge_argo_reads(warehouse, monkeypatch, tmp_path):
    """The weekly CronWorkflow's gauge contribflow_audit_trail_intact is verify's output parameter."""
    from contribflow import cli as contribflow_cli
    ids = steps(2)
    monkeypatch.setenv("CONTRIBFLOW_OUTPUTS_DIR", str(tmp_path / "out"))
    assert contribflow_cli.main(["verify"]) == 0
    assert (tmp_path / "out" / "audit_trail_intact").read_text() == "1"
    assert int((tmp_path / "out" / "audit_chain_entries").read_text()) >= 2
    with connect(warehouse) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("DELETE FROM meta.etl_run WHERE id = %s", (ids[0],))
        conn.commit()
    assert contribflow_cli.main(["verify"]) == 1
    assert (tmp_path / "out" / "audit_trail_intact").read_text() == "0"
