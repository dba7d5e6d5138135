"""``contribflow audit --from D1 --to D2 --html FILE``: the evidence pack of a period.

One self-contained HTML file (inline CSS and inline SVG, no script, no external asset, nothing
fetched when it is opened), to attach to an audit: rows loaded vs quarantined per day (a chart),
run outcomes and step durations, quality issues by rule with examples (identifier values masked),
dbt test results, source freshness and late-file events, the ledger of files with their sha256, and
which build analysts read, the period's correction requests with who asked and who approved, and
the audit chain's head. Everything comes from ``meta`` (the pipeline's own record); the auditor
role (migration 0008) reads all of it.

The markup is a Jinja2 template (``templates/evidence_pack.html.j2``, autoescaped); this module only
gathers the numbers, and the chart's geometry as numbers, for it. The pack is signed: FILE.sig next
to it (contribflow/audit/signing.py; ``contribflow verify-pack FILE``).
"""

from __future__ import annotations

import datetime as dt
import decimal
import statistics
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from contribflow.audit import signing
from contribflow.db import connect
from contribflow.errors import StageError
from contribflow.redact import DESCRIPTION
from contribflow.settings import Settings

EXAMPLES_PER_RULE = 3
MASK_KEEP = 2
"""A masked identifier keeps its first two characters: DEC_… stays recognisable as a declaration,
TAXP_63976 becomes TA•••••••• (a raw taxpayer id never appears in the pack)."""

_LEDGER = """
SELECT file_date, file_name, sha256, size_bytes, rows_in, rows_loaded, rows_already_in_raw, rows_rejected,
       rows_withheld, outcome, detail, run_id, seen_at
  FROM meta.source_file WHERE file_date BETWEEN %(first)s AND %(last)s ORDER BY file_date, id
"""
_REQUESTS = """
SELECT r.id, r.kind, r.arguments::text AS arguments, r.reason, r.requested_by, r.requested_at, r.expires_at,
       meta.correction_state(r.id) AS state, d.approved, d.decided_by, d.decided_at, d.reason AS decision_reason,
       a.applied_by, a.applied_at
  FROM meta.correction_request r
  LEFT JOIN meta.correction_decision d ON d.request_id = r.id
  LEFT JOIN meta.correction_application a ON a.request_id = r.id
 WHERE r.requested_at::date BETWEEN %(first)s AND %(last)s
    OR (coalesce(r.arguments->>'date', r.arguments->>'before'))::date BETWEEN %(first)s AND %(last)s
 ORDER BY r.id
"""
"""The corrections (issue 28) made in the period or concerning one of its dates: who asked, who
decided, when it was applied."""
_STEPS = """
SELECT run_id, step, logical_date, status, started_at, duration_s, rows_in, rows_loaded, rows_rejected,
       error, error_class, workflow_name, pod_name, ran_on
  FROM meta.etl_run WHERE logical_date BETWEEN %(first)s AND %(last)s ORDER BY id
"""
_ISSUES = """
SELECT rule, column_name, severity, count(*) AS issues, count(DISTINCT (source_sha256, source_line)) AS rows,
       (array_agg(jsonb_build_object('line', source_line, 'value', left(failing_value, 80), 'file', source_file)
                  ORDER BY source_file, source_line))[1:%(examples)s] AS examples
  FROM (SELECT DISTINCT ON (source_sha256, source_file, coalesce(source_line, 0), rule, coalesce(column_name, ''))
               * FROM meta.data_quality_issue WHERE run_id = ANY(%(runs)s)
         ORDER BY source_sha256, source_file, coalesce(source_line, 0), rule, coalesce(column_name, ''), id) AS once
 GROUP BY rule, column_name, severity ORDER BY severity, count(*) DESC, rule, column_name
"""
_DBT = """
SELECT run_id, step, resource_type, unique_id, status, failures, left(message, 300) AS message
  FROM meta.dbt_node_result WHERE run_id = ANY(%(runs)s) ORDER BY id
"""
_FRESHNESS = """
SELECT run_id, source, max_loaded_at, age_s, status, checked_at
  FROM meta.source_freshness WHERE run_id = ANY(%(runs)s) ORDER BY id
"""
_BUILDS = """
SELECT id, run_id, logical_date, status, delta_rows, dim_rows, started_at, published_at, error
  FROM meta.mart_build WHERE run_id = ANY(%(runs)s) ORDER BY id
"""
_SLA = """
SELECT run_id, logical_date, workflow_status, sla_met, missed, file_due_at, file_arrived_at, file_seconds_late,
       publish_deadline_at, published_at, rows_in, rows_quarantined, quarantine_ratio, max_quarantine_ratio,
       recorded_at
  FROM meta.run_sla WHERE logical_date BETWEEN %(first)s AND %(last)s OR run_id = ANY(%(runs)s) ORDER BY id
"""
_PUBLISHED = """
SELECT id, run_id, logical_date, published_at, delta_rows, dim_rows
  FROM meta.mart_build WHERE status = 'PUBLISHED' ORDER BY id DESC LIMIT 1
"""


