"""The light front of ``contribflow ingest``: the source file resolved and fingerprinted, and the
ledger (meta.source_file) asked whether it was loaded already — before pandas, pandera or numpy are
imported (~1 s of a process's start-up). A file already loaded, or refused outright (outside the
landing folder, misnamed, empty, not UTF-8, not matching its manifest), is answered here; any other
is handed, with its fingerprint, to contribflow.ingest, which looks the ledger up again under the
raw-writer lock, and commits only if the file did not change while it was read (completion.py).

The ledger's counts add up for every outcome: ``rows_in = rows_loaded + rows_already_in_raw +
rows_rejected + rows_withheld`` (a CHECK of migration 0011). ``rows_loaded`` are the rows this
entry's run inserted into raw, ``rows_already_in_raw`` those raw held already, ``rows_rejected``
those in the quarantine, ``rows_withheld`` the valid rows a REJECTED file did not load.

A re-sent export: a file whose content (sha256) was LOADED for another date (or under another
name). Its rows are not loaded again for this date: they are in raw already, as the arrivals of
the date they were first sent for, and loading them again would make that old state look like a
new arrival of this date (a status that later files changed would come back). It is recorded for
its own date as DUPLICATE, with a warning (meta.data_quality_issue ``resent_file``), or refused
(``CONTRIBFLOW_RESENT_FILE=refuse``: REFUSED, exit 1).
"""

from __future__ import annotations

import codecs
import dataclasses
import datetime as dt
import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from contribflow import completion
from contribflow.audit import StepRun
from contribflow.contract import file_date, file_name
from contribflow.db import connect
from contribflow.errors import FileRefused
from contribflow.settings import Settings

BLOCK = 1 << 20
RESENT_RULE = "resent_file"
EARLIER_SQL = """
SELECT id, outcome, file_name, file_date, run_id, rows_in, rows_rejected FROM meta.source_file
 WHERE sha256 = %s AND outcome IN ('LOADED', 'DUPLICATE') ORDER BY id
"""
_NEWER_FOR_DATE = """
SELECT EXISTS (SELECT FROM meta.source_file s
                WHERE s.file_date = %s AND s.outcome = 'LOADED' AND s.id > %s AND s.sha256 <> %s
                  AND NOT EXISTS (SELECT FROM meta.file_withdrawal w
                                   WHERE w.file_name = s.file_name AND w.run_id = s.run_id))
"""
"""Whether another content was loaded for the date after a given load (and not withdrawn)."""
_LEDGER_SQL = """
INSERT INTO meta.source_file (file_name, sha256, file_date, size_bytes, rows_in, rows_loaded,
                              rows_already_in_raw, rows_rejected, rows_withheld, outcome, detail, run_id)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""
ISSUE_COLUMNS = ("run_id", "source_file", "source_sha256", "source_line", "rule", "column_name",
                 "failing_value", "severity")
ISSUE_IS_NEW = """NOT EXISTS (
    SELECT FROM meta.data_quality_issue d
     WHERE d.source_sha256 = i.source_sha256 AND d.source_file = i.source_file AND d.rule = i.rule
       AND coalesce(d.source_line, 0) = coalesce(i.source_line, 0)
       AND coalesce(d.column_name, '') = coalesce(i.column_name, ''))"""
"""A quality issue is stored once per file content, name, line, rule and column: a re-ingest of a
file (after a rejection, say) finds its issues again and adds none (the index of migration 0011
answers this)."""
_ISSUE_SQL = f"""
INSERT INTO meta.data_quality_issue ({', '.join(ISSUE_COLUMNS)})
SELECT * FROM (VALUES (%s::text, %s::text, %s::text, %s::integer, %s::text, %s::text, %s::text, %s::text))
    AS i ({', '.join(ISSUE_COLUMNS)})
 WHERE {ISSUE_IS_NEW}
