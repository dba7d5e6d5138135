"""Four eyes on every correction (issue 28): requests, decisions and their application.

A correction changes published numbers or destroys evidence, so one person asks, a different
person approves, both are recorded, and the change cannot happen any other way. The rule is
PostgreSQL's, not this module's (migration 0016): people are login roles, members of
``contribflow_operator`` (request) or ``contribflow_approver`` (approve or reject), identified by
``session_user``; requests, decisions and applications are append-only tables written only by
SECURITY DEFINER functions that refuse self-approval, a non-approver, an expired or decided request;
and the actions (a withdrawal, a purge) are refused by triggers unless the same transaction applied
an approved request of that kind. This module only calls those functions, turns their refusals
into one clear line, and runs the approved action inside the transaction that records it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from contribflow.db import connect
from contribflow.errors import StageError
from contribflow.settings import Settings
from contribflow.step import StepRun

KINDS = ("withdraw-file", "reprocess", "reload-corrected", "purge-quarantine")
REBUILDS = ("withdraw-file", "reprocess", "reload-corrected")
"""Kinds whose application changes the marts: a rebuild and publication follow (write-audit-publish)."""
PEOPLE_ROLES = ("operator", "approver", "auditor")
PERSON = re.compile(r"[a-z_][a-z0-9_]{0,62}", re.ASCII)
"""A person's login: a plain lower-case PostgreSQL identifier (no quoting needed anywhere)."""
REFUSALS = ("42501", "55000", "P0002", "22023", "23514")
"""The SQLSTATEs the functions of migration 0016 refuse with (privilege, state, no such request,
bad value, check): a refusal to report as one line (exit 1), not a database failure."""


@dataclass(frozen=True)
class Request:
    id: int
    kind: str
    arguments: dict
    reason: str
    requested_by: str
    requested_at: dt.datetime
    expires_at: dt.datetime
    state: str
    decided_by: str | None = None
    decided_at: dt.datetime | None = None
    decision_reason: str | None = None
    applied_by: str | None = None
    applied_at: dt.datetime | None = None

    @property
    def day(self) -> dt.date:
        return dt.date.fromisoformat(self.arguments.get("date") or self.arguments["before"])

    def describe(self) -> str:
        args = " ".join(f"--{k} {v}" for k, v in self.arguments.items() if v is not None)
        out = (f"request {self.id} {self.state}: {self.kind} {args}: {self.reason!r}; requested by "
               f"{self.requested_by} at {self.requested_at:%Y-%m-%d %H:%M:%S%z}, expires "
               f"{self.expires_at:%Y-%m-%d %H:%M:%S%z}")
        if self.decided_by:
            verb = "rejected" if self.state == "REJECTED" else "approved"
            out += f"; {verb} by {self.decided_by} at {self.decided_at:%Y-%m-%d %H:%M:%S%z}"
            out += f" ({self.decision_reason!r})" if self.decision_reason else ""
        if self.applied_by:
            out += f"; applied by {self.applied_by} at {self.applied_at:%Y-%m-%d %H:%M:%S%z}"
        return out


_SELECT = """
SELECT r.id, r.kind, r.arguments, r.reason, r.requested_by, r.requested_at, r.expires_at,
       meta.correction_state(r.id), d.decided_by, d.decided_at, d.reason, a.applied_by, a.applied_at
  FROM meta.correction_request r
  LEFT JOIN meta.correction_decision d ON d.request_id = r.id
  LEFT JOIN meta.correction_application a ON a.request_id = r.id
"""


def _refused(exc: psycopg.Error) -> StageError:
    """A refusal of migration 0016's functions or triggers, as its own message (one line)."""
    primary = exc.diag.message_primary or str(exc).strip().splitlines()[0]
    return StageError(primary.removeprefix("contribflow ").split(": ", 1)[-1] if primary.startswith("contribflow ")
                      else primary)


def _guarded(action):
    def call(*args, **kwargs):
        try:
            return action(*args, **kwargs)
        except psycopg.Error as exc:
            if exc.sqlstate in REFUSALS:
                raise _refused(exc) from None
            raise
    return call


