"""``contribflow trace``: from one number back to the file line it came from, and every check on the way.

For each declaration (given by id, or every declaration of a pseudonymous taxpayer_key):

    marts.fct_contributions (what analysts read)
      <- staging.stg_contributions (the current version dbt chose)
      <- every state of the declaration in raw.contributions, in arrival order: file, sha256 (the
         ledger meta.source_file), line, ingestion time, the ingest run and the Argo workflow, task
         and pod that loaded it (meta.etl_run), its revision (a state that returned within one file
         date), and, for a withdrawn file's row, who withdrew it, when and why (meta.file_withdrawal)
      <- the quality checks of each of those files (ledger outcome, meta.data_quality_issue by rule
         and severity, and the issues on the declaration's own line)
    and the dbt tests of the run whose build analysts now see (meta.mart_build, meta.dbt_node_result).

Read-only, and meant for the ``contribflow_auditor`` role (migration 0008): it reads raw and meta,
which the analyst role may not. A raw taxpayer id is never an input and never an output.

Indexes (docs/reference.md "contribflow trace"): raw by the leading column of its unique index
``contributions_declaration_id_file_date_record_hash_revision_key`` (migration 0010; 0009's index,
which replaced 0008's own, had the same leading column),
the staging view through the same index (the declaration_id condition is pushed below its
DISTINCT ON), marts by ``fct_contributions_declaration_id``, meta.etl_run and
meta.data_quality_issue by their run_id indexes. ``--taxpayer-key`` first finds the taxpayer's
declarations with a (parallel) scan of raw: an index on taxpayer_key would cost every load random
inserts, for a lookup that is rare.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import uuid
from typing import Any

import psycopg
from psycopg.rows import dict_row

from contribflow.db import connect
from contribflow.errors import StageError
from contribflow.settings import Settings
from contribflow.warehouse.marts import FCT_COLUMNS

TAXPAYER_KEY = re.compile(r"^[0-9a-f]{64}$")

_DECLARATIONS_OF_TAXPAYER = """
SELECT DISTINCT declaration_id FROM raw.contributions WHERE taxpayer_key = %s ORDER BY declaration_id
"""
_MART = ("SELECT " + ", ".join(FCT_COLUMNS) + " FROM marts.fct_contributions "
         "WHERE declaration_id = ANY(%s) ORDER BY declaration_id")
_STAGING = ("SELECT " + ", ".join(FCT_COLUMNS) + " FROM staging.stg_contributions "
            "WHERE declaration_id = ANY(%s) ORDER BY declaration_id")
_RAW = """
SELECT r.declaration_id, r.taxpayer_key, r.event_date, r.amount, r.currency, r.contribution_type, r.status,
       r.country, r.file_date, r.source_file, r.source_line, r.ingestion_ts, r.run_id, r.record_hash::text,
       f.sha256, f.outcome AS file_outcome,
       e.workflow_name, e.task_name, e.pod_name, e.ran_on, e.status AS ingest_status,
       e.started_at AS ingest_started_at, e.db_login AS ingest_db_login, r.revision,
       w.withdrawn_at, w.withdrawn_by_login, w.withdrawn_by_role, w.reason AS withdrawal_reason,
       w.applied_build_id AS withdrawal_applied_by_build,
       q.id AS request_id, q.kind AS request_kind, q.requested_by, q.requested_at, q.reason AS request_reason,
       q.decided_by AS approved_by, q.decided_at AS approved_at, q.decision_reason AS approval_reason,
       q.applied_by AS request_applied_by, q.applied_at AS request_applied_at,
       l.quarantine_line AS corrects_quarantined_line
  FROM raw.contributions r
  LEFT JOIN meta.file_withdrawal w ON w.file_name = r.source_file AND w.run_id = r.run_id
  LEFT JOIN LATERAL (SELECT request_id, quarantine_line FROM meta.correction_link
                      WHERE declaration_id = r.declaration_id AND corrected_file = r.source_file
                        AND corrected_line = r.source_line ORDER BY id DESC LIMIT 1) l ON true
  LEFT JOIN LATERAL (SELECT cr.id, cr.kind, cr.requested_by, cr.requested_at, cr.reason, cd.decided_by, cd.decided_at,
                            cd.reason AS decision_reason, ca.applied_by, ca.applied_at
                       FROM meta.correction_request cr
                       JOIN meta.correction_decision cd ON cd.request_id = cr.id
                       LEFT JOIN meta.correction_application ca ON ca.request_id = cr.id
                      WHERE cr.id = coalesce(w.request_id, l.request_id)) q ON true
  LEFT JOIN LATERAL (SELECT sha256, outcome FROM meta.source_file
                      WHERE run_id = r.run_id AND file_name = r.source_file AND outcome = 'LOADED'
                      ORDER BY id DESC LIMIT 1) f ON true
  LEFT JOIN LATERAL (SELECT workflow_name, task_name, pod_name, ran_on, status, started_at, db_login
                       FROM meta.etl_run WHERE run_id = r.run_id AND step = 'ingest'
                      ORDER BY id DESC LIMIT 1) e ON true
 WHERE r.declaration_id = ANY(%s)
 ORDER BY r.declaration_id, r.ingestion_ts, r.source_line
