"""``contribflow audit --date D``: what the audit trail says about a run date.

Everything comes from ``meta`` (the pipeline's own record, never from logs): every run of the date
and each of its steps with status and counts, the source files with their sha256 and ledger
outcome, the quality issues (counts by rule, each issue once however many runs found it, a few
examples), the dbt results, each run's SLA outcome (meta.run_sla), the withdrawn files (of the date,
or applied by one of its runs), and
the steps still
RUNNING long after they started (a process killed mid-step leaves its row RUNNING: the step did not
finish, and its transaction was rolled back).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from typing import Any

import psycopg
from psycopg.rows import dict_row

from contribflow.db import connect
from contribflow.settings import Settings

EXAMPLES_PER_RULE = 3

_STEPS = """
SELECT id, run_id, step, status, started_at, finished_at, duration_s, rows_in, rows_loaded,
       rows_rejected, source_file, error, error_class, ran_on, details,
       status = 'RUNNING' AND started_at < clock_timestamp() - make_interval(secs => %(stale)s) AS stale
  FROM meta.etl_run WHERE logical_date = %(day)s ORDER BY id
"""
_FILES = """
SELECT file_name, sha256, size_bytes, rows_in, rows_loaded, rows_already_in_raw, rows_rejected, rows_withheld,
       outcome, detail, run_id, seen_at
  FROM meta.source_file WHERE file_date = %(day)s ORDER BY id
"""
_ISSUES = """
SELECT rule, column_name, severity, count(*) AS issues, count(DISTINCT (source_sha256, source_line)) AS rows,
       (array_agg(jsonb_build_object('line', source_line, 'value', left(failing_value, 80), 'file', source_file)
                  ORDER BY source_line))[1:%(examples)s] AS examples
  FROM (SELECT DISTINCT ON (source_sha256, source_file, coalesce(source_line, 0), rule, coalesce(column_name, ''))
               * FROM meta.data_quality_issue WHERE run_id = ANY(%(runs)s)
         ORDER BY source_sha256, source_file, coalesce(source_line, 0), rule, coalesce(column_name, ''), id) AS once
 GROUP BY rule, column_name, severity ORDER BY severity, count(*) DESC, rule, column_name
"""
_BUILDS = """
SELECT id, run_id, logical_date, status, base_build_id, full_refresh, delta_rows, dim_rows, started_at,
       built_at, tested_at, published_at, error
  FROM meta.mart_build WHERE run_id = ANY(%(runs)s) ORDER BY id
"""
_PUBLISHED = """
SELECT id, run_id, logical_date, published_at, delta_rows, dim_rows
  FROM meta.mart_build WHERE status = 'PUBLISHED' ORDER BY id DESC LIMIT 1
"""
_FRESHNESS = """
SELECT run_id, source, max_loaded_at, age_s, status, checked_at
  FROM meta.source_freshness WHERE run_id = ANY(%(runs)s) ORDER BY id
"""
_WITHDRAWALS = """
SELECT w.id, w.file_name, w.sha256, w.file_date, w.run_id AS loaded_by_run, w.raw_rows, w.reason,
       w.withdrawn_by_login, w.withdrawn_by_role, w.withdrawn_at, w.applied_build_id, b.published_at AS applied_at
  FROM meta.file_withdrawal w LEFT JOIN meta.mart_build b ON b.id = w.applied_build_id
 WHERE w.file_date = %(day)s OR b.run_id = ANY(%(runs)s) ORDER BY w.id
"""
_SLA = """
SELECT run_id, workflow_status, sla_met, missed, file_due_at, file_arrived_at, file_seconds_late,
       publish_deadline_at, published_at, rows_in, rows_quarantined, quarantine_ratio, max_quarantine_ratio,
       recorded_at
  FROM meta.run_sla WHERE logical_date = %(day)s ORDER BY id
"""
_DBT = """
SELECT run_id, step, resource_type, unique_id, status, failures, left(message, 300) AS message
  FROM meta.dbt_node_result WHERE run_id = ANY(%(runs)s) ORDER BY id
