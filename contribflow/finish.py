"""finish: the exit handler. Records the outcome of the whole run as its own meta.etl_run row, and
the run date's SLA outcome (meta.run_sla, and as output parameters the Argo custom metrics read:
workflows/metrics.py), and the audit chain's head as the run leaves it (output parameters
``audit_chain_seq`` and ``audit_chain_head``, visible in the Argo UI: a later ``contribflow verify``
that reaches this seq with this link proves nothing before it changed; migration 0015). A failed
run, a late file or a missed SLA is told to the configured notifiers (contribflow/notify.py), whose
failure never changes the run's outcome."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import psycopg

from contribflow import notify
from contribflow.db import connect
from contribflow.errors import StageError
from contribflow.settings import Settings
from contribflow.step import StepRun
from contribflow.warehouse import build_slot

SUCCEEDED = "Succeeded"
VOLUME_WARNINGS = ("low", "high", "empty")
"""ingest's volume verdicts that are a warning (contribflow/ingest/volume.py)."""


@dataclass(frozen=True)
class Facts:
    """What the warehouse says about the run date, read by finish."""

    file_arrived_at: dt.datetime | None = None
    """The first LOADED entry of the date in meta.source_file."""
    published_at: dt.datetime | None = None
    """The first PUBLISHED build of the date in meta.mart_build."""
    rows_in: int | None = None
    """Rows of the date's latest LOADED file, and how many of them were quarantined."""
    rows_quarantined: int | None = None
    volume: str | None = None
    """This run's ingest volume verdict (ok, low, high, empty, or None when ingest did not say)."""
    latest_published_at: dt.datetime | None = None
    latest_published_date: dt.date | None = None
    latest_file_date: dt.date | None = None


@dataclass(frozen=True)
class SlaOutcome:
    file_due_at: dt.datetime | None
    file_seconds_late: int | None
    publish_deadline_at: dt.datetime | None
    quarantine_ratio: float | None
    missed: tuple[str, ...] = field(default=())

    @property
    def met(self) -> bool:
        return not self.missed


def midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)


def evaluate(settings: Settings, day: dt.date, run_ok: bool, facts: Facts, now: dt.datetime) -> SlaOutcome:
    """The run date's SLA outcome at ``now``. A file not arrived is as late as ``now`` is past its
    due time; marts not published by a deadline still ahead are missed too (the run is over)."""
    missed: list[str] = []
    due_at = late = deadline_at = ratio = None
    if settings.sla_file_due_s is not None:
        due_at = midnight(day) + dt.timedelta(seconds=settings.sla_file_due_s)
        arrived = facts.file_arrived_at or now
        late = max(0, int((arrived - due_at).total_seconds()))
        if late > 0:
            missed.append("file_late")
    if settings.sla_publish_deadline_s is not None:
        deadline_at = midnight(day) + dt.timedelta(seconds=settings.sla_publish_deadline_s)
        if facts.published_at is None:
            missed.append("not_published")
        elif facts.published_at > deadline_at:
            missed.append("published_late")
    if facts.rows_in:
        ratio = (facts.rows_quarantined or 0) / facts.rows_in
    if settings.sla_max_quarantine_ratio is not None and ratio is not None \
            and ratio > settings.sla_max_quarantine_ratio:
        missed.append("quarantine_ratio")
    if not run_ok:
        missed.append("run_failed")
    return SlaOutcome(due_at, late, deadline_at, ratio, tuple(missed))


def read_facts(settings: Settings, day: dt.date) -> Facts:
    """The run date's facts; none when init-db never ran (no table to read)."""
    try:
        with connect(settings, autocommit=True) as conn:
            arrived, latest_file = conn.execute(
                """SELECT min(seen_at) FILTER (WHERE file_date = %s), max(file_date)
                     FROM meta.source_file WHERE outcome = 'LOADED'""", (day,)).fetchone() or (None, None)
            published, latest_at, latest_date = conn.execute(
                """SELECT min(published_at) FILTER (WHERE logical_date = %s), max(published_at),
                          max(logical_date)
                     FROM meta.mart_build WHERE status = 'PUBLISHED'""", (day,)).fetchone() or (None, None, None)
            counts = conn.execute(
                """SELECT rows_in, rows_rejected FROM meta.source_file
                    WHERE file_date = %s AND outcome = 'LOADED' ORDER BY id DESC LIMIT 1""", (day,)).fetchone()
            volume = conn.execute(
                """SELECT details->>'volume' FROM meta.etl_run
                    WHERE run_id = %s AND step = 'ingest' ORDER BY id DESC LIMIT 1""",
                (settings.run_id,)).fetchone()
    except psycopg.errors.UndefinedTable:
        return Facts()
    rows_in, rows_quarantined = counts or (None, None)
    volume = volume[0] if volume else None
    return Facts(arrived, published, rows_in, rows_quarantined, volume, latest_at, latest_date, latest_file)


def _epoch(value: dt.datetime | dt.date | None) -> int | None:
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        value = midnight(value)
    return int(value.timestamp())