"""
_FILES = """
SELECT file_name, sha256, file_date, size_bytes, rows_in, rows_loaded, rows_rejected, outcome, detail, run_id,
       seen_at
  FROM meta.source_file WHERE sha256 = ANY(%s) AND outcome = 'LOADED' ORDER BY id
"""
_FILE_ISSUES = """
SELECT source_sha256, rule, column_name, severity, count(*) AS issues
  FROM meta.data_quality_issue WHERE run_id = ANY(%(runs)s) AND source_sha256 = ANY(%(shas)s)
 GROUP BY source_sha256, rule, column_name, severity ORDER BY source_sha256, severity, rule, column_name
"""
_LINE_ISSUES = """
SELECT source_sha256, source_line, rule, column_name, severity
  FROM meta.data_quality_issue
 WHERE run_id = ANY(%(runs)s) AND source_sha256 = ANY(%(shas)s) AND source_line = ANY(%(lines)s)
 ORDER BY id
"""
_PUBLISHED = """
SELECT id, run_id, logical_date, status, published_at, tested_at, delta_rows, dim_rows
  FROM meta.mart_build WHERE status = 'PUBLISHED' ORDER BY id DESC LIMIT 1
"""
_TESTS = """
SELECT unique_id, resource_type, status, failures, execution_time_s
  FROM meta.dbt_node_result
 WHERE run_id = %s AND resource_type IN ('test', 'unit_test') ORDER BY unique_id, id
"""
_RUN_STEPS = """
SELECT run_id, step, status, logical_date, started_at, duration_s, workflow_name, task_name, pod_name
  FROM meta.etl_run WHERE run_id = ANY(%s) ORDER BY id