"""


@dataclass(frozen=True)
class Counts:
    """What became of a file's rows (see the module's doc); None for a file refused before reading."""

    rows_in: int = 0
    rows_loaded: int = 0
    rows_already_in_raw: int = 0
    rows_rejected: int = 0
    rows_withheld: int = 0


def record(conn: psycopg.Connection, settings: Settings, day: dt.date, name: str, facts: FileFacts,
           counts: Counts | None, outcome: str, detail: str | None) -> None:
    """One row of the ledger."""
    c = counts
    conn.execute(_LEDGER_SQL, (
        name, facts.sha256, day, facts.size_bytes, c and c.rows_in, c and c.rows_loaded,
        c and c.rows_already_in_raw, c and c.rows_rejected, c and c.rows_withheld, outcome, detail,
        settings.run_id))


def record_issue(conn: psycopg.Connection, run_id: str, name: str, sha256: str, line: int | None,
                 rule: str, column: str | None, text: str | None, severity: str) -> None:
    """A quality issue about a whole file (schema drift, volume, a re-send), unless already stored."""
    conn.execute(_ISSUE_SQL, (run_id, name, sha256, line, rule, column, text, severity))


@dataclass(frozen=True)
class Earlier:
    """The load of a file with the same content, as the ledger holds it."""

    file_name: str
    file_date: dt.date
    run_id: str
    rows_in: int
    rows_rejected: int
    recorded: bool
    """Whether this date's re-send of it is already recorded (a DUPLICATE row for this file)."""

    def same_file(self, day: dt.date, name: str) -> bool:
        return (self.file_date, self.file_name) == (day, name)

    @property
    def counts(self) -> Counts:
        """Of its rows: in raw since that load (loaded then, or already there), quarantined then."""
        return Counts(self.rows_in, 0, self.rows_in - self.rows_rejected, self.rows_rejected, 0)


def earlier_load(conn: psycopg.Connection, sha256: str, day: dt.date, name: str) -> Earlier | None:
    """The LOADED ledger row of this content that answers this file, if any: its latest load for
    this date, else its first load for another date (a re-sent export).

    None, so that the file loads, also when this content was loaded for this date but another
    content was loaded for it since: a day's file corrected (v2) and then sent back as it was (v1
    again) is the newest arrival of that date, and its states win again (migration 0012: the ledger
    may hold one content as LOADED more than once; loads never overlap, ingest.RAW_WRITER_LOCK)."""
    rows = conn.execute(EARLIER_SQL, (sha256,)).fetchall()
    loaded = [r for r in rows if r[1] == "LOADED"]
    if not loaded:
        return None
    this_date = [r for r in loaded if r[3] == day]
    if this_date and conn.execute(_NEWER_FOR_DATE, (day, this_date[-1][0], sha256)).fetchone()[0]:
        return None
    _, _, file_name, file_date, run_id, rows_in, rejected = (this_date or loaded)[-1 if this_date else 0]
    recorded = any(r[1] == "DUPLICATE" and (r[3], r[2]) == (day, name) for r in rows)
    return Earlier(file_name, file_date, run_id, rows_in or 0, rejected or 0, recorded)


def resent_detail(name: str, earlier: Earlier) -> str:
    return (f"{name} has the same content (sha256) as {earlier.file_name}, loaded for "
            f"{earlier.file_date} by run {earlier.run_id}: a re-sent export; its rows are not "
            "loaded again for this date")


def answer_earlier(conn: psycopg.Connection, settings: Settings, day: dt.date, name: str,
                   facts: FileFacts, earlier: Earlier) -> None:
    """What an already loaded content means for this date: nothing more for the same file (an
    idempotent re-run); for another date, a DUPLICATE entry and a warning, once, or a refusal
    (FileRefused: the caller records it) under CONTRIBFLOW_RESENT_FILE=refuse."""
    if earlier.same_file(day, name) or earlier.recorded:
        return
    detail = resent_detail(name, earlier)
    if settings.resent_file == "refuse":
        raise FileRefused(f"{detail} (CONTRIBFLOW_RESENT_FILE=refuse)")
    record(conn, settings, day, name, facts, earlier.counts, "DUPLICATE", detail)
    record_issue(conn, settings.run_id, name, facts.sha256, None, RESENT_RULE, None, detail, "warning")


def report_earlier(step: StepRun, day: dt.date, name: str, earlier: Earlier) -> None:
    """A step that loaded nothing because the content was loaded before: its counts say where each
    row is (in raw since, or quarantined when the content was first seen)."""
    counts = earlier.counts
    step.rows_in, step.rows_loaded, step.rows_rejected = counts.rows_in, 0, 0
    step.details = {"rows_already_loaded": counts.rows_already_in_raw,
                    "rows_quarantined_earlier": counts.rows_rejected, "rows_withheld": 0,
                    "quality_issues": 0, "chunks_deduplicated": 0, "already_ingested_by": earlier.run_id}
    if not earlier.same_file(day, name):
        step.details["duplicate_of"] = earlier.file_name
        step.details["duplicate_of_date"] = earlier.file_date.isoformat()


@dataclass(frozen=True)
class FileFacts:
    sha256: str
    size_bytes: int
    problem: str | None = None
    """Why the file is structurally unusable (not UTF-8, empty), found while hashing it."""


