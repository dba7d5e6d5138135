"""Reading a source file: its fingerprint, its structure, and its records with their raw text.

Structural problems refuse the whole file before anything is loaded; row problems are left to
validation, so every record comes out with the physical line it starts on and the exact text it had.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from contribflow.contract import COLUMNS
from contribflow.errors import FileRefused

BLOCK = 1 << 20
MAX_FIELD_BYTES = 16 << 20
BOM = "\ufeff"
_FATAL_CSV_ERRORS = ("field larger than field limit", "unexpected end of data")
csv.field_size_limit(MAX_FIELD_BYTES)


@dataclass(frozen=True)
class FileFacts:
    sha256: str
    size_bytes: int
    problem: str | None = None
    """Why the file is structurally unusable (not UTF-8, empty), found while hashing it."""


@dataclass(frozen=True)
class Record:
    line: int
    raw: str
    fields: list[str]
    syntax_error: str | None = None
    """Set when the record is not valid CSV; it is quarantined with this reason."""


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
                if problem is None:
                    try:
                        decoder.decode(block)
                    except UnicodeDecodeError as exc:
                        where = line + block[: exc.start].count(b"\n")
                        problem = f"{path.name}: not valid UTF-8 at line {where} (byte {size + exc.start})"
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


def read_header(reader: Iterator[list[str]], name: str) -> list[str]:
    try:
        header = next(reader)
    except StopIteration:
        raise FileRefused(f"{name}: the file is empty (no header, no rows)") from None
    except csv.Error as exc:
        raise FileRefused(f"{name}: the header line is not CSV: {exc}") from None
    if header and header[0].startswith(BOM):
        header[0] = header[0][len(BOM):]
    header = [h.strip() for h in header]
    missing = [c for c in COLUMNS if c not in header]
    extra = [h for h in header if h not in COLUMNS]
    duplicated = sorted({h for h in header if header.count(h) > 1})
    problems = []
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected column(s) {', '.join(repr(e) for e in extra)}")
    if duplicated:
        problems.append(f"repeated column(s) {', '.join(duplicated)}")
    if problems:
        raise FileRefused(
            f"{name}: header does not match the source contract: {'; '.join(problems)} "
            f"(expected {','.join(COLUMNS)})"
        )
    return header


def records(path: Path) -> tuple[list[str], Iterator[Record]]:
    """The header and an iterator over the data records (in constant memory)."""
    fh = open(path, encoding="utf-8", newline="")
    pending: list[str] = []

    def lines() -> Iterator[str]:
        for text in fh:
            pending.append(text)
            yield text

    reader = csv.reader(lines(), strict=True)
    try:
        header = read_header(reader, path.name)
    except BaseException:
        fh.close()
        raise

    def iterate() -> Iterator[Record]:
        start = reader.line_num + 1
        try:
            while True:
                try:
                    fields = next(reader)
                    error = None
                except StopIteration:
                    return
                except csv.Error as exc:
                    if any(fatal in str(exc) for fatal in _FATAL_CSV_ERRORS):
                        raise FileRefused(
                            f"{path.name}: line {start}: {exc} (an unbalanced quote swallows the rest "
                            "of the file); the file is refused, nothing of it is loaded"
                        ) from None
                    fields, error = [], str(exc)
                raw = "".join(pending)
                pending.clear()
                if fields or error:
                    yield Record(start, raw, fields, error)
                start = reader.line_num + 1
        finally:
            fh.close()

    pending.clear()
    return header, iterate()
