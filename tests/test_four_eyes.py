"""Four eyes on every correction (issue 28), against real PostgreSQL roles: operator A requests,
operator B (no approver) and A herself are refused, approver C approves; the rule is the database's
(migration 0016), so direct SQL by an operator, and even by the owner, cannot skip it."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from contribflow import cli

from helpers import good_row, write_source

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 11, 2)
NEXT = dt.date(2026, 11, 3)
ROOT = Path(__file__).resolve().parents[1]


def as_login(database: dict[str, str], name: str) -> psycopg.Connection:
    return psycopg.connect(host=database["PGHOST"], dbname=database["PGDATABASE"], user=name, autocommit=True)


def refused(conn: psycopg.Connection, statement: str, params: tuple = ()) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(statement, params)
    return caught.value


def run_day(day: dt.date, run_id: str) -> None:
    done = subprocess.run([sys.executable, "-m", "contribflow", "run", "--date", day.isoformat(), "--no-generate"],
                          env=dict(os.environ, CONTRIBFLOW_RUN_ID=run_id), cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_a_withdrawal_needs_a_second_person_and_is_applied_once(database, sql, people, capfd):
    landing = Path(database["CONTRIBFLOW_LANDING_DIR"])
    write_source(landing, DAY, [good_row(1), good_row(2)])
    run_day(DAY, "fe-day1")
    write_source(landing, NEXT, [good_row(1, status="PAID"), good_row(3)])
    run_day(NEXT, "fe-day2")
    marts = "select declaration_id, status from marts.fct_contributions order by 1"
    assert sql(marts) == [("DEC_20261101_000001", "PAID"), ("DEC_20261101_000002", "DUE"),
                          ("DEC_20261101_000003", "DUE")]
    a, b, c = people.add("operator"), people.add("operator"), people.add("approver")
    people.add("approver", a)  # A may approve too, but never her own request

    rid = people.request(a, ["withdraw-file", "--date", NEXT.isoformat(), "--reason", "test export (ticket 7)"],
                         capfd)
    assert sql("select kind, arguments->>'date', requested_by from meta.correction_request") == [
        ("withdraw-file", NEXT.isoformat(), a)]
    # A approves her own request: refused; B is no approver: refused; C approves.
    assert people.cli(a, ["approve", str(rid)]) == 1
    assert f"was made by {a} and cannot be decided by its requester" in capfd.readouterr().err
    assert people.cli(b, ["approve", str(rid)]) == 1
    assert f"{b} is not an approver" in capfd.readouterr().err
    assert people.cli(None, ["apply", str(rid)]) == 1  # not approved yet
    assert "is not approved" in capfd.readouterr().err
    assert sql("select count(*) from meta.correction_decision") == [(0,)]

    # What an operator cannot do by SQL, nor the owner without a request.
    with as_login(database, a) as conn:
        assert "cannot be decided by its requester" in str(
            refused(conn, "SELECT meta.decide_correction(%s, true, null)", (rid,)))
    with as_login(database, b) as conn:
        for statement in (
                "INSERT INTO meta.correction_decision (request_id, approved, decided_by, decided_at) "
                f"VALUES ({rid}, true, 'someone', now())",
                "INSERT INTO meta.correction_request (kind, arguments, reason, requested_by, requested_at, expires_at) "
                "VALUES ('purge-quarantine', '{}', 'x', 'x', now(), now() + interval '1 h')",
                f"UPDATE meta.correction_request SET requested_by = 'someone' WHERE id = {rid}",
                f"SELECT meta.apply_correction({rid})",
                "INSERT INTO meta.file_withdrawal (source_file_id, file_name, sha256, file_date, run_id, raw_rows, "
                "reason) SELECT id, file_name, sha256, file_date, run_id, 1, 'x' FROM meta.source_file",
                "DELETE FROM raw.contributions_quarantine"):
            assert refused(conn, statement).sqlstate == "42501", statement
        error = refused(conn, "SELECT meta.decide_correction(%s, true, null)", (rid,))
        assert "is not an approver" in str(error)
    with pytest.raises(psycopg.Error, match="withdraw-file needs an approved request: contribflow request"):
        sql("INSERT INTO meta.file_withdrawal (source_file_id, file_name, sha256, file_date, run_id, raw_rows, reason) "
            "SELECT id, file_name, sha256, file_date, run_id, 1, 'x' FROM meta.source_file WHERE file_date = %s",
            (NEXT,))
    with pytest.raises(psycopg.Error, match="append-only"):
        sql("UPDATE meta.correction_request SET reason = 'x'")
    # The old direct command names the request command.
    assert cli.main(["withdraw-file", "--file", "contributions_20261103.csv", "--reason", "x"]) == 1
    assert f"contribflow request withdraw-file --date {NEXT}" in capfd.readouterr().err

    assert people.cli(c, ["approve", str(rid)]) == 0
    assert "APPROVED" in capfd.readouterr().out
    assert people.cli(c, ["reject", str(rid), "--reason", "changed my mind"]) == 1
    assert "was already approved by" in capfd.readouterr().err
    assert people.cli(None, ["apply", str(rid)]) == 0
    out = capfd.readouterr().out
    assert "withdrawals_applied=1" in out and "fct_rows_removed=1" in out, out
    assert sql(marts) == [("DEC_20261101_000001", "DUE"), ("DEC_20261101_000002", "DUE")]
    assert sql("select count(*) from raw.contributions") == [(4,)]  # raw keeps every row
    assert sql("select request_id, reason from meta.file_withdrawal") == [(rid, "test export (ticket 7)")]
    # A second apply changes nothing.
    assert people.cli(None, ["apply", str(rid)]) == 0
    assert "was applied already" in capfd.readouterr().out
    assert sql("select count(*) from meta.correction_application") == [(1,)]
    assert sql("select count(*) from meta.file_withdrawal") == [(1,)]

    # The auditor sees who asked, who approved and why.
    trace = subprocess.run([sys.executable, "-m", "contribflow", "trace", "--declaration", "DEC_20261101_000003"],
                           capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert trace.returncode == 0, trace.stderr
    assert f"request {rid}" in trace.stdout and a in trace.stdout and c in trace.stdout, trace.stdout
    assert people.cli(a, ["requests"]) == 0
    assert f"request {rid} APPLIED" in capfd.readouterr().out


def test_rejected_and_expired_requests_are_never_applied(database, sql, people, capsys):
    landing = Path(database["CONTRIBFLOW_LANDING_DIR"])
    assert cli.main(["init-db"]) == 0
    rows = [good_row(i) for i in range(1, 21)]
    rows[0][3] = "-1.0"  # quarantined
    assert cli.main(["ingest", "--date", DAY.isoformat(), "--file", str(write_source(landing, DAY, rows))]) == 0
    a, c = people.add("operator"), people.add("approver")
    purge = ["purge-quarantine", "--before", NEXT.isoformat(), "--reason", "retention ended"]

    rejected = people.request(a, purge, capsys)
    with pytest.raises(SystemExit) as no_reason:  # a rejection needs its reason
        people.cli(c, ["reject", str(rejected)])
    assert no_reason.value.code == 2 and "--reason" in capsys.readouterr().err
    assert people.cli(c, ["reject", str(rejected), "--reason", "keep it until the audit"]) == 0
    assert people.cli(None, ["apply", str(rejected)]) == 1
    assert "was rejected by" in capsys.readouterr().err

    expired = people.request(a, purge, capsys)
    approved_then_expired = people.request(a, purge, capsys)
    assert people.cli(c, ["approve", str(approved_then_expired)]) == 0
    # Time passes (the administrator moves the requests back 73 hours; the table refuses it otherwise).
    sql("SET session_replication_role = replica")
    sql("UPDATE meta.correction_request SET requested_at = requested_at - interval '73 hours', "
        "expires_at = expires_at - interval '73 hours' WHERE id IN (%s, %s)", (expired, approved_then_expired))
    sql("SET session_replication_role = DEFAULT")
    assert people.cli(c, ["approve", str(expired)]) == 1
    assert f"request {expired} expired at" in capsys.readouterr().err
    assert people.cli(None, ["apply", str(approved_then_expired)]) == 1
    assert "expired at" in capsys.readouterr().err
    assert sql("select count(*) from raw.contributions_quarantine") == [(1,)]
    assert sql("select count(*) from meta.correction_application") == [(0,)]

    ok = people.request(a, purge, capsys)
    assert people.cli(c, ["approve", str(ok), "--reason", "90 days passed"]) == 0
    assert people.cli(None, ["apply", str(ok)]) == 0
    assert "quarantined_rows_removed=1" in capsys.readouterr().out
    assert sql("select count(*) from raw.contributions_quarantine") == [(0,)]
    assert people.cli(a, ["requests", "--open"]) == 0
    assert capsys.readouterr().out.strip() == "no open request"

    # The evidence pack of the period lists every request with who asked, who decided and why.
    pack = Path(database["CONTRIBFLOW_STATE_DIR"]) / "pack.html"
    assert cli.main(["audit", "--from", DAY.isoformat(), "--to", NEXT.isoformat(), "--html", str(pack)]) == 0
    section = pack.read_text().split('<section id="requests">')[1].split("</section>")[0]
    assert section.count("<tr><td class=\"num\">") == 4, section
    assert "REJECTED by " + c in section and "keep it until the audit" in section and "EXPIRED" in section
    assert "APPLIED by " + c in section and "90 days passed" in section and section.count(a + " at") == 4


def test_a_request_names_what_exists_and_people_are_logins(database, sql, people, capsys, monkeypatch):
    assert cli.main(["init-db"]) == 0
    a = people.add("operator")
    assert people.cli(a, ["request", "withdraw-file", "--date", DAY.isoformat(), "--reason", "x"]) == 1
    assert "no file dated 2026-11-02 is LOADED" in capsys.readouterr().err
    assert sql("select count(*) from meta.correction_request") == [(0,)]
    auditor = people.add("auditor")
    assert people.cli(auditor, ["request", "purge-quarantine", "--before", DAY.isoformat(), "--reason", "x"]) == 1
    assert f"{auditor} is not an operator" in capsys.readouterr().err
    assert people.add("approver", a) == a  # an existing person gets one more role
    assert sql("select count(*) from pg_auth_members m join pg_roles r on r.oid = m.member where r.rolname = %s",
               (a,)) == [(2,)]
    assert "\\password " + a in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:
        cli.main(["db", "add-person", "Robert'); DROP", "--role", "operator"])
    assert bad.value.code == 2 and "is not a person's login" in capsys.readouterr().err
    assert cli.main(["db", "start", "somebody"]) == 1
    monkeypatch.setenv("CONTRIBFLOW_REQUEST_TTL_HOURS", "721")
    assert people.cli(a, ["request", "purge-quarantine", "--before", DAY.isoformat(), "--reason", "x"]) == 1
    assert "CONTRIBFLOW_REQUEST_TTL_HOURS='721' is out of range" in capsys.readouterr().err