"""


def _plain(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def collect(conn: psycopg.Connection, day: dt.date, stale_after_s: int) -> dict[str, Any]:
    """The audit of ``day`` as plain data (the JSON form)."""
    params: dict[str, Any] = {"day": day, "stale": stale_after_s, "examples": EXAMPLES_PER_RULE}
    cur = conn.cursor(row_factory=dict_row)
    steps = cur.execute(_STEPS, params).fetchall()
    runs: dict[str, dict[str, Any]] = {}
    for s in steps:
        run = runs.setdefault(s["run_id"], {"run_id": s["run_id"], "started_at": s["started_at"], "steps": []})
        run["steps"].append({k: _plain(v) for k, v in s.items() if k != "run_id"})
    for run in runs.values():
        states = [s["status"] for s in run["steps"]]
        finish = [s for s in run["steps"] if s["step"] == "finish"]
        run["started_at"] = _plain(run["started_at"])
        run["status"] = (finish[-1]["status"] if finish
                         else "FAILED" if "FAILED" in states
                         else "RUNNING" if "RUNNING" in states else "INCOMPLETE")
    params["runs"] = list(runs)
    files = [{k: _plain(v) for k, v in f.items()} for f in cur.execute(_FILES, params).fetchall()]
    issues = [{k: _plain(v) for k, v in i.items()} for i in cur.execute(_ISSUES, params).fetchall()]
    nodes = cur.execute(_DBT, params).fetchall()
    dbt: dict[str, dict[str, Any]] = {}
    for n in nodes:
        entry = dbt.setdefault(f"{n['run_id']} {n['step']}", {
            "run_id": n["run_id"], "step": n["step"], "counts": {}, "not_passed": []})
        entry["counts"][n["status"]] = entry["counts"].get(n["status"], 0) + 1
        if n["status"] not in ("pass", "success"):
            entry["not_passed"].append({k: n[k] for k in ("unique_id", "status", "failures", "message")})
    builds = [{k: _plain(v) for k, v in b.items()} for b in cur.execute(_BUILDS, params).fetchall()]
    withdrawals = [{k: _plain(v) for k, v in w.items()} for w in cur.execute(_WITHDRAWALS, params).fetchall()]
    published = cur.execute(_PUBLISHED).fetchone()
    freshness = [{k: _plain(v) for k, v in f.items()} for f in cur.execute(_FRESHNESS, params).fetchall()]
    sla = [{k: _plain(v) for k, v in r.items()} for r in cur.execute(_SLA, params).fetchall()]
    stale = [{"run_id": r["run_id"], "step": s["step"], "started_at": s["started_at"], "ran_on": s["ran_on"]}
             for r in runs.values() for s in r["steps"] if s["stale"]]
    return {
        "date": day.isoformat(),
        "stale_after_s": stale_after_s,
        "runs": list(runs.values()),
        "files": files,
        "quality_issues": issues,
        "dbt": list(dbt.values()),
        "builds": builds,
        "withdrawals": withdrawals,
        "published": {k: _plain(v) for k, v in published.items()} if published else None,
        "freshness": freshness,
        "sla": sla,
        "stale_steps": stale,
    }


def _n(value: Any) -> str:
    return "-" if value is None else str(value)


def render(report: dict[str, Any]) -> str:
    """The audit as text for people."""
    out = [f"audit of {report['date']}: {len(report['runs'])} run(s)"]
    if not report["runs"]:
        out.append("  no step of any run is recorded for this date")
    for run in report["runs"]:
        out.append("")
        out.append(f"run {run['run_id']}  {run['status']}  started {run['started_at']}")
        out.append(f"  {'step':<10} {'status':<8} {'seconds':>8} {'in':>9} {'loaded':>9} {'rejected':>9}  notes")
        for s in run["steps"]:
            notes = []
            if s["stale"]:
                notes.append(f"STALE: RUNNING for more than {report['stale_after_s']}s (process gone?)")
            if s.get("error_class"):
                notes.append(s["error_class"].upper() + ":")
            if s["error"]:
                notes.append(f"error: {s['error']}")
            out.append(f"  {s['step']:<10} {s['status']:<8} {_n(s['duration_s']):>8} {_n(s['rows_in']):>9} "
                       f"{_n(s['rows_loaded']):>9} {_n(s['rows_rejected']):>9}  {' '.join(notes)}".rstrip())
    out.append("")
    out.append("files (ledger meta.source_file)")
    if not report["files"]:
        out.append("  none recorded")
    for f in report["files"]:
        out.append(f"  {f['file_name']}  sha256 {f['sha256']}  {f['outcome']}  in={_n(f['rows_in'])} "
                   f"loaded={_n(f['rows_loaded'])} already_in_raw={_n(f['rows_already_in_raw'])} "
                   f"rejected={_n(f['rows_rejected'])}"
                   + (f" withheld={f['rows_withheld']}" if f["rows_withheld"] else "") + f"  run {f['run_id']}"
                   + (f"  ({f['detail']})" if f["detail"] else ""))
    out.append("")
    out.append("quality issues (meta.data_quality_issue)")
    if not report["quality_issues"]:
        out.append("  none")
    for i in report["quality_issues"]:
        examples = "; ".join(f"line {e['line']}: {e['value']!r}" for e in i["examples"])
        out.append(f"  {i['rule']:<34} {_n(i['column_name']):<18} {i['severity']:<8} {i['issues']:>7}  "
                   f"e.g. {examples}")
    out.append("")
    out.append("dbt results (meta.dbt_node_result)")
    if not report["dbt"]:
        out.append("  none")
    for d in report["dbt"]:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(d["counts"].items()))
        out.append(f"  {d['step']:<9} run {d['run_id']}: {counts}")
        for n in d["not_passed"]:
            out.append(f"    {n['status'].upper()}: {n['unique_id']}"
                       + (f" ({n['failures']} failing rows)" if n["failures"] else ""))
    out.append("")
    out.append("marts builds (meta.mart_build: dbt-build -> dbt-test -> publish)")
    if not report["builds"]:
        out.append("  none")
    for b in report["builds"]:
        out.append(f"  build {b['id']}  run {b['run_id']}  {b['status']}  delta={_n(b['delta_rows'])} "
                   f"dim={_n(b['dim_rows'])}" + (f"  ({b['error']})" if b["error"] else ""))
    for f in report["freshness"]:
        out.append(f"  source freshness {f['source']}: {f['status']} (newest row {f['max_loaded_at']})")
    p = report["published"]
    out.append("analysts now read: " + (f"build {p['id']} of run {p['run_id']} ({p['logical_date']}), "
                                        f"published {p['published_at']}" if p else "nothing published yet"))
    out.append("")
    out.append("SLA (meta.run_sla, recorded by finish)")
    if not report["sla"]:
        out.append("  none recorded")
    for r in report["sla"]:
        ratio = "-" if r["quarantine_ratio"] is None else f"{r['quarantine_ratio']:.2%}"
        out.append(f"  run {r['run_id']}  {'MET' if r['sla_met'] else 'MISSED: ' + ', '.join(r['missed'])}  "
                   f"file due {_n(r['file_due_at'])}, arrived {_n(r['file_arrived_at'])} "
                   f"({_n(r['file_seconds_late'])}s late); publish by {_n(r['publish_deadline_at'])}, "
                   f"published {_n(r['published_at'])}; quarantined {ratio} (limit {_n(r['max_quarantine_ratio'])})")
    out.append("")
    out.append("withdrawn files (meta.file_withdrawal: of this date, or applied by a build of its runs)")
    if not report["withdrawals"]:
        out.append("  none")
    for w in report["withdrawals"]:
        applied = (f"applied by build {w['applied_build_id']} at {w['applied_at']}" if w["applied_build_id"]
                   else "not published yet")
        out.append(f"  {w['file_name']}  sha256 {w['sha256']}  file date {w['file_date']}  loaded by run "
                   f"{w['loaded_by_run']}  {w['raw_rows']} raw rows: withdrawn at {w['withdrawn_at']} by "
                   f"{w['withdrawn_by_login']} as {w['withdrawn_by_role']}, reason: {w['reason']}; {applied}")
    out.append("")
    if report["stale_steps"]:
        out.append(f"STALE steps (RUNNING for more than {report['stale_after_s']}s): "
                   + ", ".join(f"{s['step']} of run {s['run_id']}" for s in report["stale_steps"]))
    else:
        out.append("no stale steps")
    return "\n".join(out)


def run(settings: Settings, day: dt.date, as_json: bool) -> str:
    with connect(settings) as conn:
        report = collect(conn, day, settings.stale_after_s)
    return json.dumps(report, indent=2, default=str) if as_json else render(report)
