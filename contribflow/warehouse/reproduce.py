"""``contribflow reproduce``: is a publication what its record says? (issue 27, part 3)

``--publication N`` rebuilds the marts as publication N made them, from raw alone, with the same
dbt project: ``dbt run --full-refresh`` into the scratch schema ``marts_reproduce`` with the vars
``as_of_high_water`` (only raw rows, and repeats, with ingestion_ts up to N's high-water mark) and
``as_of_withdrawn`` (only the withdrawals in force at N, whatever was withdrawn since: the macros
as_of_raw and not_withdrawn). Each rebuilt table's row count and content hash are compared with
those N recorded (meta.publication_output). The scratch schema is emptied afterwards, whether the
rebuild succeeded or not.

``--check-published`` compares the live marts with the latest publication's record: a row changed
behind the pipeline's back (a superuser's UPDATE) makes the hashes differ.

Either prints one line per table, ``identical`` or what differs (counts, hashes, a few keys whose
row differs from the history's version of that publication), and exits 0 only when every table is
identical. Runs as the transformer (a rebuild reads raw and writes the scratch schema) or, for
``--check-published``, the auditor.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg

from contribflow import logs
from contribflow.db import connect
from contribflow.errors import StageError, UsageError
from contribflow.settings import Settings
from contribflow.warehouse import build_slot, transform
from contribflow.warehouse.publication import MARTS, TABLES, Hashed, content

log = logs.get("reproduce")

SCRATCH_SCHEMA = "marts_reproduce"
REPRODUCE_LOCK = "contribflow:reproduce"
SAMPLE_KEYS = 5
REBUILT = {"fct_contributions": "fct_contributions", "dim_taxpayer": "dim_taxpayer"}
"""Which relation of a (full-refresh) build holds what each published table would hold."""


@dataclass
class Comparison:
    table: str
    recorded: tuple[int, str]
    found: tuple[int, str]
    keys: list[str]

    @property
    def identical(self) -> bool:
        return self.recorded == self.found

    def line(self, what: str) -> str:
        if self.identical:
            return f"{self.table}: identical ({self.found[0]} rows, content hash {self.found[1]})"
        sample = f"; rows that differ, e.g. {', '.join(self.keys)}" if self.keys else ""
        return (f"{self.table}: DIFFERS: recorded {self.recorded[0]} rows, content hash {self.recorded[1]}; "
                f"{what} {self.found[0]} rows, content hash {self.found[1]}{sample}")


def _publication(conn: psycopg.Connection, number: int | None) -> tuple:
    row = conn.execute(
        "SELECT id, raw_high_water, withdrawal_ids, dbt_checksum FROM meta.publication "
        + ("WHERE id = %s" if number is not None else "ORDER BY id DESC LIMIT 1"),
        (number,) if number is not None else ()).fetchone()
    if row is None:
        last = conn.execute("SELECT max(id) FROM meta.publication").fetchone()[0]
        if number is None:
            raise UsageError("no publication is recorded yet: nothing to check (publish records each one)")
        raise UsageError(f"there is no publication {number}"
                         + (f": publications are numbered 1 to {last} (`contribflow publications`)" if last
                            else ": none is recorded yet"))
    return row


def _recorded(conn: psycopg.Connection, publication: int) -> dict[str, tuple[int, str]]:
    return {t: (n, h) for t, n, h in conn.execute(
        "SELECT table_name, row_count, content_hash FROM meta.publication_output WHERE publication_id = %s",
        (publication,)).fetchall()}


def _differing_keys(conn: psycopg.Connection, relation: str, table: Hashed, publication: int) -> list[str]:
    """A few keys whose row in ``relation`` is not the version publication N showed (or is missing
    on one side): a full outer join by key, on the row digests."""
    as_of = f"{MARTS}.{table.name}_as_of({int(publication)})"
    rows = conn.execute(
        f"""SELECT coalesce(a.k, b.k) FROM
                (SELECT t.{table.key} AS k, {table.digest('t')} AS d FROM {relation} t) a
                FULL JOIN (SELECT t.{table.key} AS k, {table.digest('t')} AS d FROM {as_of} t) b ON a.k = b.k
             WHERE a.d IS DISTINCT FROM b.d ORDER BY 1 LIMIT {SAMPLE_KEYS}""").fetchall()
    return [r[0] for r in rows]


def _compare(conn: psycopg.Connection, publication: int, relations: dict[str, str]) -> list[Comparison]:
    recorded = _recorded(conn, publication)
    out = []
    for table in TABLES:
        if table.name not in recorded:
            raise StageError(f"publication {publication} recorded no content hash for {table.name}")
        found = content(conn, relations[table.name], table)
        keys = [] if found == recorded[table.name] else _differing_keys(conn, relations[table.name], table,
                                                                        publication)
        out.append(Comparison(table.name, recorded[table.name], found, keys))
    return out


def check_published(settings: Settings) -> tuple[int, list[str]]:
    """The live marts against the latest publication's record (one REPEATABLE READ snapshot, so a
    publication committing meanwhile is either wholly seen or not at all)."""
    with connect(settings) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        number = _publication(conn, None)[0]
        comparisons = _compare(conn, number, {t.name: f"{MARTS}.{t.name}" for t in TABLES})
    lines = [f"publication {number} (the latest) against the published marts:"]
    lines += [c.line("published") for c in comparisons]
    return (0 if all(c.identical for c in comparisons) else 1), lines


def reproduce(settings: Settings, number: int) -> tuple[int, list[str]]:
    """Rebuild publication ``number`` in the scratch schema, compare, and always empty it."""
    with connect(settings, autocommit=True) as lock:
        if not lock.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (REPRODUCE_LOCK,)).fetchone()[0]:
            raise StageError(f"another `contribflow reproduce` is using {SCRATCH_SCHEMA}: try again when it ended")
        publication, high_water, withdrawal_ids, dbt_checksum = _publication(lock, number)
        if high_water is None:
            raise StageError(f"publication {number} recorded no high-water mark of raw (its build predates "
                             "migration 0014): it cannot be reproduced")
        withdrawn = lock.execute(
            "SELECT file_name, run_id FROM meta.file_withdrawal WHERE id = ANY(%s) ORDER BY id",
            (withdrawal_ids,)).fetchall()
        target = Path(tempfile.mkdtemp(prefix="contribflow-reproduce-"))
        lines = [f"publication {number}: rebuilt from raw up to {high_water.isoformat()}"
                 + (f", without {len(withdrawn)} withdrawn file(s)" if withdrawn else "")
                 + f", in {SCRATCH_SCHEMA}"]
        try:
            _empty(settings)
            current = transform.build_scratch(settings, target, {
                "scratch_schema": SCRATCH_SCHEMA,
                "as_of_high_water": high_water.isoformat(),
                "as_of_withdrawn": [list(w) for w in withdrawn],
            })
            with connect(settings) as conn:
                comparisons = _compare(conn, publication,
                                       {t: f"{SCRATCH_SCHEMA}.{REBUILT[t]}" for t in REBUILT})
        finally:
            _empty(settings)
            shutil.rmtree(target, ignore_errors=True)
    lines += [c.line("rebuilt") for c in comparisons]
    if dbt_checksum and current != dbt_checksum:
        lines.append(f"note: the dbt project differs from the one that made publication {number} "
                     f"(checksum {dbt_checksum[:12]}, now {current[:12]})")
    return (0 if all(c.identical for c in comparisons) else 1), lines


def _empty(settings: Settings) -> None:
    with connect(settings) as conn:
        build_slot.clear(conn, SCRATCH_SCHEMA)
        conn.commit()