def outputs(outcome: SlaOutcome, facts: Facts, run_ok: bool, now: dt.datetime) -> dict[str, int | str]:
    """The SLA values finish writes as output parameters (the Argo custom metrics' values: an unknown
    value is left out, and the controller skips that sample)."""
    values: dict[str, int | str | None] = {
        "run_succeeded": int(run_ok),
        "sla_met": int(outcome.met),
        "sla_missed": ",".join(outcome.missed),
        "file_seconds_late": outcome.file_seconds_late,
        "quarantine_ratio": None if outcome.quarantine_ratio is None else f"{outcome.quarantine_ratio:.6f}",
        "volume_warning": None if facts.volume is None else int(facts.volume in VOLUME_WARNINGS),
        "publication_age_seconds": (None if facts.latest_published_at is None
                                    else max(0, int((now - facts.latest_published_at).total_seconds()))),
        "marts_published_timestamp_seconds": _epoch(facts.latest_published_at),
        "marts_published_run_date_seconds": _epoch(facts.latest_published_date),
        "file_latest_run_date_seconds": _epoch(facts.latest_file_date),
        "run_finished_timestamp_seconds": _epoch(now),
    }
    return {k: v for k, v in values.items() if v is not None}


def _record(settings: Settings, day: dt.date, status: str, outcome: SlaOutcome, facts: Facts) -> None:
    try:
        with connect(settings, autocommit=True) as conn:
            conn.execute(
                """INSERT INTO meta.run_sla (run_id, logical_date, workflow_status, file_due_at, file_arrived_at,
                                            file_seconds_late, publish_deadline_at, published_at, rows_in,
                                            rows_quarantined, quarantine_ratio, max_quarantine_ratio, missed)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                (settings.run_id, day, status, outcome.file_due_at, facts.file_arrived_at,
                 outcome.file_seconds_late, outcome.publish_deadline_at, facts.published_at, facts.rows_in,
                 facts.rows_quarantined, outcome.quarantine_ratio, settings.sla_max_quarantine_ratio,
                 list(outcome.missed)))
    except psycopg.errors.UndefinedTable:  # init-db never ran: nothing to record it in
        pass


CHAIN_OUTPUTS = ("audit_chain_seq", "audit_chain_head")
"""finish's outputs that are no metric: where the audit chain stood (the Argo UI shows them)."""


def chain_head(settings: Settings) -> dict[str, int | str]:
    """The audit chain's head (seq and link, hex): every row this run sealed is before it (its own
    finish row is sealed when it closes, after)."""
    try:
        with connect(settings, autocommit=True) as conn:
            seq, link = conn.execute("SELECT seq, encode(link, 'hex') FROM meta.audit_chain_head").fetchall()[0]
    except psycopg.errors.UndefinedTable:  # init-db never ran
        return {}
    return dict(zip(CHAIN_OUTPUTS, (seq, link), strict=True))


def run(settings: Settings, day: dt.date, status: str, now: dt.datetime | None = None) -> StepRun:
    """``status`` is Argo's ``{{workflow.status}}``: Succeeded, Failed or Error."""
    with connect(settings, autocommit=True) as conn:
        steps = conn.execute(
            """SELECT DISTINCT ON (step) step, status, error FROM meta.etl_run
                WHERE run_id = %s AND step <> 'finish' ORDER BY step, id DESC""",
            (settings.run_id,),
        ).fetchall()
    not_ok = sorted(step for step, state, _ in steps if state != "SUCCESS")
    errors = [f"{step}: {error}" for step, state, error in steps if state != "SUCCESS" and error]
    try:  # a build this run left open (killed, retries exhausted) must not hold the slot
        abandoned = build_slot.abandon_open(settings)
    except psycopg.errors.UndefinedTable:  # init-db never ran
        abandoned = 0
    run_ok = status == SUCCEEDED and not not_ok
    now = now or dt.datetime.now(dt.UTC)
    facts = read_facts(settings, day)
    outcome = evaluate(settings, day, run_ok, facts, now)
    with StepRun(settings, "finish", day) as step:
        step.details = {"workflow_status": status, "steps": len(steps),
                        "steps_not_successful": ",".join(not_ok), "builds_abandoned": abandoned,
                        **outputs(outcome, facts, run_ok, now)}
        _record(settings, day, status, outcome, facts)
        step.details.update(chain_head(settings))  # after run_sla's row: the head seals it too
        step.details["notification"] = notify.run_finished(settings, notify.RunSummary(
            run_id=settings.run_id, logical_date=day, status=status, run_succeeded=run_ok,
            missed=outcome.missed, steps_not_successful=tuple(not_ok), rows_in=facts.rows_in,
            rows_quarantined=facts.rows_quarantined, quarantine_ratio=outcome.quarantine_ratio,
            file_seconds_late=outcome.file_seconds_late, workflow_name=settings.workflow_name,
            namespace=settings.workflow_namespace))
        if not run_ok:
            raise StageError(
                f"run {settings.run_id} for {day} ended {status}"
                + (f"; steps not successful: {', '.join(not_ok)}" if not_ok else "")
                + (f" ({'; '.join(errors)})"[:2000] if errors else "")
            )
    return step
