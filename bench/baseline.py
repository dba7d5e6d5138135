"""The row-by-row yardstick of issue 8, in the bench only: the obvious way to load a source file.

pandas reads the whole file, ``iterrows`` walks it, each row is checked in Python, its taxpayer is
pseudonymised, a sha256 of its business columns is its record hash (recordhash.py's definition, one
row at a time), and ``executemany`` sends one ``INSERT … ON CONFLICT DO NOTHING`` per row. It
applies the same rules as ContribFlow's ingest (the generated files only need the ones below), so
both must end with the same rows in raw.

Run as ``python bench/baseline.py FILE TABLE`` with the ``PG*`` variables set; the bench runs it as
a subprocess to measure its own peak memory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import re
import sys
from pathlib import Path

import pandas as pd
import psycopg

from contribflow import contract
from contribflow.ingest.recordhash import canonical_amount

COLUMNS = ("declaration_id", "taxpayer_id", "taxpayer_key", "event_date", "amount", "currency",
           "contribution_type", "status", "country", "file_date", "source_file", "source_line",
           "run_id", "record_hash")
_FORMATS = {name: re.compile(pattern, re.ASCII) for name, pattern in (
    ("declaration_id", contract.BASE.column("declaration_id").identifier_regex),
    ("taxpayer_id", contract.BASE.column("taxpayer_id").identifier_regex),
    ("event_date", contract.ISO_DATE), ("amount", contract.AMOUNT),
)}
_ALLOWED = {"currency": contract.CURRENCIES, "contribution_type": contract.CONTRIBUTION_TYPES,
            "status": contract.STATUSES, "country": contract.COUNTRIES}


def _valid(row: pd.Series) -> bool:
    if any(not _FORMATS[c].fullmatch(row[c]) for c in _FORMATS):
        return False
    if any(row[c] not in allowed for c, allowed in _ALLOWED.items()):
        return False
    try:
        dt.date.fromisoformat(row["event_date"])
    except ValueError:
        return False
    return True


def load(path: Path, conn: psycopg.Connection, table: str, key: bytes, run_id: str) -> int:
    day = contract.file_date(path)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    seen: set[str] = set()
    rows = []
    for index, row in frame.iterrows():
        declaration = row["declaration_id"]
        repeated = declaration in seen
        if declaration:
            seen.add(declaration)
        if repeated or not _valid(row):
            continue
        business = [canonical_amount(row[c]) if c == "amount" else row[c] for c in contract.COLUMNS]
        taxpayer_key = hmac.new(key, row["taxpayer_id"].encode(), hashlib.sha256).hexdigest()
        digest = hashlib.sha256(",".join(business).encode()).hexdigest()[:32]
        rows.append((row["declaration_id"], row["taxpayer_id"], taxpayer_key, row["event_date"],
                     row["amount"], row["currency"], row["contribution_type"], row["status"],
                     row["country"], day, path.name, int(index) + 2, run_id, digest))
    placeholders = ", ".join(["%s"] * len(COLUMNS))
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES ({placeholders}) ON CONFLICT DO NOTHING",
            rows,
        )
    conn.commit()
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def main(argv: list[str]) -> int:
    path, table = Path(argv[0]), argv[1]
    key = os.environ["CONTRIBFLOW_PSEUDONYM_KEY"].encode()
    with psycopg.connect("") as conn:
        loaded = load(path, conn, table, key, os.environ.get("CONTRIBFLOW_RUN_ID", "baseline"))
    print(f"baseline: {loaded} rows in {table}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