def mask(value: str | None) -> str | None:
    """An identifier's value, all but its first characters hidden (its length kept)."""
    if value is None:
        return None
    return value[:MASK_KEEP] + "\u2022" * min(max(len(value) - MASK_KEEP, 0), 24)


def _described(value: str | None) -> bool:
    """A value ingest already wrote as its description (contribflow/redact.py): shown as it is."""
    return value is not None and bool(DESCRIPTION.match(value))


def _num(value: Any) -> Any:
    return float(value) if isinstance(value, decimal.Decimal) else value


def _rows(cur: psycopg.Cursor[dict[str, Any]], query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: _num(v) for k, v in r.items()} for r in cur.execute(query, params).fetchall()]


def _chart(days: list[dict[str, Any]]) -> dict[str, Any]:
    """The geometry of the loaded-vs-quarantined bar chart (the template draws it as SVG)."""
    width, height, left, bottom, top = 880, 260, 70, 40, 20
    plot_h = height - bottom - top
    peak = max([d["loaded"] for d in days] + [d["quarantined"] for d in days] + [1])
    step = (width - left - 10) / max(len(days), 1)
    bar = max(min(step * 0.35, 60), 2)
    bars = []
    for i, d in enumerate(days):
        x = left + i * step + step / 2
        for offset, key in ((-bar, "loaded"), (0, "quarantined")):
            h = plot_h * d[key] / peak
            bars.append({"x": round(x + offset, 1), "y": round(top + plot_h - h, 1), "w": round(bar, 1),
                         "h": round(h, 1), "kind": key, "value": d[key], "day": d["day"]})
    ticks = [{"y": round(top + plot_h - plot_h * f, 1), "label": f"{round(peak * f):,}"}
             for f in (0, 0.25, 0.5, 0.75, 1)]
    labels = [{"x": round(left + i * step + step / 2, 1), "label": d["day"]} for i, d in enumerate(days)]
    return {"width": width, "height": height, "left": left, "top": top, "base": top + plot_h,
            "bars": bars, "ticks": ticks, "labels": labels}


