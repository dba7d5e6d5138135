"""ingest: one source file into raw, row by row validated, bad rows quarantined, all or nothing.

The whole file is one transaction: a crash or a refusal leaves no partial rows and no ledger entry.
Good rows go to ``raw.contributions`` with COPY; the table's unique record hash makes a row that is
already there (a re-sent declaration in the same state) a no-op. COPY is tried first, because a new
file rarely repeats old rows; a chunk that hits the unique index is retried through a temporary
table with ``ON CONFLICT DO NOTHING``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg

from contribflow.audit import StepRun
from contribflow.contract import COLUMNS, file_date
from contribflow.db import connect
from contribflow.errors import FileRefused, StageError
from contribflow.pseudonym import Pseudonymiser
from contribflow.reader import FileFacts, Record, fingerprint, records
from contribflow.settings import Settings
from contribflow.validate import Issue, validate_chunk

RAW_WRITER_LOCK = "contribflow:raw-writer"
"""Held exclusively by an ingest and shared by the fct model's build (see fct_contributions.sql):
loads never overlap, and the incremental model never reads while a load is uncommitted, so the
ingestion_ts watermark it advances can never skip rows that commit late."""

RAW_COLUMNS = (
    "declaration_id", "taxpayer_id", "taxpayer_key", "event_date", "amount", "currency",
    "contribution_type", "status", "country", "file_date", "source_file", "source_line", "run_id",
)
_COPY_RAW = f"COPY {{table}} ({', '.join(RAW_COLUMNS)}) FROM STDIN"
_QUARANTINE_COLUMNS = (
    "source_sha256", "source_line", "source_file", "file_date", "raw_line", "reasons", "run_id",
)
_ISSUE_COLUMNS = (
    "run_id", "source_file", "source_sha256", "source_line", "rule", "column_name", "failing_value",
)


@dataclass
class Outcome:
    rows_in: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    issues: int = 0
    already_ingested_by: str | None = None
    chunks_deduplicated: int = 0

    @property
    def rows_already_loaded(self) -> int:
        return self.rows_in - self.rows_loaded - self.rows_rejected


@dataclass
class SeenKeys:
    """Declaration ids seen earlier in this file, as sorted 64-bit hashes (8 bytes an id)."""

    hashes: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))

    def mark(self, ids: pd.Series) -> np.ndarray:
        present = ids.notna().to_numpy()
        h = pd.util.hash_array(ids.fillna("").to_numpy(dtype=object))
        repeated = pd.Series(h).duplicated().to_numpy()
        pos = np.searchsorted(self.hashes, h)
        earlier = np.zeros(len(h), dtype=bool)
        if len(self.hashes):
            earlier = self.hashes[np.minimum(pos, len(self.hashes) - 1)] == h
        new = np.unique(h[present])
        self.hashes = np.sort(np.concatenate([self.hashes, new]), kind="stable")
        return present & (repeated | earlier)


def _escape(value: str) -> str:
    """COPY text format escaping, for values not already constrained by validation."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _printable(text: str) -> str:
    """PostgreSQL text cannot hold NUL: keep it visible instead of losing the row."""
    return text.replace("\x00", "\\x00")


def resolve_source(settings: Settings, day: dt.date, path: Path) -> Path:
    """The file, checked to be a regular file inside the landing folder and named for ``day``."""
    landing = settings.landing_dir.resolve()
    target = (path if path.is_absolute() else Path.cwd() / path).resolve()
    if not target.is_relative_to(landing):
        raise FileRefused(f"{path}: outside the landing folder {landing}; refusing to read it")
    if not target.is_file():
        raise FileRefused(f"{path}: no such file in the landing folder")
    try:
        named_for = file_date(target)
    except ValueError as exc:
        raise FileRefused(str(exc)) from None
    if named_for != day:
        raise FileRefused(f"{target.name} is the file for {named_for}, not for the run date {day}")
    return target


