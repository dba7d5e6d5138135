"""ingest: one source file into raw, row by row validated, bad rows quarantined, all or nothing.

The whole file is one transaction: a crash or a refusal leaves no partial rows and no ledger entry.
Good rows go to ``raw.contributions`` with COPY, each chunk in the order of the table's unique
index, ``(declaration_id, file_date, record_hash, revision)`` (recordhash.load_order; migration
0010). COPY is tried first, because a new file rarely repeats old rows; a chunk that hits the
unique index (a state this file date already holds) goes through a temporary table instead, where
each row is decided against raw: a state equal to the latest one of its declaration for this file
date is a no-op (a re-sent file, the same rows twice on one day), any other is inserted, with the
next revision when the same state was already there for this date (file v1 DUE, v2 PAID, v3 DUE).
Bad rows are written in batches.

The usual chunk (plain lines in contract order) is hashed, keyed and encoded as a binary COPY by
the compiled encoder (_copyrows.c); any other, or every chunk where it was not built, as a text
COPY in Python, which loads the same rows.

What the source contract leaves open is decided here, in one place: an extra column is refused or
its values kept per row (``CONTRIBFLOW_SCHEMA_DRIFT``), a header-only file is a quiet day that
loads nothing, and each day's row count is compared with the trailing median (volume.py).

Row-level problems stay row-level. Validation admits only values raw can store; should a chunk
still fail to store (a data error of PostgreSQL, a row the compiled encoder refuses), the safety
net (``_Load._salvage``) finds the rows that cannot be stored, quarantines each with the rule
``not_storable`` and the database's message without the value, and loads the others. It costs
the usual path nothing: a chunk keeps references to its rows until it is loaded, and only a
failure reads them again. Failing values are written to the quarantine's reasons and to
meta.data_quality_issue only as contribflow/redact.py allows (never a raw taxpayer id).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import gc
import importlib
import itertools
import json
import os
import queue
import socket
import struct
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import psycopg

from contribflow import logs, redact
from contribflow.contract import COLUMNS
from contribflow.db import connect
from contribflow.errors import FileRefused, StageError
from contribflow.ingest import ledger
from contribflow.ingest.pseudonym import Pseudonymiser
from contribflow.ingest.reader import Chunk, chunks
from contribflow.ingest.recordhash import digests, load_order
from contribflow.ingest.seenkeys import SeenKeys
from contribflow.ingest.source import FileFacts, fingerprint
from contribflow.ingest.validate import Issue, frame_of, validate_chunk
from contribflow.ingest.volume import RULE as VOLUME_RULE
from contribflow.ingest.volume import VolumeCheck, check_volume
from contribflow.settings import Settings
from contribflow.step import StepRun

try:
    _copyrows: Any = importlib.import_module("contribflow.ingest._copyrows")
except ImportError:  # built only where a C compiler was found (setup.py); the same rows in Python
    _copyrows = None

T = TypeVar("T")
U = TypeVar("U")

RAW_WRITER_LOCK = "contribflow:raw-writer"
"""Held exclusively by an ingest and shared by the fct model's build (see fct_contributions.sql):
loads never overlap, and the incremental model never reads while a load is uncommitted, so the
ingestion_ts watermark it advances can never skip rows that commit late."""

RAW_COLUMNS = (
    "declaration_id", "taxpayer_id", "taxpayer_key", "event_date", "amount", "currency",
    "contribution_type", "status", "country", "file_date", "source_file", "source_line", "run_id",
    "record_hash", "extra",
)
_COPY_RAW = f"COPY {{table}} ({', '.join(RAW_COLUMNS)}) FROM STDIN"
_ADDED_COLUMNS = ("record_hash", "taxpayer_key", "source_line", "file_date", "source_file", "run_id")
"""What ingest adds in front of a plain line, which is then loaded as it is (comma-delimited)."""
_INSERT_NEW_STATES = f"""
WITH incoming AS (
    SELECT i.*, latest.record_hash AS latest_hash, latest.revision AS latest_revision,
           latest.source_file AS latest_file, latest.run_id AS latest_run
      FROM incoming_rows i
      LEFT JOIN LATERAL (
            SELECT r.record_hash, r.revision, r.source_file, r.run_id FROM raw.contributions r
             WHERE r.declaration_id = i.declaration_id AND r.file_date = i.file_date
               AND NOT EXISTS (SELECT FROM meta.file_withdrawal w
                                WHERE w.file_name = r.source_file AND w.run_id = r.run_id)
             ORDER BY r.ingestion_ts DESC, r.source_line DESC, r.revision DESC LIMIT 1) latest ON true
), restated AS (
    INSERT INTO raw.contributions_restated (declaration_id, file_date, record_hash, revision, source_file,
                                            source_line, run_id)
    SELECT declaration_id, file_date, record_hash, latest_revision, source_file, source_line, run_id
      FROM incoming
     WHERE latest_hash = record_hash AND (latest_file, latest_run) IS DISTINCT FROM (source_file, run_id)
    ON CONFLICT DO NOTHING
)
INSERT INTO raw.contributions ({', '.join(RAW_COLUMNS)}, revision)
SELECT {', '.join('i.' + c for c in RAW_COLUMNS)}, coalesce(same.revision + 1, 0)
  FROM incoming i
  LEFT JOIN LATERAL (
        SELECT max(r.revision) AS revision FROM raw.contributions r
         WHERE r.declaration_id = i.declaration_id AND r.file_date = i.file_date
           AND r.record_hash = i.record_hash) same ON true
 WHERE i.latest_hash IS DISTINCT FROM i.record_hash