@_guarded
def request(settings: Settings, kind: str, arguments: dict, reason: str) -> int:
    """Make a request as the connected person (session_user); its id."""
    if kind not in KINDS:
        raise ValueError(f"unknown request kind {kind!r}; known: {', '.join(KINDS)}")
    with connect(settings) as conn:
        if kind in ("withdraw-file", "reprocess"):
            _check_file(conn, kind, arguments)
        new = conn.execute("SELECT meta.request_correction(%s, %s, %s, %s)",
                           (kind, Jsonb(arguments), reason, settings.request_ttl_hours)).fetchone()[0]
        conn.commit()
    return int(new)


def _check_file(conn: psycopg.Connection, kind: str, arguments: dict) -> None:
    """Refuse at once a request naming no such load (the apply would refuse it days later)."""
    outcome = "LOADED" if kind == "withdraw-file" else "REJECTED"
    found = conn.execute("SELECT count(*) FROM meta.source_file WHERE file_date = %s AND outcome = %s",
                         (arguments["date"], outcome)).fetchone()[0]
    if not found:
        raise StageError(f"no file dated {arguments['date']} is {outcome} in meta.source_file: a {kind} request "
                         f"names a {outcome} file (contribflow audit --date {arguments['date']} lists them)")


def load(conn: psycopg.Connection, request_id: int) -> Request:
    row = conn.execute(_SELECT + " WHERE r.id = %s", (request_id,)).fetchone()
    if row is None:
        raise StageError(f"there is no request {request_id} (contribflow requests lists them)")
    return Request(*row)


def listing(settings: Settings, open_only: bool, first: dt.date | None = None,
            last: dt.date | None = None) -> list[Request]:
    """Every request, or only those still to decide or apply; or those made in [first, last]."""
    where = " WHERE meta.correction_state(r.id) IN ('OPEN', 'APPROVED')" if open_only else ""
    if first is not None and last is not None:
        where = " WHERE r.requested_at::date BETWEEN %s AND %s"
    with connect(settings) as conn:
        rows = conn.execute(_SELECT + where + " ORDER BY r.id",
                            (first, last) if first is not None else ()).fetchall()
    return [Request(*r) for r in rows]


@_guarded
def decide(settings: Settings, request_id: int, approved: bool, reason: str | None) -> Request:
    with connect(settings) as conn:
        conn.execute("SELECT meta.decide_correction(%s, %s, %s)", (request_id, approved, reason))
        conn.commit()
        return load(conn, request_id)


@dataclass
class Applied:
    request: Request
    done: bool
    """False: the request was applied before, and nothing was done now."""
    details: dict


@_guarded
def apply(settings: Settings, request_id: int) -> Applied:
    """Apply an approved request: its application and its action in one transaction."""
    with connect(settings) as conn:
        req = load(conn, request_id)
        conn.commit()
    with StepRun(settings, "apply", req.day) as step, connect(settings) as conn:
        with conn.transaction():
            if not conn.execute("SELECT meta.apply_correction(%s)", (request_id,)).fetchone()[0]:
                step.details = {"request": request_id, "already_applied": "true", "run_date": req.day.isoformat(),
                                "rebuild": "false"}
                return Applied(req, False, step.details)
            details = _ACTIONS[req.kind](settings, conn, req)
        step.details = {"request": request_id, "kind": req.kind, **details, "run_date": req.day.isoformat(),
                        "rebuild": "true" if req.kind in REBUILDS else "false"}
        step.source_file = details.get("file")
        with connect(settings) as again:
            return Applied(load(again, request_id), True, step.details)


def _withdraw(settings: Settings, conn: psycopg.Connection, req: Request) -> dict:
    from contribflow.warehouse import withdraw

    name = f"contributions_{req.day:%Y%m%d}.csv"
    w = withdraw.record(conn, name, req.arguments.get("run"), req.reason)
    out = {"file": w.file_name, "sha256": w.sha256, "loaded_by_run": w.run_id, "raw_rows": w.raw_rows,
           "withdrawal_id": w.id}
    if w.kept_by_later_files:
        out["kept_by_later_files"] = w.kept_by_later_files
    return out


def _purge(settings: Settings, conn: psycopg.Connection, req: Request) -> dict:
    from contribflow.warehouse import purge

    return purge.purge(conn, req.day)


