"""The light front of ``contribflow ingest``: the source file resolved and fingerprinted, and the
ledger (meta.source_file) asked whether it was loaded already — before pandas, pandera or numpy are
imported (~1 s of a process's start-up). A file already loaded, or refused outright (outside the
landing folder, misnamed, empty, not UTF-8, not matching its manifest), is answered here; any other
is handed, with its fingerprint, to contribflow.ingest, which looks the ledger up again under the
raw-writer lock, and commits only if the file did not change while it was read (completion.py).
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

from contribflow import completion
from contribflow.audit import StepRun
from contribflow.contract import file_date, file_name
from contribflow.db import connect
from contribflow.errors import FileRefused
from contribflow.settings import Settings

BLOCK = 1 << 20
LOADED_SQL = "SELECT run_id, rows_in FROM meta.source_file WHERE sha256 = %s AND outcome = 'LOADED'"


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
                conn.execute(
                    """INSERT INTO meta.source_file (file_name, sha256, file_date, size_bytes, outcome, detail, run_id)
                       VALUES (%s, %s, %s, %s, 'REFUSED', %s, %s)""",
                    (source.name, facts.sha256, day, facts.size_bytes, facts.problem, settings.run_id))
                conn.commit()
                raise FileRefused(facts.problem)
            previous = conn.execute(LOADED_SQL, (facts.sha256,)).fetchone()
        if previous:
            step.rows_in, step.rows_loaded, step.rows_rejected = previous[1] or 0, 0, 0
            step.details = {"rows_already_loaded": step.rows_in, "quality_issues": 0,
                            "chunks_deduplicated": 0, "already_ingested_by": previous[0]}
            return step
        from contribflow import ingest  # numpy, pandas, pandera: only for a file to load

        ingest.load_into(step, settings, day, source, facts, before_commit)
    return step