"""


def _plain(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _rows(cur: psycopg.Cursor[dict[str, Any]], query: str, params: Any) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in r.items()} for r in cur.execute(query, params).fetchall()]


def _exists(cur: psycopg.Cursor[dict[str, Any]], relation: str) -> bool:
    return cur.execute("SELECT to_regclass(%s) IS NOT NULL AS present", (relation,)).fetchone()["present"]


def collect(conn: psycopg.Connection, declaration: str | None = None,
            taxpayer_key: str | None = None) -> dict[str, Any]:
    """The trace as plain data (the JSON form). Raises LookupError for an unknown key."""
    cur = conn.cursor(row_factory=dict_row)
    if taxpayer_key is not None:
        if not TAXPAYER_KEY.match(taxpayer_key):
            raise ValueError("a taxpayer key is 64 lowercase hex characters (the HMAC-SHA256 that marts "
                             "hold); a raw taxpayer id is never accepted")
        ids = [r["declaration_id"] for r in cur.execute(_DECLARATIONS_OF_TAXPAYER, (taxpayer_key,))]
        if not ids:
            raise LookupError(f"no declaration of taxpayer key {taxpayer_key} in raw.contributions")
        asked: dict[str, str | None] = {"taxpayer_key": taxpayer_key}
    else:
        ids = [declaration]
        asked = {"declaration_id": declaration}

    raw = _rows(cur, _RAW, (ids,))
    if not raw:
        raise LookupError(f"no declaration {declaration!r} in raw.contributions (nothing arrived with that id)")
    mart = _rows(cur, _MART, (ids,)) if _exists(cur, "marts.fct_contributions") else []
    staging = _rows(cur, _STAGING, (ids,)) if _exists(cur, "staging.stg_contributions") else []

    shas = sorted({r["sha256"] for r in raw if r["sha256"]})
    runs = sorted({r["run_id"] for r in raw})
    files = _rows(cur, _FILES, (shas,))
    issues_by_file: dict[str, list[dict[str, Any]]] = {}
    for i in _rows(cur, _FILE_ISSUES, {"runs": runs, "shas": shas}):
        issues_by_file.setdefault(i.pop("source_sha256"), []).append(i)
    line_issues = _rows(cur, _LINE_ISSUES, {"runs": runs, "shas": shas,
                                            "lines": sorted({r["source_line"] for r in raw})})
    for f in files:
        f["quality_issues"] = issues_by_file.get(f["sha256"], [])
        f["errors"] = sum(i["issues"] for i in f["quality_issues"] if i["severity"] == "error")
        f["warnings"] = sum(i["issues"] for i in f["quality_issues"] if i["severity"] == "warning")
    published = cur.execute(_PUBLISHED).fetchone()
    tests: list[dict[str, Any]] = _rows(cur, _TESTS, (published["run_id"],)) if published else []

    declarations = []
    for did in ids:
        states = [r for r in raw if r["declaration_id"] == did]
        for n, s in enumerate(states):
            s["state"] = n + 1
            s["changed"] = ([] if n == 0 else
                            [f"{c}: {states[n - 1][c]} -> {s[c]}" for c in
                             ("status", "amount", "event_date", "contribution_type", "country", "currency",
                              "taxpayer_key") if states[n - 1][c] != s[c]])
            s["line_issues"] = [i for i in line_issues if i["source_sha256"] == s["sha256"]
                                and i["source_line"] == s["source_line"]]
        declarations.append({
            "declaration_id": did,
            "mart_rows": [m for m in mart if m["declaration_id"] == did],
            "staging_row": next((m for m in staging if m["declaration_id"] == did), None),
            "raw_states": states,
        })
    return {
        "asked": asked,
        "declarations": declarations,
        "files": files,
        "runs": _rows(cur, _RUN_STEPS, (runs,)),
        "published_build": {k: _plain(v) for k, v in published.items()} if published else None,
        "published_build_tests": {
            "passed": sum(t["status"] == "pass" for t in tests),
            "not_passed": [t for t in tests if t["status"] != "pass"],
            "tests": tests,
        },
    }


def _n(value: Any) -> str:
    return "-" if value is None else str(value)


def render(trace: dict[str, Any]) -> str:
    """The trace as text for people."""
    out: list[str] = []
    asked = ", ".join(f"{k} {v}" for k, v in trace["asked"].items())
    out.append(f"trace of {asked}: {len(trace['declarations'])} declaration(s)")
    files = {f["sha256"]: f for f in trace["files"]}
    for d in trace["declarations"]:
        out.append("")
        out.append(f"declaration {d['declaration_id']}")
        if d["mart_rows"]:
            for m in d["mart_rows"]:
                out.append(f"  mart     marts.fct_contributions: status {m['status']}  amount {m['amount']} "
                           f"{m['currency']}  {m['contribution_type']}  event {m['event_date']}  "
                           f"from {m['source_file']} line {m['source_line']}  taxpayer_key {m['taxpayer_key']}")
        else:
            out.append("  mart     not in marts.fct_contributions (not published yet, or every file that "
                       "mentioned it was withdrawn)")
        s = d["staging_row"]
        out.append("  staging  " + (f"staging.stg_contributions: status {s['status']}  amount {s['amount']}  "
                                    f"from {s['source_file']} line {s['source_line']}" if s else "no row"))
        out.append(f"  raw      {len(d['raw_states'])} state(s), in arrival order:")
        for r in d["raw_states"]:
            change = "; ".join(r["changed"]) if r["changed"] else "first arrival"
            again = f"  revision {r['revision']} of this state for file date {r['file_date']}" if r["revision"] else ""
            out.append(f"    #{r['state']} status {r['status']}  amount {r['amount']}  ({change}){again}")
            if r["withdrawn_at"]:
                applied = (f"applied by build {r['withdrawal_applied_by_build']}" if r["withdrawal_applied_by_build"]
                           else "not published yet: the marts still show it until the next build")
                out.append(f"       WITHDRAWN (not part of the declaration's state): at {r['withdrawn_at']} by "
                           f"{r['withdrawn_by_login']} as {r['withdrawn_by_role']}, reason: "
                           f"{r['withdrawal_reason']}; {applied}")
            if r["corrects_quarantined_line"] is not None:
                out.append(f"       CORRECTED: replaces the quarantined line {r['corrects_quarantined_line']} of "
                           f"{r['file_date']} (a reload-corrected request)")
            if r["request_id"] is not None:
                note = f", note: {r['approval_reason']}" if r["approval_reason"] else ""
                out.append(f"       request {r['request_id']} ({r['request_kind']}): requested by {r['requested_by']} "
                           f"at {r['requested_at']}, reason: {r['request_reason']}; approved by {r['approved_by']} "
                           f"at {r['approved_at']}{note}; applied by {r['request_applied_by']} at "
                           f"{r['request_applied_at']}")
            out.append(f"       file {r['source_file']} line {r['source_line']}  sha256 {_n(r['sha256'])}")
            out.append(f"       ingested {r['ingestion_ts']}  run {r['run_id']}")
            by = (f"Argo workflow {r['workflow_name']} (uid {r['run_id']})" if r["workflow_name"]
                  else "a local run (no Argo workflow)")
            out.append(f"       loaded by {by}  task {_n(r['task_name'])}  "
                       f"pod {_n(r['pod_name'] or r['ran_on'])}  ingest {_n(r['ingest_status'])}")
            f = files.get(r["sha256"])
            if f:
                checks = ", ".join(f"{i['rule']}({_n(i['column_name'])})[{i['severity']}]={i['issues']}"
                                   for i in f["quality_issues"])
                out.append(f"       checks on the file: {f['outcome']}  in={_n(f['rows_in'])} "
                           f"loaded={_n(f['rows_loaded'])} quarantined={_n(f['rows_rejected'])}  "
                           f"errors={f['errors']} warnings={f['warnings']}" + (f"  ({checks})" if checks else ""))
            if r["line_issues"]:
                out.append("       on this line: " + ", ".join(f"{i['rule']}[{i['severity']}]"
                                                              for i in r["line_issues"]))
            else:
                out.append("       on this line: every check passed")
    out.append("")
    p, t = trace["published_build"], trace["published_build_tests"]
    if p:
        out.append(f"analysts now read build {p['id']} of run {p['run_id']} ({p['logical_date']}), "
                   f"published {p['published_at']}: dbt tests passed {t['passed']}, "
                   f"not passed {len(t['not_passed'])}")
        for n in t["not_passed"]:
            out.append(f"  {n['status'].upper()}: {n['unique_id']}")
    else:
        out.append("nothing published yet: analysts read no build")
    return "\n".join(out)


def run(settings: Settings, declaration: str | None, taxpayer_key: str | None, as_json: bool) -> str:
    with connect(settings) as conn:
        conn.read_only = True
        try:
            trace = collect(conn, declaration, taxpayer_key)
        except psycopg.errors.InsufficientPrivilege as exc:
            who = "this login"
            try:
                conn.rollback()
                who = "role " + conn.execute("SELECT current_user").fetchone()[0]
            except psycopg.Error:
                pass
            raise StageError(f"{who} may not trace: trace reads raw and meta, which only the auditor "
                             f"role (contribflow_auditor) may read ({str(exc).strip().splitlines()[0]})") from None
        except LookupError as exc:
            raise StageError(str(exc.args[0])) from None
    return json.dumps(trace, indent=2, default=str) if as_json else render(trace)
