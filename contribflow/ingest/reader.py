"""Reading a source file: its fingerprint, its structure, and its records with their raw text.

Structural problems refuse the whole file before anything is loaded; row problems are left to
validation, so every record comes out with the physical line it starts on and the exact text it had.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from contribflow import contract, redact
from contribflow.contract import COLUMNS
from contribflow.errors import FileRefused

BLOCK = 1 << 20
MAX_FIELD_BYTES = 16 << 20
BOM = "\ufeff"
_FATAL_CSV_ERRORS = ("field larger than field limit", "unexpected end of data")
csv.field_size_limit(MAX_FIELD_BYTES)


@dataclass(frozen=True)
class Record:
    line: int
    raw: str
    fields: list[str]
    syntax_error: str | None = None
    """Set when the record is not valid CSV; it is quarantined with this reason."""


def read_header(reader: Iterator[list[str]], name: str, keep_extra: bool = False,
                source: contract.Contract = contract.BASE) -> list[str]:
    """The header, checked against the contract: every column present once; an extra column is
    refused unless ``keep_extra`` (the schema-drift policy ``keep``).

    A refusal names the columns it misses; it quotes an unexpected name only when the line is not
    a data row (a file without a header starts with one, and its values may be taxpayer ids) and
    the name looks like a column name (contribflow/redact.py); any other is described."""
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
    data = bool(missing) and redact.header_looks_like_data(header, source)
    if data:
        problems.append(f"the first line looks like a data row, not a header ({len(header)} values)")
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if extra and not keep_extra and not data:
        problems.append("unexpected column(s) " + ", ".join(
            redact.header_name(h, source, i + 1) for i, h in enumerate(header) if h not in COLUMNS))
    if "" in header:
        problems.append("a column without a name")
    if duplicated and not data:
        problems.append("repeated column(s) " + ", ".join(
            h if h in COLUMNS else redact.header_name(h, source, header.index(h) + 1) for h in duplicated))
    if problems:
        raise FileRefused(
            f"{name}: header does not match the source contract: {'; '.join(problems)} "
            f"(expected {','.join(COLUMNS)})"
        )
    return header


class _Lines:
    """Physical lines of an open file, remembering those read since the last record ended."""

    def __init__(self, source: Iterable[str]) -> None:
        self._source = iter(source)
        self.pending: list[str] = []
        self.count = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        text = next(self._source)
        self.pending.append(text)
        self.count += 1
        return text


def _parse(lines: _Lines, first_line: int, name: str, limit: int | None = None) -> Iterator[Record]:
    """The exact path: ``csv.reader`` over physical lines, each record with its line and raw text.

    Stops at the first record boundary once ``limit`` lines have been read (a record that started
    before it is finished, however many lines it takes). Blank lines are not records. An unbalanced
    quote that reaches the end of the file refuses the whole file.
    """
    reader = csv.reader(lines, strict=True)
    start = first_line
    while limit is None or lines.count < limit:
        try:
            fields = next(reader)
            error = None
        except StopIteration:
            return
        except csv.Error as exc:
            if any(fatal in str(exc) for fatal in _FATAL_CSV_ERRORS):
                raise FileRefused(
                    f"{name}: line {start}: {exc} (an unbalanced quote swallows the rest "
                    "of the file); the file is refused, nothing of it is loaded"
                ) from None
            fields, error = [], str(exc)
        raw = "".join(lines.pending)
        line, start = start, start + len(lines.pending)
        lines.pending.clear()
        if fields or error:
            yield Record(line, raw, fields, error)


def _open(path: Path, keep_extra: bool = False,
          source: contract.Contract = contract.BASE) -> tuple[TextIO, list[str], int]:
    """The file positioned after its header, the header, and the number of the first data line."""
    fh = open(path, encoding="utf-8", newline="")
    try:
        lines = _Lines(fh)
        header = read_header(csv.reader(lines, strict=True), path.name, keep_extra, source)
        return fh, header, lines.count + 1
    except BaseException:
        fh.close()
        raise


def records(path: Path) -> tuple[list[str], Iterator[Record]]:
    """The header and an iterator over the data records (in constant memory)."""
    fh, header, first_line = _open(path)

    def iterate() -> Iterator[Record]:
        with fh:
            yield from _parse(_Lines(fh), first_line, path.name)

    return header, iterate()


@dataclass
class Chunk:
    """The records of about ``size`` consecutive physical lines, split into columns.

    ``lines`` and ``fields`` hold the records that have the header's number of fields (one array
    per header column, aligned with ``lines``: of ``str`` objects, or a pandas Categorical for a
    ``REPEATING`` column of a plain block); ``broken`` holds the others: not valid CSV, or too few
    or too many fields. ``raw(line)`` is the exact text of the record starting on ``line``.
    """

    records: int
    lines: np.ndarray
    fields: list[np.ndarray | pd.Categorical]
    broken: list[Record]
    raw: Callable[[int], str]
    plain: list[str] | None = None
    """For a plain block, its physical lines (the one of line ``n`` is ``plain[n - first_line]``):
    each line is exactly its fields joined by commas."""
    first_line: int = 0
    may_have_empty: bool = True
    """False when no field of ``fields`` is the empty string (known for a plain block)."""


REPEATING = ("event_date", "currency", "contribution_type", "status", "country")
"""Columns with a few dozen distinct values in a day's file. A plain block reads them as pandas
categoricals: one Python string per distinct value instead of one per row, and validation judges
each distinct value once."""

_NOT_PLAIN = ('"', "\r", "\x00", "\\")
"""A block with none of these is plain: each line is one record (or blank), split at every comma,
exactly as csv.reader would split it, and loaded as it is by a text COPY with a comma delimiter
(where a backslash would be an escape: an identifier may hold one, so its block takes the exact
path, whose values are escaped)."""


def _columns(grid: np.ndarray) -> list[np.ndarray]:
    return [np.ascontiguousarray(grid[:, j]) for j in range(grid.shape[1])]


def _plain_chunk(block: list[str], text: str, first_line: int, width: int,
                 categorical: frozenset[int] = frozenset()) -> Chunk:
    """The fast path: one split of the whole block instead of a csv.reader call per line."""
    commas = np.fromiter(map(str.count, block, itertools.repeat(",")), dtype=np.int64, count=len(block))
    blank = np.fromiter(map("\n".__eq__, block), dtype=bool, count=len(block))
    shaped = (commas == width - 1) & ~blank
    positions = np.flatnonzero(shaped)
    if len(positions) != len(block):
        text = "".join([block[i] for i in positions])
    if text and not text.endswith("\n"):
        text += "\n"
    empty = text.startswith(",") or ",," in text or ",\n" in text or "\n," in text
    fields = _split_plain(text, width, categorical)
    del text
    broken = [Record(first_line + int(i), block[i], block[i].removesuffix("\n").split(","))
              for i in np.flatnonzero(~shaped & ~blank)]
    return Chunk(len(block) - int(blank.sum()), positions + first_line, fields, broken,
                 lambda line: block[line - first_line], block, first_line, empty)


def _split_plain(text: str, width: int, categorical: frozenset[int] = frozenset()
                 ) -> list[np.ndarray | pd.Categorical]:
    """The fields of plain lines of ``width`` fields each, by pandas' C tokenizer: with no quote, CR
    or NUL in the text and quoting off, it splits at every comma and newline exactly as
    csv.reader would, and keeps every value as the text it is. The columns at the positions in
    ``categorical`` come as Categoricals of those texts."""
    if not text:
        return [np.empty(0, dtype=object) for _ in range(width)]
    frame = pd.read_csv(io.BytesIO(text.encode()), header=None, names=range(width),
                        dtype={j: "category" if j in categorical else object for j in range(width)},
                        na_filter=False, quoting=csv.QUOTE_NONE, skip_blank_lines=False, engine="c")
    if not all(pd.api.types.is_string_dtype(frame[j].cat.categories) for j in categorical):
        # read_csv turns a categorical column whose every value reads as a number or a boolean
        # into numbers or booleans ("02" would come back as 2): read such a block as text.
        return _split_plain(text, width)
    return [frame[j].array if j in categorical else frame[j].to_numpy(dtype=object)
            for j in range(width)]


def _exact_chunk(lines: _Lines, first_line: int, block_size: int, width: int, name: str) -> Chunk:
    """The exact path, for a block with quotes, CR or NUL: a record may run past the block."""
    shaped: list[Record] = []
    broken: list[Record] = []
    for record in _parse(lines, first_line, name, limit=block_size):
        (shaped if record.syntax_error is None and len(record.fields) == width else broken).append(record)
    grid = np.empty((len(shaped), width), dtype=object)
    for i, record in enumerate(shaped):
        grid[i] = record.fields
    raw = {r.line: r.raw for r in shaped}
    raw.update((r.line, r.raw) for r in broken)
    return Chunk(len(shaped) + len(broken), np.array([r.line for r in shaped], dtype=np.int64),
                 _columns(grid), broken, raw.__getitem__)


def chunks(path: Path, size: int, first: int | None = None, keep_extra: bool = False,
           source: contract.Contract = contract.BASE) -> tuple[list[str], Generator[Chunk, None, None]]:
    """The header and the data records in chunks of about ``size`` physical lines (the first of
    about ``first``, when given), in constant memory.

    A block of lines with no quote, CR or NUL (the usual file) is split in one go; any other block
    goes through csv.reader line by line, which keeps exact line numbers and raw text across quoted
    newlines. Both paths give the same records (tests/test_units.py proves it).
    """
    fh, header, first_line = _open(path, keep_extra, source)
    width = len(header)
    categorical = frozenset(header.index(c) for c in REPEATING)

    def iterate() -> Generator[Chunk, None, None]:
        line = first_line
        sizes = itertools.chain([first or size], itertools.repeat(size))
        with fh:
            while block := list(itertools.islice(fh, next(sizes))):
                text = "".join(block)
                if any(c in text for c in _NOT_PLAIN) or max(map(len, block)) > MAX_FIELD_BYTES:
                    del text
                    lines = _Lines(itertools.chain(block, fh))
                    chunk = _exact_chunk(lines, line, len(block), width, path.name)
                    line += lines.count
                else:
                    chunk = _plain_chunk(block, text, line, width, categorical)
                    line += len(block)
                    del text
                del block
                yield chunk

    return header, iterate()