def fingerprint(path: Path) -> FileFacts:
    """sha256 and size, checking on the way that the file is non-empty UTF-8 text."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    size = 0
    line = 1
    problem = None
    try:
        with open(path, "rb") as fh:
            while block := fh.read(BLOCK):
                digest.update(block)
                # An ASCII block (most of them) is valid UTF-8 as it stands, when no character
                # started in the block before: isascii() is ~20x faster than decoding it.
                if problem is None and not (block.isascii() and not decoder.getstate()[0]):
                    try:
                        decoder.decode(block)
                    except UnicodeDecodeError as exc:
                        where = line + block[: exc.start].count(b"\n")
                        problem = f"{path.name}: not valid UTF-8 at line {where} (byte {size + exc.start})"
                if problem is None:
                    line += block.count(b"\n")
                size += len(block)
    except OSError as exc:
        raise FileRefused(f"{path.name}: cannot be read: {exc.strerror}") from None
    if problem is None:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            problem = f"{path.name}: not valid UTF-8 (a truncated character at the end of the file)"
    if size == 0:
        problem = f"{path.name}: the file is empty (no header, no rows)"
    return FileFacts(digest.hexdigest(), size, problem)


def resolve_source(settings: Settings, day: dt.date, path: Path) -> Path:
    """``--file``, checked before anything is done: a regular file (not a link, a folder or a FIFO)
    directly in the landing folder, named exactly ``contributions_YYYYMMDD.csv`` for ``day``."""
    landing = settings.landing_dir.resolve()
    given = path if path.is_absolute() else Path.cwd() / path
    if given.name != file_name(day):
        try:
            named_for = file_date(given)
        except ValueError as exc:
            raise FileRefused(f"--file {path}: {exc} (exactly, lower case, the run date's)") from None
        raise FileRefused(f"--file {path}: {given.name} is the file for {named_for}, not for the run date {day}")
    if given.parent.resolve() != landing:
        raise FileRefused(f"--file {path}: outside the landing folder {landing}; refusing to read it")
    try:
        mode = os.stat(given, follow_symlinks=False).st_mode
    except FileNotFoundError:
        raise FileRefused(f"--file {path}: no such file in the landing folder") from None
    except OSError as exc:
        raise FileRefused(f"--file {path}: cannot be looked at: {exc.strerror}") from None
    if stat.S_ISLNK(mode):
        raise FileRefused(f"--file {path}: is a symbolic link; a source file must be a regular file in the "
                          "landing folder (a link could point outside it, or at another day's file)")
    if not stat.S_ISREG(mode):
        raise FileRefused(f"--file {path}: is not a regular file (a folder, FIFO or device)")
    return landing / given.name


def checked_fingerprint(settings: Settings, source: Path) -> tuple[FileFacts, Callable[[int], None]]:
    """The file's fingerprint, with its completion re-checked (contribflow/completion.py): a problem
    when it does not match its manifest, and the check ingest runs once it has read every record
    (``before_commit(rows_in)``): the file unchanged since before the fingerprint (else FileChanged,
    exit 75), and the manifest's row count."""
    before = completion.Signature.of(source)
    facts = fingerprint(source)
    completion.unchanged(source, before, "while ingest took its fingerprint")
    try:
        manifest = completion.for_ingest(settings, source)
    except completion.ManifestInvalid as exc:
        return dataclasses.replace(facts, problem=facts.problem or f"{source.name}: {exc}"), _no_check
    if manifest is not None and facts.problem is None:
        problem = manifest.content_problem(source.name, facts.sha256, facts.size_bytes)
        facts = dataclasses.replace(facts, problem=problem)

    def before_commit(rows_in: int) -> None:
        completion.unchanged(source, before, "while ingest read it")
        problem = manifest.rows_problem(source.name, rows_in) if manifest is not None else None
        if problem:
            raise FileRefused(problem)

    return facts, before_commit


def _no_check(rows_in: int) -> None:
    return None


def run(settings: Settings, day: dt.date, path: Path) -> StepRun:
    """``contribflow ingest``: a known or refused file answered without the data libraries."""
    source = resolve_source(settings, day, path)  # an argument: refused before any work
    with StepRun(settings, "ingest", day) as step:
        step.source_file = path.name
        facts, before_commit = checked_fingerprint(settings, source)
        with connect(settings) as conn:
            if facts.problem:  # as contribflow.ingest records it
                record(conn, settings, day, source.name, facts, None, "REFUSED", facts.problem)
                conn.commit()
                raise FileRefused(facts.problem)
            earlier = earlier_load(conn, facts.sha256, day, source.name)
            if earlier is not None:
                try:
                    answer_earlier(conn, settings, day, source.name, facts, earlier)
                except FileRefused as exc:
                    conn.rollback()
                    record(conn, settings, day, source.name, facts, None, "REFUSED", str(exc))
                    conn.commit()
                    raise
                conn.commit()
        if earlier is not None:
            report_earlier(step, day, source.name, earlier)
            return step
        from contribflow import ingest  # numpy, pandas, pandera: only for a file to load

        ingest.load_into(step, settings, day, source, facts, before_commit)
    return step
