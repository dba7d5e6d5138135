"""The source file, before anything reads its rows: ``--file`` resolved and checked (in the landing
folder, named for the run date, a regular file), its fingerprint (sha256, size, UTF-8) and its
completion re-checked against the source's own signal (contribflow/ingest/completion.py)."""

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

from contribflow.contract import file_date, file_name
from contribflow.errors import FileRefused
from contribflow.ingest import completion
from contribflow.settings import Settings

BLOCK = 1 << 20


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
    """The file's fingerprint, with its completion re-checked (contribflow/ingest/completion.py): a problem
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