def collect(conn: psycopg.Connection, first: dt.date, last: dt.date, identifiers: set[str]) -> dict[str, Any]:
    """The pack's content as plain data."""
    params: dict[str, Any] = {"first": first, "last": last, "examples": EXAMPLES_PER_RULE}
    cur = conn.cursor(row_factory=dict_row)
    ledger = _rows(cur, _LEDGER, params)
    steps = _rows(cur, _STEPS, params)
    runs: dict[str, dict[str, Any]] = {}
    for s in steps:
        run = runs.setdefault(s["run_id"], {"run_id": s["run_id"], "logical_date": s["logical_date"],
                                            "started_at": s["started_at"], "workflow_name": s["workflow_name"],
                                            "steps": []})
        run["steps"].append(s)
    for run in runs.values():
        states = [s["status"] for s in run["steps"]]
        finish = [s for s in run["steps"] if s["step"] == "finish"]
        run["status"] = (finish[-1]["status"] if finish else "FAILED" if "FAILED" in states
                         else "RUNNING" if "RUNNING" in states else "INCOMPLETE")
    params["runs"] = list(runs)

    by_step: dict[str, dict[str, Any]] = {}
    for s in steps:
        entry = by_step.setdefault(s["step"], {"step": s["step"], "SUCCESS": 0, "FAILED": 0, "RUNNING": 0,
                                               "durations": []})
        entry[s["status"]] += 1
        if s["duration_s"] is not None:
            entry["durations"].append(float(s["duration_s"]))
    step_stats = []
    for e in by_step.values():
        d = e.pop("durations")
        e.update({"min_s": min(d) if d else None, "median_s": statistics.median(d) if d else None,
                  "max_s": max(d) if d else None})
        step_stats.append(e)

    days = []
    day = first
    while day <= last:
        files = [f for f in ledger if f["file_date"] == day and f["outcome"] == "LOADED"]
        days.append({"day": day.isoformat(), "files": len(files),
                     "rows_in": sum(f["rows_in"] or 0 for f in files),
                     "loaded": sum(f["rows_loaded"] or 0 for f in files),
                     "quarantined": sum(f["rows_rejected"] or 0 for f in files)})
        day += dt.timedelta(days=1)

    issues = _rows(cur, _ISSUES, params)
    for i in issues:
        hide = i["column_name"] is None or i["column_name"] in identifiers
        i["masked"] = hide
        i["examples"] = [{**e, "value": e["value"] if not hide or _described(e["value"]) else mask(e["value"])}
                         for e in i["examples"]]

    dbt: dict[str, dict[str, Any]] = {}
    for n in _rows(cur, _DBT, params):
        entry = dbt.setdefault(f"{n['run_id']} {n['step']}", {"run_id": n["run_id"], "step": n["step"],
                                                             "counts": {}, "not_passed": [], "tests": 0})
        entry["counts"][n["status"]] = entry["counts"].get(n["status"], 0) + 1
        entry["tests"] += n["resource_type"] in ("test", "unit_test")
        if n["status"] not in ("pass", "success"):
            entry["not_passed"].append(n)

    late = [s for s in steps if s["error_class"] == "late"]
    sla = _rows(cur, _SLA, params)
    for record in sla:  # each run shows the outcome its finish recorded (the last, were it run twice)
        if record["run_id"] in runs:
            runs[record["run_id"]]["sla"] = record
    for run in runs.values():
        run.setdefault("sla", None)
    published = cur.execute(_PUBLISHED).fetchone()
    head = cur.execute("SELECT seq, encode(link, 'hex') AS link FROM meta.audit_chain_head").fetchone()
    who = cur.execute("SELECT current_user AS role, current_database() AS db, "
                      "clock_timestamp() AS at").fetchone()
    return {
        "first": first.isoformat(), "last": last.isoformat(), "generated_at": who["at"], "role": who["role"],
        "database": who["db"],
        "totals": {"files": sum(d["files"] for d in days), "rows_in": sum(d["rows_in"] for d in days),
                   "loaded": sum(d["loaded"] for d in days), "quarantined": sum(d["quarantined"] for d in days),
                   "runs": len(runs), "runs_succeeded": sum(r["status"] == "SUCCESS" for r in runs.values()),
                   "runs_failed": sum(r["status"] == "FAILED" for r in runs.values()),
                   "late": len(late), "sla_met": sum(bool(r["sla_met"]) for r in sla),
                   "sla_missed": sum(not r["sla_met"] for r in sla)},
        "days": days, "chart": _chart(days), "runs": list(runs.values()), "step_stats": step_stats,
        "ledger": ledger, "quality_issues": issues, "dbt": list(dbt.values()),
        "freshness": _rows(cur, _FRESHNESS, params), "late": late,
        "builds": _rows(cur, _BUILDS, params), "sla": sla,
        "requests": _rows(cur, _REQUESTS, params),
        "published": dict(published) if published else None,
        # The audit chain's head when the pack was made (migration 0015): `contribflow verify` of a
        # later day proves every record the pack summarises is still as it was, up to this seq.
        "chain_head": {"seq": head["seq"], "link": head["link"]},
        # The content hashes of the period's publications (meta.publication_output, migration 0014):
        # the signature's predicate carries them, so `contribflow reproduce` can be checked against
        # what the signed pack says was published.
        "publications": _rows(cur, _PUBLICATIONS, params),
    }


_PUBLICATIONS = """
SELECT p.id, p.logical_date::text AS logical_date, o.table_name AS table, o.row_count AS rows, o.content_hash
  FROM meta.publication p JOIN meta.publication_output o ON o.publication_id = p.id
 WHERE p.logical_date BETWEEN %(first)s AND %(last)s
 ORDER BY p.id, o.table_name
"""


def render(pack: dict[str, Any]) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(
            lambda name: (resources.files("contribflow.audit") / "templates" / name).read_text(encoding="utf-8")),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["n"] = lambda v: "-" if v is None else (f"{v:,}" if isinstance(v, int) else
                                                        f"{v:,.3f}" if isinstance(v, float) else str(v))
    return env.get_template("evidence_pack.html.j2").render(pack=pack)


def run(settings: Settings, first: dt.date, last: dt.date, out: Path) -> str:
    if last < first:
        raise ValueError(f"--to {last} is before --from {first}")
    identifiers = {c.name for c in settings.contract.columns if c.type == "identifier"}
    with connect(settings) as conn:
        conn.read_only = True
        try:
            pack = collect(conn, first, last, identifiers)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise StageError("the evidence pack reads meta, which only the auditor role (contribflow_auditor) "
                             f"and the pipeline's roles may read ({str(exc).strip().splitlines()[0]})") from None
    html = render(pack)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    sig = signing.sign(settings, out, {"from": pack["first"], "to": pack["last"], "database": pack["database"],
                                       "generated_at": pack["generated_at"].isoformat(),
                                       "chain_head": pack["chain_head"], "publications": pack["publications"]})
    t = pack["totals"]
    return (f"audit: evidence pack {first}..{last} -> {out} ({t['files']} file(s), {t['loaded']} rows loaded, "
            f"{t['quarantined']} quarantined, {t['runs']} run(s)); signed -> {sig}")