def _chunks(items: Iterator[Record], size: int) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Load:
    """The state of one file's load inside its transaction."""

    def __init__(self, conn: psycopg.Connection, settings: Settings, day: dt.date,
                 path: Path, facts: FileFacts) -> None:
        self.conn = conn
        self.settings = settings
        self.day = day
        self.name = path.name
        self.facts = facts
        self.pseudonyms = Pseudonymiser(settings.require_pseudonym_key())
        self.seen = SeenKeys()
        self.outcome = Outcome()
        self.optimistic = True
        self.suffix = "\t".join(["", day.isoformat(), _escape(self.name)])
        self.run_tail = f"\t{_escape(settings.run_id)}"
        conn.execute(
            f"CREATE TEMP TABLE incoming_rows ON COMMIT DROP AS "
            f"SELECT {', '.join(RAW_COLUMNS)} FROM raw.contributions WITH NO DATA"
        )
        conn.execute(
            "CREATE TEMP TABLE incoming_quarantine ON COMMIT DROP AS "
            "SELECT * FROM raw.contributions_quarantine WITH NO DATA"
        )

    def chunk(self, batch: list[Record], width: int, header: list[str]) -> None:
        self.outcome.rows_in += len(batch)
        bad: dict[int, tuple[Record, list[Issue]]] = {}
        shaped: list[Record] = []
        for rec in batch:
            if rec.syntax_error:
                bad[rec.line] = (rec, [Issue("csv_syntax", None, rec.syntax_error)])
            elif len(rec.fields) != width:
                bad[rec.line] = (rec, [Issue("field_count", None, f"{len(rec.fields)} fields, expected {width}")])
            else:
                shaped.append(rec)
        if shaped:
            frame = pd.DataFrame([r.fields for r in shaped], columns=header,
                                 index=[r.line for r in shaped])[list(COLUMNS)]
            frame = frame.mask(frame.eq(""))
            issues = validate_chunk(frame, self.seen.mark(frame["declaration_id"]))
            by_line = {r.line: r for r in shaped}
            for line, found in issues.items():
                bad[line] = (by_line[line], found)
            good = frame.drop(index=list(issues)) if issues else frame
            if len(good):
                self.outcome.rows_loaded += self._copy_good(good)
        if bad:
            self._quarantine(bad)

    def _copy_good(self, good: pd.DataFrame) -> int:
        ids = good["taxpayer_id"]
        keys = ids.map({t: self.pseudonyms.key_of(t) for t in pd.unique(ids)})
        lines = pd.Series(good.index.astype(str), index=good.index)
        text = good["declaration_id"].str.cat(
            [ids, keys, good["event_date"], good["amount"], good["currency"],
             good["contribution_type"], good["status"], good["country"]], sep="\t",
        ) + self.suffix + "\t" + lines + self.run_tail
        payload = "\n".join(text.tolist()) + "\n"
        if self.optimistic:
            try:
                with self.conn.transaction(), self.conn.cursor().copy(
                    _COPY_RAW.format(table="raw.contributions")
                ) as copy:
                    copy.write(payload)
                return len(good)
            except psycopg.errors.UniqueViolation:
                self.optimistic = False
        self.outcome.chunks_deduplicated += 1
        self.conn.execute("TRUNCATE incoming_rows")
        with self.conn.cursor().copy(_COPY_RAW.format(table="incoming_rows")) as copy:
            copy.write(payload)
        inserted = self.conn.execute(
            f"INSERT INTO raw.contributions ({', '.join(RAW_COLUMNS)}) "
            f"SELECT {', '.join(RAW_COLUMNS)} FROM incoming_rows ON CONFLICT DO NOTHING"
        ).rowcount
        self.optimistic = inserted == len(good)
        return inserted

    def _quarantine(self, bad: dict[int, tuple[Record, list[Issue]]]) -> None:
        run_id, sha = self.settings.run_id, self.facts.sha256
        cur = self.conn.cursor()
        with cur.copy(f"COPY incoming_quarantine ({', '.join(_QUARANTINE_COLUMNS)}) FROM STDIN") as copy:
            for line, (rec, found) in bad.items():
                reasons = [
                    f"{i.column}: {i.rule}" + (f" ({_printable(i.value)[:200]!r})" if i.value is not None else "")
                    if i.column else f"{i.rule}: {_printable(i.value or '')[:200]}"
                    for i in found
                ]
                copy.write_row((sha, line, self.name, self.day, _printable(rec.raw), reasons, run_id))
        with cur.copy(f"COPY meta.data_quality_issue ({', '.join(_ISSUE_COLUMNS)}) FROM STDIN") as copy:
            for line, (_, found) in bad.items():
                for i in found:
                    value = None if i.value is None else _printable(i.value)[:1000]
                    copy.write_row((run_id, self.name, sha, line, i.rule, i.column, value))
                    self.outcome.issues += 1
        self.outcome.rows_rejected += len(bad)

    def finish(self) -> None:
        columns = ", ".join(_QUARANTINE_COLUMNS)
        self.conn.execute(
            f"INSERT INTO raw.contributions_quarantine ({columns}) SELECT {columns} "
            f"FROM incoming_quarantine ON CONFLICT (source_sha256, source_line) DO NOTHING"
        )