"""
"""The slow path's insert (migration 0010): each incoming row against the states its declaration
already has for the file's date, found through raw's unique index. The latest of them (the latest
arrival; a withdrawn file's rows do not count, so a corrected re-send of a withdrawn file loads)
equal to the row: not stored again, but recorded as restated by this file (raw.contributions_restated,
migration 0012), which the marts then name as the latest file that mentioned the declaration, and
which keeps the state if the earlier file is withdrawn. Otherwise the row is a new arrival: revision
0 if this state was never there for this date, else one more than its greatest revision, so that a
state present at all has its revision 0 and a fast-path COPY repeating it always hits the index.
Declarations are unique within a file, and loads never overlap (RAW_WRITER_LOCK), so no two rows
here compete. The statement's row count is the rows inserted into raw.contributions."""
_QUARANTINE_COLUMNS = (
    "source_sha256", "source_line", "source_file", "file_date", "raw_line", "reasons", "run_id",
)
_ISSUE_COLUMNS = ledger.ISSUE_COLUMNS
SCHEMA_DRIFT = "schema_drift"
NOT_STORABLE = "not_storable"
SALVAGE = "salvage"
"""The COPY statement of a chunk the encoder could not encode: it goes straight to the safety net."""
STORAGE_ERRORS = (psycopg.errors.DataError, psycopg.errors.ProgramLimitExceeded, psycopg.errors.IntegrityError)
"""What a COPY of validated rows may still meet: a value the column's type refuses (class 22), an
index entry too large (54000), a constraint (class 23; a unique violation is taken apart first)."""
log = logs.get("ingest")


@dataclass
class Outcome:
    """What became of a file's rows: ``rows_in = rows_loaded + rows_already_in_raw + rows_rejected
    + rows_withheld``, each counted where it happens (ledger.Counts)."""

    rows_in: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    rows_already_in_raw: int = 0
    """Valid rows raw held already (a unique-index no-op), counted as each chunk is stored."""
    rows_withheld: int = 0
    """Valid rows of a REJECTED file: not loaded."""
    rows_not_storable: int = 0
    """Of rows_rejected: the rows the safety net quarantined (``not_storable``)."""
    issues: int = 0
    earlier: ledger.Earlier | None = None
    """The load of the same content, when this file was loaded before (nothing loaded now)."""
    chunks_deduplicated: int = 0
    extra_columns: tuple[str, ...] = ()
    """Columns outside the contract whose values were kept (schema drift, policy ``keep``)."""
    extra_shown: tuple[str, ...] = ()
    """Those columns as meta may name them (redact.header_name)."""
    volume: VolumeCheck | None = None
    refusal: str | None = None
    """Why the file was REJECTED whole after it was read (nothing of it loaded)."""

    @property
    def counts(self) -> ledger.Counts:
        return ledger.Counts(self.rows_in, self.rows_loaded, self.rows_already_in_raw,
                             self.rows_rejected, self.rows_withheld)


def _escape(value: str, delimiter: str = "\t") -> str:
    """COPY text format escaping, for values not already constrained by validation."""
    value = value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value if delimiter == "\t" else value.replace(delimiter, "\\" + delimiter)


_BINARY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
"""The header of COPY's binary format: signature, flags, no header extension."""
_BINARY_TRAILER = struct.pack(">h", -1)
_POSTGRES_EPOCH = dt.date(2000, 1, 1)


def _binary_text(value: str) -> bytes:
    data = value.encode()
    return struct.pack(">i", len(data)) + data


def _copy_text(values: list[str]) -> list[str]:
    """Identifiers for a text COPY: validation refuses control characters in them, but a backslash
    is a character like any other and must be doubled."""
    return [v.replace("\\", "\\\\") for v in values] if "\\" in "".join(values) else values


def _printable(text: str) -> str:
    """PostgreSQL text cannot hold NUL: keep it visible instead of losing the row."""
    return text.replace("\x00", "\\x00")


Rejected = tuple[int, str, list[Issue]]
"""A quarantined record: its line, its exact raw text and every reason."""


@dataclass
class GoodRows:
    """A chunk's good rows as the safety net needs them, should the chunk fail to store: their lines
    (file order), their raw text, and (``texts``, computed only then) each row's COPY text, or the
    issue that keeps it from having one. Only references, held until the chunk is loaded."""

    lines: np.ndarray
    raw: Callable[[int], str]
    texts: Callable[[], list[str | Issue]]


@dataclass
class Prepared:
    """One chunk, validated and ready to load: the COPY text of its good rows and its bad ones."""

    rows_in: int
    good: int
    copy: str
    """The COPY statement for the payload, with a ``{table}`` placeholder."""
    payload: list[bytes]
    rejected: list[Rejected]
    rows: GoodRows


def _already_encoded() -> tuple[str, list[bytes]]:
    raise RuntimeError("this chunk was already encoded")


@dataclass
class Validated:
    """One chunk, validated: its good rows are not yet hashed, sorted and formatted (``encode``,
    which gives the COPY statement and its data)."""

    rows_in: int
    good: int
    encode: Callable[[], tuple[str, list[bytes]]]
    rejected: list[Rejected]
    rows: GoodRows

    def encoded(self) -> Prepared:
        """The chunk ready to load; what ``encode`` held is let go (``rows`` keeps references to
        the good rows' lines or values until the chunk is loaded).

        An encoder that cannot encode a row (validation admits only what both encode, so this is a
        safety net) sends the chunk to ``_Load._salvage`` (``SALVAGE``): each row is sent as text
        there, and the database says which it can store."""
        encode, self.encode = self.encode, _already_encoded
        try:
            copy, payload = encode()
        except (ValueError, TypeError) as exc:  # not its text: it may quote a value
            lines = self.rows.lines
            log.warning(f"ingest: a row of lines {lines[0]}-{lines[-1]} could not be encoded "
                        f"({type(exc).__name__}); the chunk goes through the safety net")
            copy, payload = SALVAGE, []
        return Prepared(self.rows_in, self.good, copy, payload, self.rejected, self.rows)


class _Preparer:
    """Everything ingest does to a chunk before the database sees it: validation, the duplicate
    check across chunks, pseudonymisation, then (``Validated.encode``) the record hashes and the
    COPY data. It needs no connection, so it runs on worker threads while the previous chunks load.
    """

    def __init__(self, settings: Settings, day: dt.date, name: str, header: list[str]) -> None:
        self.width = len(header)
        self.positions = [header.index(c) for c in COLUMNS]
        self.extra = [(i, h) for i, h in enumerate(header) if h not in COLUMNS]
        self.contract_order = tuple(header) == COLUMNS
        self.contract = settings.contract
        self.key = settings.require_pseudonym_key()
        self.pseudonyms = Pseudonymiser(self.key)
        self.seen = SeenKeys()
        self.suffix = "\t".join(["", day.isoformat(), _escape(name)]) + "\t"
        self.run_tail = f"\t{_escape(settings.run_id)}"
        self.salvage_added = [day.isoformat(), _escape(name)], _escape(settings.run_id)
        self.plain_copy = (f"COPY {{table}} ({', '.join((*_ADDED_COLUMNS, *header))}) "
                           "FROM STDIN (DELIMITER ',')")
        self.plain_added = ",".join(["", day.isoformat(), _escape(name, ","), _escape(settings.run_id, ",")])
        self.binary_copy = (f"COPY {{table}} ({', '.join((*_ADDED_COLUMNS, *COLUMNS))}) "
                            "FROM STDIN (FORMAT binary)")
        self.binary_added = b"".join([struct.pack(">ii", 4, (day - _POSTGRES_EPOCH).days),
                                      _binary_text(name), _binary_text(settings.run_id)])
        self.compiled = _copyrows
        self.failing = redact.FailingValues(self.contract)

    def validate(self, chunk: Chunk) -> Validated:
        bad: dict[int, list[Issue]] = {}
        for rec in chunk.broken:
            bad[rec.line] = [
                Issue("csv_syntax", None, rec.syntax_error) if rec.syntax_error
                else Issue("field_count", None, f"{len(rec.fields)} fields, expected {self.width}")
            ]
        columns = [chunk.fields[p] for p in self.positions]
        frame = frame_of(columns, chunk.lines, chunk.may_have_empty)
        issues = validate_chunk(frame, self.seen.mark(frame["declaration_id"]), self.contract)
        del frame
        keep = ~np.isin(chunk.lines, np.fromiter(issues, dtype=np.int64, count=len(issues)))
        bad.update(issues)
        taxpayer_ids = functools.cache(lambda: redact.TaxpayerIds(columns[1].tolist()))
        shown: dict[tuple[str | None, str | None], tuple[str | None, bool]] = {}
        rejected = [(line, chunk.raw(line), self._shown(bad[line], taxpayer_ids, shown)) for line in sorted(bad)]
        extras = self._extras(chunk, keep) if self.extra else None
        chunk.fields = []  # with ``columns``, the last references to the values of the bad rows
        numbers = chunk.lines[keep]
        if chunk.plain is None or extras is not None:
            good = [c[keep] for c in columns]
            rows = GoodRows(numbers, chunk.raw, partial(self._salvage_texts, good, numbers, extras))
            encode = partial(self._payload, good, numbers, extras)
            return Validated(chunk.records, len(numbers), encode, rejected, rows)
        block, first = chunk.plain, chunk.first_line
        texts = [block[line - first] for line in numbers.tolist()]
        if texts and not texts[-1].endswith("\n"):  # the file's last line; rows are reordered
            texts[-1] += "\n"
        rows = GoodRows(numbers, chunk.raw, partial(self._plain_salvage_texts, texts, numbers))
        if self.compiled is not None and self.contract_order:
            codes, ids = pd.factorize(columns[1][keep])
            encode = partial(self._binary_payload, texts, codes.astype(np.int64, copy=False),
                             ids.tolist(), numbers)
            return Validated(chunk.records, len(numbers), encode, rejected, rows)
        encode = partial(self._plain_payload, [c[keep] for c in columns], numbers, texts)
        return Validated(chunk.records, len(numbers), encode, rejected, rows)

    def _shown(self, found: list[Issue], taxpayer_ids: Callable[[], redact.TaxpayerIds],
               memo: dict[tuple[str | None, str | None], tuple[str | None, bool]]) -> list[Issue]:
        """The issues of a bad row as they may be written: a failing value that could be a taxpayer
        id is replaced by its description (contribflow/redact.py). ``memo``: the chunk's verdicts
        so far (a chunk's failing values repeat)."""
        shown = []
        for issue in found:
            key = (issue.column, issue.value)
            if key not in memo:
                memo[key] = self.failing.shown(issue.column, issue.value, taxpayer_ids)
            shown.append(Issue(issue.rule, issue.column, *memo[key]))
        return shown

    def _binary_payload(self, texts: list[str], codes: np.ndarray, ids: list[str],
                        numbers: np.ndarray) -> tuple[str, list[bytes]]:
        """A whole binary COPY of the good rows of a plain chunk, in load order (_copyrows.c).

        A line it refuses raises ValueError (naming its index, never its values): the chunk then
        goes through the safety net (``Validated.encoded``)."""
        pieces = self.compiled.binary_copy(texts, codes, ids, self.key, numbers, self.binary_added,
                                           _PIECE_ROWS)
        return self.binary_copy, [_BINARY_SIGNATURE, *pieces, _BINARY_TRAILER]

    def _plain_payload(self, good: list[np.ndarray], numbers: np.ndarray,
                       texts: list[str]) -> tuple[str, list[bytes]]:
        """COPY text of the good rows of a plain chunk, in load order: the added columns, then the
        line as it is. Validation guarantees that the values hold no backslash, so the line needs
        no escaping."""
        ids = good[1].tolist()
        keys = self.pseudonyms.keys_for(ids)
        order, hashes = load_order(good[0].tolist(), digests(good, texts if self.contract_order else None))
        del good
        added = self.plain_added
        return self.plain_copy, _in_order(order, [f"{h},{keys[t]},{n}{added},{x}"
                                                  for h, t, n, x in zip(hashes, ids, numbers.tolist(), texts)])

    def _extras(self, chunk: Chunk, keep: np.ndarray) -> list[str]:
        """Each good row's values of the columns outside the contract, as COPY text of a jsonb."""
        names = [name for _, name in self.extra]
        values = [chunk.fields[i][keep].tolist() for i, _ in self.extra]
        return [_escape(json.dumps(dict(zip(names, row)), ensure_ascii=False)) for row in zip(*values)]

    def _payload(self, good: list[np.ndarray], numbers: np.ndarray,
                 extras: list[str] | None = None) -> tuple[str, list[bytes]]:
        """COPY text of the good rows in load order. Validation guarantees that the values hold no
        tab, newline or other control character; identifiers may hold a backslash (_copy_text)."""
        order, hashes = load_order(good[0].tolist(), digests(good))
        columns = [c.tolist() for c in good]
        del good
        keys = self.pseudonyms.keys_for(columns[1])
        taxpayer_keys = [keys[t] for t in columns[1]]
        columns[0], columns[1] = _copy_text(columns[0]), _copy_text(columns[1])
        suffix, tail = self.suffix, self.run_tail
        return _COPY_RAW, _in_order(order, [
            f"{d}\t{t}\t{key}\t{e}\t{a}\t{c}\t{k}\t{s}\t{n}{suffix}{line}{tail}\t{h}\t{x}\n"
            for d, t, key, e, a, c, k, s, n, line, h, x in zip(
                *columns[:2], taxpayer_keys, *columns[2:], numbers.tolist(), hashes,
                extras if extras is not None else itertools.repeat("\\N"))
        ])


    def _plain_salvage_texts(self, texts: list[str], numbers: np.ndarray) -> list[str | Issue]:
        """``_salvage_texts`` of a plain chunk's good lines (each exactly its values joined by commas)."""
        fields = [text.removesuffix("\n").split(",") for text in texts]
        if any(len(f) != self.width for f in fields):  # cannot be: the reader counted the commas
            raise StageError("a plain line changed its number of fields")
        good = [np.array([f[p] for f in fields], dtype=object) for p in self.positions]
        return self._salvage_texts(good, numbers, None)

    def _salvage_texts(self, good: list[np.ndarray], numbers: np.ndarray,
                       extras: list[str] | None) -> list[str | Issue]:
        """Each good row's COPY text (``_COPY_RAW``, every value escaped: nothing is assumed of it),
        in file order, one line each; or, for a row whose record hash cannot be computed (its amount
        is no decimal number), the issue that keeps it out."""
        hashes: list[str | None]
        try:
            hashes = list(load_order(good[0].tolist(), digests(good))[1])
        except (ValueError, TypeError):
            hashes = []
            for row in range(len(numbers)):
                try:
                    hashes.append(load_order([good[0][row]], digests([c[row:row + 1] for c in good]))[1][0])
                except (ValueError, TypeError):
                    hashes.append(None)
        keys = self.pseudonyms.keys_for(good[1].tolist())
        (day, name), run_id = self.salvage_added
        texts: list[str | Issue] = []
        for row, (values, line, digest) in enumerate(zip(zip(*[c.tolist() for c in good]), numbers.tolist(), hashes)):
            if digest is None:
                texts.append(Issue(NOT_STORABLE, "amount", "no record hash: the amount is not a decimal number",
                                   described=True))
                continue
            extra = "\\N" if extras is None else extras[row]
            escaped = [_escape(v) for v in values]
            texts.append("\t".join([*escaped[:2], keys[values[1]], *escaped[2:], day, name, str(line),
                                    run_id, digest, extra]) + "\n")
        return texts


def _in_order(order: np.ndarray, rows: list[str]) -> list[bytes]:
    """The rows, built in file order (where their values lie in memory), reordered as pointers in
    C, and encoded in pieces of ``_PIECE_ROWS``, each row's text freed once it is in its piece (so
    that no second copy of the whole chunk's text is ever held)."""
    ordered = np.array(rows, dtype=object)[order]
    del rows
    pieces = []
    for start in range(0, len(ordered), _PIECE_ROWS):
        pieces.append("".join(ordered[start:start + _PIECE_ROWS].tolist()).encode())
        ordered[start:start + _PIECE_ROWS] = None
    return pieces


_DONE = object()
_PIECE_ROWS = 5_000


def _ahead(prepare: Callable[[T], U], stream: Generator[T, None, None]) -> Generator[U, None, None]:
    """``map(prepare, stream)``, with the next item prepared on a worker thread while the caller
    uses the current one.

    The client's work (parsing, validation, hashing, formatting) and the server's (parsing, the
    heap, the unique index) then overlap on two cores instead of taking turns. One prepared
    item at most waits in the queue, so memory stays bounded. An error on the worker is raised here.
    """
    handoff: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            with contextlib.closing(stream):
                for item in stream:
                    prepared = prepare(item)
                    del item  # not held while the queue is full
                    if not offer(prepared):
                        return
                    del prepared
            offer(_DONE)
        except BaseException as exc:  # handed to the loading thread, which raises it
            offer(exc)

    worker = threading.Thread(target=work, name="ingest-prepare", daemon=True)
    worker.start()
    try:
        while (item := handoff.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


_SEND_BUFFER = 4 << 20
_QUARANTINE_BATCH = 5_000
_QUARANTINE_BATCH_BYTES = 8 << 20
"""Bad rows are held until there are this many, or this many characters of their raw lines, then written."""


def _widen_send_buffer(conn: psycopg.Connection) -> None:
    """Let the connection's socket take several pieces of COPY data at once (best effort).

    psycopg waits for the socket to drain after each write, and each wake-up has to take the GIL
    back from the preparing thread, which may keep it for the whole switch interval (5 ms). With the
    default buffer (~200 kB) that stalled the load for seconds per million rows while the server
    sat idle. The kernel caps the size (net.core.wmem_max); a smaller buffer only costs speed.
    """
    duplicate = os.dup(conn.pgconn.socket)
    try:
        sock = socket.socket(fileno=duplicate)
    except OSError:
        os.close(duplicate)
        return
    with sock, contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER)


class _Load:
    """The state of one file's load inside its transaction."""

    def __init__(self, conn: psycopg.Connection, settings: Settings, day: dt.date,
                 path: Path, facts: FileFacts) -> None:
        self.conn = conn
        self.settings = settings
        self.day = day
        self.name = path.name
        self.facts = facts
        self.outcome = Outcome()
        self.optimistic = True
        self.savepoint = False  # whether the savepoint of the optimistic COPY is open
        self.rejected: list[Rejected] = []
        self.rejected_bytes = 0
        _widen_send_buffer(conn)
        conn.execute(
            f"CREATE TEMP TABLE incoming_rows ON COMMIT DROP AS "
            f"SELECT {', '.join(RAW_COLUMNS)} FROM raw.contributions WITH NO DATA"
        )
        conn.execute(
            "CREATE TEMP TABLE incoming_quarantine ON COMMIT DROP AS "
            "SELECT * FROM raw.contributions_quarantine WITH NO DATA"
        )
        conn.execute(
            f"CREATE TEMP TABLE incoming_issues ON COMMIT DROP AS "
            f"SELECT {', '.join(_ISSUE_COLUMNS)} FROM meta.data_quality_issue WITH NO DATA"
        )

    def chunk(self, prepared: Prepared) -> None:
        self.outcome.rows_in += prepared.rows_in
        if prepared.good:
            self._copy_good(prepared)
        if prepared.rejected:
            self.rejected.extend(prepared.rejected)
            self.rejected_bytes += sum(len(raw) for _, raw, _ in prepared.rejected)
        if len(self.rejected) >= _QUARANTINE_BATCH or self.rejected_bytes >= _QUARANTINE_BATCH_BYTES:
            self._quarantine()

    def _copy_good(self, prepared: Prepared) -> None:
        """COPY straight into raw, inside a savepoint; a chunk that hits the unique index, and each
        one after it until one skips nothing, goes through ``incoming_rows`` and
        ``_INSERT_NEW_STATES`` instead. A chunk that fails to store goes to the safety net.

        Each round trip to the server costs the loading thread a wait for the GIL, which the
        preparing thread may hold for the whole switch interval (5 ms) while the server sits idle:
        so the savepoint of a chunk is released and the next one's taken in one statement."""
        copy_sql, payload, rows = prepared.copy, prepared.payload, prepared.good
        if copy_sql == SALVAGE:
            self._close_savepoint()
            self._salvage(prepared)
            return
        if self.optimistic:
            self.conn.execute("RELEASE SAVEPOINT chunk; SAVEPOINT chunk" if self.savepoint else "SAVEPOINT chunk")
            self.savepoint = True
            try:
                with self.conn.cursor().copy(copy_sql.format(table="raw.contributions")) as copy:
                    for piece in payload:
                        copy.write(piece)
                self.outcome.rows_loaded += rows
                return
            except psycopg.errors.UniqueViolation:
                self.conn.execute("ROLLBACK TO SAVEPOINT chunk; RELEASE SAVEPOINT chunk")
                self.savepoint = self.optimistic = False
            except STORAGE_ERRORS:
                self.conn.execute("ROLLBACK TO SAVEPOINT chunk; RELEASE SAVEPOINT chunk")
                self.savepoint = self.optimistic = False
                self._salvage(prepared)
                return
        self.outcome.chunks_deduplicated += 1
        self.conn.execute("TRUNCATE incoming_rows; SAVEPOINT staged")
        try:
            with self.conn.cursor().copy(copy_sql.format(table="incoming_rows")) as copy:
                for piece in payload:
                    copy.write(piece)
            inserted = self._insert_incoming()
        except STORAGE_ERRORS:
            self.conn.execute("ROLLBACK TO SAVEPOINT staged; RELEASE SAVEPOINT staged")
            self._salvage(prepared)
            return
        self.conn.execute("RELEASE SAVEPOINT staged")
        self.outcome.rows_loaded += inserted
        self.outcome.rows_already_in_raw += rows - inserted
        self.optimistic = inserted == rows

    def _insert_incoming(self) -> int:
        """The rows of ``incoming_rows`` that are new states for their file date, inserted
        (``_INSERT_NEW_STATES``); how many."""
        return self.conn.execute(_INSERT_NEW_STATES).rowcount

    def _close_savepoint(self) -> None:
        if self.savepoint:
            self.conn.execute("RELEASE SAVEPOINT chunk")
            self.savepoint = False

    def _salvage(self, prepared: Prepared) -> None:
        """The safety net for a chunk that did not store: its good rows are COPYed again, as text,
        a subset at a time, each in a savepoint, until every row is stored or known not storable.

        A failing COPY names the line it failed on: the rows before it are stored as one subset,
        that row is not storable, and the rest is tried in halves (any other failure, e.g. of the
        INSERT, halves the subset). So a chunk with a few such rows costs a few COPYs, and even a
        chunk of nothing but costs about two per row. Each row that cannot be stored is quarantined
        (``not_storable``, its column, the database's message without the value: redact.py)."""
        self.optimistic = False
        rows = prepared.rows
        texts = rows.texts()
        lines = rows.lines.tolist()
        failed: dict[int, Issue] = {i: t for i, t in enumerate(texts) if isinstance(t, Issue)}
        self.conn.execute("TRUNCATE incoming_rows")
        pending = [[i for i in range(len(texts)) if i not in failed]]
        copy_sql = _COPY_RAW.format(table="incoming_rows")
        while pending:
            subset = pending.pop()
            if not subset:
                continue
            self.conn.execute("SAVEPOINT salvage")
            try:
                with self.conn.cursor().copy(copy_sql) as copy:
                    copy.write("".join([texts[i] for i in subset]))  # type: ignore[misc]
                inserted = self._insert_incoming()
            except STORAGE_ERRORS as exc:
                self.conn.execute("ROLLBACK TO SAVEPOINT salvage; RELEASE SAVEPOINT salvage")
                line, column = redact.copy_position(exc)
                if len(subset) == 1 or (line is not None and line <= len(subset)):
                    at = 0 if len(subset) == 1 else line - 1  # type: ignore[operator]
                    failed[subset[at]] = Issue(NOT_STORABLE, column, redact.database_error(exc, one_line=True),
                                               described=True)
                    rest = subset[at + 1:]
                    pending += [subset[:at], rest[:len(rest) // 2], rest[len(rest) // 2:]]
                else:
                    pending += [subset[:len(subset) // 2], subset[len(subset) // 2:]]
                continue
            self.conn.execute("DELETE FROM incoming_rows; RELEASE SAVEPOINT salvage")
            self.outcome.rows_loaded += inserted
            self.outcome.rows_already_in_raw += len(subset) - inserted
        for i, issue in sorted(failed.items()):
            raw = rows.raw(lines[i])
            self.rejected.append((lines[i], raw, [issue]))
            self.rejected_bytes += len(raw)
        self.outcome.rows_not_storable += len(failed)
        if failed:
            log.warning(f"ingest: {len(failed)} row(s) of lines {lines[0]}-{lines[-1]} could not be stored "
                        f"and are quarantined ({NOT_STORABLE})")

    def _quarantine(self) -> None:
        """Write the bad rows gathered so far: in batches, as two COPYs per batch rather than per
        chunk. The issues go to ``incoming_issues`` first (``finish`` adds the new ones to meta)."""
        rejected, self.rejected, self.rejected_bytes = self.rejected, [], 0
        if not rejected:
            return
        run_id, sha = self.settings.run_id, self.facts.sha256
        cur = self.conn.cursor()
        with cur.copy(f"COPY incoming_quarantine ({', '.join(_QUARANTINE_COLUMNS)}) FROM STDIN") as copy:
            for line, raw, found in rejected:
                copy.write_row((sha, line, self.name, self.day, _printable(raw), [_reason(i) for i in found], run_id))
        with cur.copy(f"COPY incoming_issues ({', '.join(_ISSUE_COLUMNS)}) FROM STDIN") as copy:
            for line, _, found in rejected:
                for i in found:
                    value = None if i.value is None else _printable(i.value)[:1000]
                    copy.write_row((run_id, self.name, sha, line, i.rule, i.column, value, "error"))
                    self.outcome.issues += 1
        self.outcome.rows_rejected += len(rejected)

    def warn(self, rule: str, line: int | None, column: str | None, text: str,
             severity: str = "warning") -> None:
        """A quality issue about the whole file, which did not stop it (unless ``severity`` is error)."""
        ledger.record_issue(self.conn, self.settings.run_id, self.name, self.facts.sha256, line, rule,
                            column, text, severity)

    def finish(self) -> None:
        self._close_savepoint()
        self._quarantine()
        columns = ", ".join(_QUARANTINE_COLUMNS)
        self.conn.execute(
            f"INSERT INTO raw.contributions_quarantine ({columns}) SELECT {columns} "
            f"FROM incoming_quarantine ON CONFLICT (source_sha256, source_line) DO NOTHING"
        )
        issues = ", ".join(_ISSUE_COLUMNS)
        self.conn.execute(f"INSERT INTO meta.data_quality_issue ({issues}) SELECT {issues} "
                          f"FROM incoming_issues i WHERE {ledger.ISSUE_IS_NEW}")


def _reason(issue: Issue) -> str:
    """One reason of a quarantined row: its column and rule, and its failing value as redact.py
    allows it (quoted), or the value's description."""
    if not issue.column:
        return f"{issue.rule}: {_printable(issue.value or '')[:200]}"
    if issue.value is None:
        return f"{issue.column}: {issue.rule}"
    shown = _printable(issue.value)[:200]
    return f"{issue.column}: {issue.rule} ({shown if issue.described else repr(shown)})"


def _refusal(settings: Settings, outcome: Outcome) -> str | None:
    """Why a file that was read must not load: too many bad rows, or (when the volume check is set
    to fail) a day far outside the usual volume."""
    if outcome.rows_in and outcome.rows_rejected / outcome.rows_in > settings.reject_threshold:
        return (f"{outcome.rows_rejected} of {outcome.rows_in} rows failed validation "
                f"({outcome.rows_rejected / outcome.rows_in:.1%}, threshold "
                f"{settings.reject_threshold:.1%})")
    if settings.volume_action == "fail" and outcome.volume is not None and outcome.volume.outside:
        return f"volume {outcome.volume.verdict}: {outcome.volume.describe()} (CONTRIBFLOW_VOLUME_ACTION=fail)"
    return None


def ingest_file(settings: Settings, day: dt.date, path: Path, conn: psycopg.Connection,
                facts: FileFacts | None = None, before_commit: Callable[[int], None] | None = None) -> Outcome:
    """``before_commit(rows_in)``: called once every record was read, before anything is recorded
    (source.checked_fingerprint: the file unchanged while read, its manifest's row count)."""
    facts = facts or fingerprint(path)
    try:
        if facts.problem:
            raise FileRefused(facts.problem)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (RAW_WRITER_LOCK,))
            earlier = ledger.earlier_load(conn, facts.sha256, day, path.name)
            if earlier is not None:  # loaded meanwhile (the light front looked before the lock)
                ledger.answer_earlier(conn, settings, day, path.name, facts, earlier)
                return Outcome(rows_in=earlier.rows_in, earlier=earlier)
            # A small first chunk: the database starts loading while the rest is validated.
            header, stream = chunks(path, settings.chunk_rows, first=max(1, settings.chunk_rows // 10),
                                    keep_extra=settings.schema_drift == "keep", source=settings.contract)
            load = _Load(conn, settings, day, path, facts)
            preparer = _Preparer(settings, day, path.name, header)
            try:
                # Three stages on their own threads: validation in Python, encoding (mostly
                # without the GIL when compiled), and this thread's COPY.
                for prepared in _ahead(Validated.encoded, _ahead(preparer.validate, stream)):
                    load.chunk(prepared)
            finally:
                preparer.seen.close()
            load.finish()
            outcome = load.outcome
            if before_commit is not None:
                before_commit(outcome.rows_in)
            outcome.extra_columns = tuple(name for _, name in preparer.extra)
            if outcome.extra_columns:
                outcome.extra_shown = tuple(redact.header_name(name, settings.contract, position + 1, quote=False)
                                            for position, name in preparer.extra)
                load.warn(SCHEMA_DRIFT, 1, ", ".join(outcome.extra_shown),
                          f"kept the values of {len(outcome.extra_columns)} column(s) outside the "
                          "contract in raw.contributions.extra (CONTRIBFLOW_SCHEMA_DRIFT=keep)")
            outcome.volume = check_volume(conn, settings, day, outcome.rows_in)
            refusal = _refusal(settings, outcome)
            if outcome.volume.outside:
                load.warn(VOLUME_RULE, None, None, outcome.volume.describe(),
                          "error" if settings.volume_action == "fail" else "warning")
            if refusal:
                # Only this transaction's own, never-committed rows: raw stays append-only.
                for table in ("raw.contributions", "raw.contributions_restated"):
                    conn.execute(f"DELETE FROM {table} WHERE run_id = %s AND source_file = %s "
                                 "AND ingestion_ts >= now()", (settings.run_id, path.name))
                outcome.rows_withheld, outcome.rows_loaded = outcome.rows_loaded, 0
                outcome.refusal = refusal
                ledger.record(conn, settings, day, path.name, facts, outcome.counts, "REJECTED", refusal)
                return outcome
            ledger.record(conn, settings, day, path.name, facts, outcome.counts, "LOADED", None)
            return outcome
    except FileRefused as exc:
        with conn.transaction():
            ledger.record(conn, settings, day, path.name, facts, None, "REFUSED", str(exc))
        raise


def load_into(step: StepRun, settings: Settings, day: dt.date, source: Path,
              facts: FileFacts | None = None, before_commit: Callable[[int], None] | None = None) -> None:
    """Ingest ``source`` (already resolved) as ``step``; ``facts``: its fingerprint, if taken;
    ``before_commit``: see ingest_file."""
    # pandas and pandera leave ~10^5 long-lived objects: freezing them spares every garbage
    # collection during the load a walk through all of them.
    gc.freeze()
    with connect(settings) as conn:
        outcome = ingest_file(settings, day, source, conn, facts, before_commit)
    if outcome.earlier is not None:
        ledger.report_earlier(step, day, source.name, outcome.earlier)
        return
    step.rows_in, step.rows_loaded, step.rows_rejected = (
        outcome.rows_in, outcome.rows_loaded, outcome.rows_rejected)
    step.details = {
        "rows_already_loaded": outcome.rows_already_in_raw,
        "rows_quarantined_earlier": 0,
        "rows_withheld": outcome.rows_withheld,
        "quality_issues": outcome.issues,
        "chunks_deduplicated": outcome.chunks_deduplicated,
    }
    if outcome.rows_not_storable:
        step.details["rows_not_storable"] = outcome.rows_not_storable
    if outcome.extra_columns:
        step.details["extra_columns"] = ",".join(outcome.extra_shown)
    if outcome.volume is not None:
        step.details["volume"] = outcome.volume.verdict
        step.details["volume_detail"] = outcome.volume.describe()
    if outcome.refusal:
        raise StageError(
            f"{step.source_file}: {outcome.refusal}; nothing loaded, the rows are in "
            "raw.contributions_quarantine and meta.data_quality_issue"
        )
