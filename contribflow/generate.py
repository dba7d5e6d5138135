"""generate: a deterministic synthetic source file for a date (same date and seed, same bytes).

It stands in for the source system, so it writes exactly what that system's export (pandas'
``to_csv``) writes: ids like ``DEC_20260112_000001`` and ``TAXP_63976``, and each amount as pandas
prints a float rounded to cents (``343.3``, ``461.26``, ``0.0``, ``12.0``); and it delivers the file
as a well-behaved source does: renamed into place whole, then its manifest (contribflow/ingest/completion.py),
so pick need not wait out a stability window.

Each declaration is a pure function of (seed, day, index), so a later day can re-send an earlier
declaration with a new status (DUE → PAID) exactly as the source system would.
"""

from __future__ import annotations

import datetime as dt
import filecmp
import hashlib
import itertools
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from contribflow.contract import COLUMNS, CONTRIBUTION_TYPES, COUNTRIES, file_name
from contribflow.errors import StageError
from contribflow.ingest import completion
from contribflow.settings import PRODUCTION, Settings, SettingsError
from contribflow.step import Dataset, StepRun

RESEND_SHARE = 0.10
RESEND_LOOKBACK_DAYS = 7
DEFECTS = (
    ("amount", "-12.50"),
    ("amount", "10.505"),
    ("amount", "abc"),
    ("currency", "USD"),
    ("contribution_type", "GIFT_TAX"),
    ("status", "UNKNOWN"),
    ("country", "XX"),
    ("event_date", "2026-02-30"),
    ("taxpayer_id", ""),
    ("declaration_id", None),  # a duplicate of the previous row's id
)


def _digest(seed: int, day: dt.date, index: int) -> int:
    data = f"{seed}:{day.isoformat()}:{index}".encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "big")


def declaration(seed: int, day: dt.date, index: int) -> list[str]:
    """The declaration first sent on ``day`` as row ``index``."""
    h = _digest(seed, day, index)
    status_roll = (h >> 64) % 100
    status = "DUE" if status_roll < 50 else "PAID" if status_roll < 95 else "CANCELLED"
    cents = (h >> 24) % 2_500_000
    return [
        f"DEC_{day:%Y%m%d}_{index + 1:06d}",
        f"TAXP_{10000 + h % 90000}",
        (day - dt.timedelta(days=(h >> 20) % 30)).isoformat(),
        source_amount(cents),
        "EUR",
        CONTRIBUTION_TYPES[(h >> 48) % len(CONTRIBUTION_TYPES)],
        status,
        COUNTRIES[(h >> 56) % len(COUNTRIES)],
    ]


def source_amount(cents: int) -> str:
    """An amount as the source's pandas writes a float rounded to cents: the shortest text that
    reads back as the same float (``repr``), so 343.30 is ``343.3`` and 12.00 is ``12.0``."""
    return repr(round(cents / 100, 2))


def rows_for(day: dt.date, rows: int, seed: int = 42, defect_rate: float = 0.0) -> Iterator[list[str]]:
    """The data rows of ``day``'s file: new declarations, then re-sends of earlier ones.

    A generator, so a file of any size is written in constant memory.
    """
    resends = int(rows * RESEND_SHARE)
    threshold = int(defect_rate * 1_000_000)
    previous: list[str] | None = None
    for i in range(rows):
        if i < rows - resends:
            row = declaration(seed, day, i)
        else:
            r = i - (rows - resends)
            earlier = day - dt.timedelta(days=1 + r % RESEND_LOOKBACK_DAYS)
            row = declaration(seed, earlier, r // RESEND_LOOKBACK_DAYS)
            if row[6] == "DUE":
                row[6] = "PAID"
        if threshold and previous is not None:
            h = _digest(seed + 1, day, i)
            if h % 1_000_000 < threshold:
                column, value = DEFECTS[(h >> 32) % len(DEFECTS)]
                position = COLUMNS.index(column)
                row[position] = previous[position] if value is None else value
        previous = row
        yield row


def write_file(path: Path, rows: Iterable[list[str]], manifest: bool = True) -> int:
    """Write atomically (a reader never sees half a file), then its manifest (completion.py), as a
    well-behaved source does; return the number of data rows.

    An existing file is never replaced: the same bytes again are fine (a re-run), different bytes
    are refused, so generate cannot overwrite a file the source system dropped.

    The temporary file is this writer's own, so two runs generating the same date at once both
    succeed (the last rename wins, with the same bytes) instead of one renaming the other's file.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    count = size = 0
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as fh:
            lines = itertools.chain([COLUMNS], rows)
            while batch := list(itertools.islice(lines, _BATCH_ROWS)):
                data = "".join(",".join(line) + "\n" for line in batch).encode("utf-8")
                digest.update(data)
                fh.write(data)
                size += len(data)
                count += len(batch)
        count -= 1  # the header
        try:
            os.link(tmp, path)  # atomic, and never replaces a file that is already there
        except FileExistsError:
            if not filecmp.cmp(tmp, path, shallow=False):
                raise StageError(f"refusing to overwrite {path}: it exists with different content "
                                 "(a file the source system dropped, or another seed/size); "
                                 "move it away first if it really is to be replaced") from None
    finally:
        tmp.unlink(missing_ok=True)
    if manifest:
        completion.write_manifest(path, count, digest.hexdigest(), size)
    return count


_BATCH_ROWS = 10_000
MAX_ROWS = 100_000_000
"""More is a typo (about 8 GB of CSV); the benchmark's largest case is 10 million."""


def run(settings: Settings, day: dt.date, rows: int, seed: int, defect_rate: float,
        out: Path | None = None) -> StepRun:
    if not 1 <= rows <= MAX_ROWS:
        raise ValueError(f"--rows must be from 1 to {MAX_ROWS} (got {rows})")
    if not 0.0 <= defect_rate <= 1.0:
        raise ValueError(f"--defect-rate must be between 0 and 1 (got {defect_rate})")
    if settings.environment == PRODUCTION:
        raise SettingsError("generate writes synthetic data and is refused when CONTRIBFLOW_ENV=production "
                            "(the source system drops the files there; run the workflow with generate=false)")
    path = out or settings.landing_dir / file_name(day)
    with StepRun(settings, "generate", day) as step:
        path.parent.mkdir(parents=True, exist_ok=True)
        written = Dataset(path.name, kind="file")
        step.writes.append(written)
        step.rows_in = written.rows = write_file(path, rows_for(day, rows, seed, defect_rate))
        step.source_file = path.name
        step.details = {"path": str(path), "seed": seed, "defect_rate": str(defect_rate)}
    return step