def _ledger(conn: psycopg.Connection, settings: Settings, day: dt.date, name: str,
            facts: FileFacts, outcome: Outcome | None, result: str, detail: str | None) -> None:
    conn.execute(
        """INSERT INTO meta.source_file (file_name, sha256, file_date, size_bytes, rows_in,
                                         rows_loaded, rows_rejected, outcome, detail, run_id)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (name, facts.sha256, day, facts.size_bytes,
         outcome.rows_in if outcome else None, outcome.rows_loaded if outcome else None,
         outcome.rows_rejected if outcome else None, result, detail, settings.run_id),
    )


def ingest_file(settings: Settings, day: dt.date, path: Path, conn: psycopg.Connection) -> Outcome:
    facts = fingerprint(path)
    try:
        if facts.problem:
            raise FileRefused(facts.problem)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (RAW_WRITER_LOCK,))
            previous = conn.execute(
                "SELECT run_id, rows_in FROM meta.source_file WHERE sha256 = %s AND outcome = 'LOADED'",
                (facts.sha256,),
            ).fetchone()
            if previous:
                return Outcome(rows_in=previous[1] or 0, rows_loaded=0,
                               already_ingested_by=previous[0])
            header, stream = records(path)
            load = _Load(conn, settings, day, path, facts)
            for batch in _chunks(stream, settings.chunk_rows):
                load.chunk(batch, len(header), header)
            load.finish()
            outcome = load.outcome
            if outcome.rows_in == 0:
                raise FileRefused(f"{path.name}: header only, no data rows")
            share = outcome.rows_rejected / outcome.rows_in
            if share > settings.reject_threshold:
                # Only this transaction's own, never-committed rows: raw stays append-only.
                conn.execute(
                    "DELETE FROM raw.contributions WHERE run_id = %s AND source_file = %s "
                    "AND ingestion_ts >= now()",
                    (settings.run_id, path.name),
                )
                detail = (f"{outcome.rows_rejected} of {outcome.rows_in} rows rejected "
                          f"({share:.1%} > threshold {settings.reject_threshold:.1%})")
                _ledger(conn, settings, day, path.name, facts, outcome, "REJECTED", detail)
                outcome.rows_loaded = 0
                return outcome
            _ledger(conn, settings, day, path.name, facts, outcome, "LOADED", None)
            return outcome
    except FileRefused as exc:
        with conn.transaction():
            _ledger(conn, settings, day, path.name, facts, None, "REFUSED", str(exc))
        raise


def run(settings: Settings, day: dt.date, path: Path) -> StepRun:
    with StepRun(settings, "ingest", day) as step:
        step.source_file = path.name
        source = resolve_source(settings, day, path)
        with connect(settings) as conn:
            outcome = ingest_file(settings, day, source, conn)
        step.rows_in, step.rows_loaded, step.rows_rejected = (
            outcome.rows_in, outcome.rows_loaded, outcome.rows_rejected)
        step.details = {
            "rows_already_loaded": outcome.rows_already_loaded if not outcome.already_ingested_by else outcome.rows_in,
            "quality_issues": outcome.issues,
            "chunks_deduplicated": outcome.chunks_deduplicated,
        }
        if outcome.already_ingested_by:
            step.details["already_ingested_by"] = outcome.already_ingested_by
        if outcome.rows_in and outcome.rows_rejected / outcome.rows_in > settings.reject_threshold:
            raise StageError(
                f"{path.name}: {outcome.rows_rejected} of {outcome.rows_in} rows failed validation "
                f"({outcome.rows_rejected / outcome.rows_in:.1%}, threshold "
                f"{settings.reject_threshold:.1%}); nothing loaded, the rows are in "
                "raw.contributions_quarantine and meta.data_quality_issue"
            )
    return step