def _ingest(settings: Settings, conn: psycopg.Connection, req: Request, path: Path) -> dict:
    """Ingest a file of the landing folder inside the request's transaction (ingest_file nests its
    own transaction as a savepoint of it): the load and its request commit together."""
    from contribflow.ingest import load as ingest
    from contribflow.ingest.source import checked_fingerprint, resolve_source

    source = resolve_source(settings, req.day, path)
    facts, before_commit = checked_fingerprint(settings, source)
    outcome = ingest.ingest_file(settings, req.day, source, conn, facts, before_commit)
    if outcome.earlier is not None:
        raise StageError(f"{source.name} (sha256 {facts.sha256}) was loaded already: request {req.id} has nothing "
                         "to load; nothing applied")
    if outcome.refusal:
        raise StageError(f"{source.name}: {outcome.refusal}; request {req.id} not applied, nothing loaded")
    return {"file": source.name, "sha256": facts.sha256, "rows_in": outcome.rows_in,
            "rows_loaded": outcome.rows_loaded, "rows_rejected": outcome.rows_rejected}


def _reprocess(settings: Settings, conn: psycopg.Connection, req: Request) -> dict:
    threshold = req.arguments.get("threshold")
    one_run = dataclasses.replace(settings, reject_threshold=float(threshold)) if threshold is not None else settings
    return _ingest(one_run, conn, req, settings.landing_dir / f"contributions_{req.day:%Y%m%d}.csv")


_LINKS = """
INSERT INTO meta.correction_link (request_id, declaration_id, quarantine_sha256, quarantine_line,
                                  corrected_file, corrected_line)
SELECT DISTINCT ON (r.declaration_id, q.source_sha256, q.source_line)
       %(request)s, r.declaration_id, q.source_sha256, q.source_line, r.source_file, r.source_line
  FROM raw.contributions r
  JOIN raw.contributions_quarantine q
    ON q.file_date = r.file_date AND split_part(q.raw_line, ',', 1) = r.declaration_id
   AND q.source_sha256 <> %(sha256)s
 WHERE r.run_id = %(run)s AND r.source_file = %(file)s AND r.file_date = %(day)s AND r.ingestion_ts >= now()
"""
"""Each corrected row loaded now, with the quarantined line of the same declaration and date it
replaces (a quarantined line's first field is its declaration id, as the source writes it)."""


def _reload(settings: Settings, conn: psycopg.Connection, req: Request) -> dict:
    out = _ingest(settings, conn, req, settings.landing_dir / req.arguments["file"])
    out["rows_linked"] = conn.execute(_LINKS, {"request": req.id, "sha256": out["sha256"], "run": settings.run_id,
                                               "file": out["file"], "day": req.day}).rowcount
    if not out["rows_linked"]:
        raise StageError(f"{out['file']}: no row of it corrects a quarantined line of {req.day} (the same declaration "
                         f"id); request {req.id} not applied, nothing loaded")
    return out


_ACTIONS = {"withdraw-file": _withdraw, "purge-quarantine": _purge, "reprocess": _reprocess,
            "reload-corrected": _reload}


def add_person(settings: Settings, name: str, role: str) -> bool:
    """Create the LOGIN role ``name`` (without a password) if it does not exist, and grant it the
    group role of ``role``; True when it was created. Needs CREATEROLE."""
    if not PERSON.fullmatch(name) or name.startswith(("pg_", "contribflow_")):
        raise ValueError(f"{name[:80]!r} is not a person's login: 1 to 63 lower-case letters, digits and '_', "
                         "starting with a letter or '_', not pg_* nor contribflow_*")
    if role not in PEOPLE_ROLES:
        raise ValueError(f"{role!r} is not a person's role; known: {', '.join(PEOPLE_ROLES)}")
    group = f"contribflow_{role}"
    with connect(settings) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (group,)).fetchone():
            raise StageError(f"the group role {group} does not exist: run contribflow init-db first")
        existing = conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
        if existing is not None and not existing[0]:
            raise StageError(f"{name} exists and is not a LOGIN role (a group role?): a person is a login")
        if existing is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(name)))
        conn.commit()
    return existing is None
