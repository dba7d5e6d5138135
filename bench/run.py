"""`make bench` (issue 8): ContribFlow's ingest and daily transform against their yardsticks, in one run.

It starts its own PostgreSQL (pgserver, in a temporary folder), generates the source files once, and
measures on them, each in a fresh database:

- floor       server-side COPY of the already-clean rows (exactly those ingest loaded, record hash
              included, in the file's order) into a table with raw.contributions' columns and indexes
              (the yardstick of the targets); shown as well: the same rows sorted by record hash,
              and in the order ingest sends them, its unique index's (declaration_id, record_hash);
- baseline    the row-by-row way (bench/baseline.py), measured on the smallest size and extrapolated
              by its rows/s to the others (marked "extrapolated");
- ingest      the real `contribflow ingest` subprocess (validation, hashing, quarantine, dedup, load,
              ledger, audit rows); peak RSS is that process's own (wait4);
- re-ingest   the same file again (the ledger makes it a no-op);
- overlap     a second file for the same day whose first half repeats the first file (a re-send): only
              its new half may load (the same state for the same file date is a no-op; for another
              date it would be a new arrival, migration 0010);
- trace       `contribflow trace` of one re-sent declaration on the dbt cases' warehouse (queries only,
              in process), and the indexes its raw lookup's plan uses (issue 18);
- dbt         write-audit-publish of day N+1 after N days of 100k rows (`contribflow dbt-build`,
              `dbt-test`, `publish`), incremental and then --full-refresh; the fact's cost is the
              delta model's own execution_time (run_results.json) plus the publish transaction that
              applies it to marts (meta.etl_run), and dbt's fixed start-up (wall minus dbt's
              elapsed_time) is reported on its own. The publish transaction includes the
              publication's record and the as-of history (issue 27), kept from the day alone
              (checked: versions opened <= the day, hash incremental), and its growth from the
              smallest to the largest history is a target;
- reproduce   `contribflow reproduce --publication N` of the latest publication of the dbt cases
              (history + the day): a full dbt rebuild from raw into marts_reproduce, every row hashed
              (issue 27; checked: identical).

- daily run  the whole `contribflow run` of a day (10k and 100k rows, the file already landed),
              on a new run date each time after a first day, from start to summary: its wall time
              split into the steps' own work (ingest's in-step time, dbt's node execution —
              the union of the nodes' timings, as threads overlap them — and the publish
              transaction) and the rest, the run's fixed cost (processes, imports, dbt start-up);
              and each dbt stage's fixed cost (its process's wall minus its nodes) against the
              bare import of dbt and its adapter, timed in the same run (CPU seconds too).

- verify     `contribflow verify` (the audit trail's hash chain, migration 0015) over the records of
              ``--verify-runs`` runs (default 10,000), each as a daily run leaves them: 9 steps, a
              ledger entry, 5 quality issues, 20 dbt results, a freshness check, a published build
              and its SLA row, all sealed through the chain's triggers (the seal's time is shown
              too); verify must find the chain intact.

Each timed case runs ``--repeats`` times (default 3) from the same starting point and reports its
median (every sample is in the JSON): single runs on a shared machine drift by ±20 %, enough to flip
a target either way. Ingest repeats on a fresh database each time; dbt repeats on a copy of the same
database (CREATE DATABASE … TEMPLATE), so every sample starts from the same history.

Correctness is checked on the way: the baseline and ingest end with the same row count and the same
checksum of record_hash; the overlap file loads exactly its new rows; the incremental fact table
equals the full refresh. The table is printed and the figures written as JSON (git-ignored).

Timings on a shared machine are noisy: compare the ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import psycopg
from psycopg import sql

from contribflow.contract import file_name
from contribflow.generate import declaration, rows_for, write_file
from contribflow.ingest.load import RAW_COLUMNS
from contribflow.local import embedded

ROOT = Path(__file__).resolve().parents[1]
CONTRIBFLOW = [sys.executable, "-m", "contribflow"]
BENCH_KEY = "bench-pseudonym-key-not-a-secret"
DAY = dt.date(2026, 1, 1)
DAILY_ROWS = 100_000
DEFECT_RATE = 0.001
# The floor's orders, each with its case and note: the file's (the yardstick of every "x floor"),
# the record hash's (issue 21's yardstick), and the order ingest sends each chunk in, raw's unique
# index's (recordhash.load_order).
_FLOORS = (
    ("source_line", "floor (server COPY)", "clean rows in file order, raw's columns and indexes"),
    ("record_hash", "floor, rows sorted by hash", "the same rows in record_hash order"),
    ('declaration_id COLLATE "C", record_hash', "floor, rows in load order",
     "the same rows in the unique index's order (declaration_id, record_hash), as ingest sends them"),
)
CHECKSUM = "md5(string_agg(record_hash::text, '' ORDER BY record_hash))"
_FOREIGN_SELECTORS = ("CONTRIBFLOW_DSN", "PGSERVICE", "PGHOSTADDR", "PGPORT", "PGPASSWORD",
                      "PGOPTIONS", "CONTRIBFLOW_RUN_ID", "CONTRIBFLOW_OUTPUTS_DIR")


@dataclass
class Measure:
    case: str
    rows: int
    wall_s: float
    """The median of ``samples`` when the case was repeated."""
    peak_rss_mb: float | None = None
    """The highest of the repeats."""
    floor_s: float | None = None
    extrapolated: bool = False
    note: str = ""
    samples: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, case: str, rows: int, samples: list[float], **fields) -> Measure:
        return cls(case, rows, statistics.median(samples), samples=samples, **fields)

    @property
    def spread(self) -> str:
        return f"{min(self.samples):.2f}-{max(self.samples):.2f} s" if len(self.samples) > 1 else ""

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.wall_s if self.wall_s else 0.0

    @property
    def vs_floor(self) -> float | None:
        return self.wall_s / self.floor_s if self.floor_s else None

    def as_dict(self) -> dict:
        return {**asdict(self), "rows_per_s": round(self.rows_per_s), "vs_floor":
                None if self.vs_floor is None else round(self.vs_floor, 3)}


class _DbtSample(NamedTuple):
    publish_s: float
    """The publish transaction alone (meta.etl_run details)."""
    fct_s: float
    """The fact delta model's own execution_time (run_results.json) plus the publish transaction."""
    wall_s: float
    rss_mb: float
    startup_s: float
    fct_rows: tuple[int, str]
    """Row count and md5 of the fact table it left."""


class _RunSample(NamedTuple):
    wall_s: float
    work_s: float
    fixed_s: float
    dbt_fixed: dict[str, float]
    """dbt-build and dbt-test: the stage process's wall seconds minus its nodes'."""
    dbt_cpu: dict[str, float]
    """dbt-build and dbt-test: the stage process's CPU seconds."""
    parts: dict[str, float]


@dataclass
class Target:
    name: str
    measured: str
    ok: bool


LARGE = 1_000_000
"""Above this many rows (a file, or history), a case runs ``large_repeats`` times: one sample of a
10M case takes minutes, and its figures are far above a shared machine's noise."""


class Bench:
    def __init__(self, work: Path, repeats: int = 3, large_repeats: int = 1) -> None:
        self.work = work
        self.repeats = repeats
        self.large_repeats = large_repeats
        self.files = work / "files"
        self.files.mkdir()
        self.server = embedded.start(work / "pg")
        self.exports = work / "exports"
        self.exports.mkdir()
        os.chmod(self.exports, 0o777)  # the server (its own user when run as root) writes here
        self.measures: list[Measure] = []
        self.checks: list[Target] = []

    def connect(self, db: str) -> psycopg.Connection:
        return psycopg.connect(host=self.server["PGHOST"], user=self.server["PGUSER"], dbname=db,
                               autocommit=True)

    def database(self, name: str) -> dict[str, str]:
        """A new, migrated database (and an empty landing folder) for ``name``."""
        with self.connect(self.server["PGDATABASE"]) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
        env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_SELECTORS}
        env.update(self.server, PGDATABASE=name,
                   CONTRIBFLOW_LANDING_DIR=str(self.work / f"landing-{name}"),
                   CONTRIBFLOW_STATE_DIR=str(self.work / f"state-{name}"),
                   CONTRIBFLOW_DBT_PROJECT_DIR=str(ROOT / "dbt"),
                   CONTRIBFLOW_DBT_TARGET_DIR=str(self.work / f"dbt-{name}"),
                   CONTRIBFLOW_PSEUDONYM_KEY=BENCH_KEY)
        shutil.rmtree(env["CONTRIBFLOW_LANDING_DIR"], ignore_errors=True)
        shutil.rmtree(env["CONTRIBFLOW_STATE_DIR"], ignore_errors=True)
        Path(env["CONTRIBFLOW_LANDING_DIR"]).mkdir()
        self.run(["init-db"], env)
        return env

    def repeats_for(self, rows: int) -> int:
        return self.repeats if rows <= LARGE else self.large_repeats

    def drop_database(self, name: str) -> None:
        """Drop a database whose cases are measured: autovacuum would otherwise go on working
        through its fresh rows (millions, after the 10M cases) while the next cases are timed."""
        with self.connect(self.server["PGDATABASE"]) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def copy_database(self, source: str, target: str) -> None:
        """``target`` as an exact copy of ``source`` (no connection may be open on ``source``)."""
        with self.connect(self.server["PGDATABASE"]) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{target}" TEMPLATE "{source}" STRATEGY FILE_COPY')

    def run(self, args: list[str], env: dict[str, str], command: list[str] | None = None,
            run_id: str | None = None) -> tuple[float, float]:
        """Run a subprocess; its wall seconds and its own peak RSS in MB (from wait4)."""
        env = dict(env, CONTRIBFLOW_RUN_ID=run_id or f"bench-{args[0]}-{time.time_ns()}")
        log = self.work / "subprocess.log"
        with open(log, "ab") as out:
            started = time.perf_counter()
            proc = subprocess.Popen((command or CONTRIBFLOW) + args, env=env, stdout=out, stderr=out)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            tail = log.read_text(errors="replace")[-3000:]
            raise SystemExit(f"bench: {' '.join(args)} failed (exit {proc.returncode}):\n{tail}")
        return wall, usage.ru_maxrss / 1024

    def checkpoint(self, env: dict[str, str]) -> None:
        """Flush what earlier steps wrote, so it is not charged to the next measurement."""
        with self.connect(env["PGDATABASE"]) as conn:
            conn.execute("CHECKPOINT")

    def ingest(self, env: dict[str, str], day: dt.date) -> tuple[float, float]:
        path = Path(env["CONTRIBFLOW_LANDING_DIR"]) / file_name(day)
        self.checkpoint(env)
        return self.run(["ingest", "--date", day.isoformat(), "--file", str(path)], env)

    def ledger(self, env: dict[str, str], name: str, latest: bool = False) -> tuple[int, int, int]:
        """The ledger's counts of the first (or the latest) load of a file name."""
        with self.connect(env["PGDATABASE"]) as conn:
            return conn.execute(
                "SELECT rows_in, rows_loaded, rows_rejected FROM meta.source_file "
                "WHERE file_name = %s AND outcome = 'LOADED' ORDER BY id " + ("DESC " if latest else "")
                + "LIMIT 1", (name,)).fetchone()

    def check(self, name: str, measured: str, ok: bool) -> None:
        self.checks.append(Target(name, measured, ok))
        if not ok:
            print(f"bench: CHECK FAILED: {name}: {measured}", file=sys.stderr)

    # --- verify ---------------------------------------------------------------------------------

    VERIFY_BATCH = 500
    """Runs sealed per transaction while the records are made."""

    def verify_cases(self, runs: int) -> None:
        """``contribflow verify`` over ``runs`` runs' records (what a daily run writes to meta)."""
        env = self.database(f"bench_verify_{runs}")
        started = time.perf_counter()
        with self.connect(env["PGDATABASE"]) as conn:
            for first in range(0, runs, self.VERIFY_BATCH):
                last = min(first + self.VERIFY_BATCH, runs)
                with conn.transaction():
                    conn.execute(_VERIFY_RECORDS, {"first": first, "last": last - 1})
            entries = conn.execute("SELECT count(*) FROM meta.audit_chain").fetchone()[0]
        sealed = time.perf_counter() - started
        self.checkpoint(env)
        walls = [self.run(["verify"], env)[0] for _ in range(self.repeats_for(runs * 100))]
        name = f"verify {_short(runs) if runs >= 1000 else runs} runs"
        self.measures.append(Measure.of(name, entries, walls, note=f"{entries:,} chain entries; "
                                        f"sealing them took {sealed:.1f}s ({entries / sealed:,.0f}/s)"))
        self.check(f"{name}: intact", f"exit 0 over {entries:,} entries", True)  # run() exits on non-zero
        self.drop_database(f"bench_verify_{runs}")

    # --- ingest ---------------------------------------------------------------------------------

    def ingest_cases(self, size: int, baseline_rate: float | None) -> float:
        """Every ingest measurement for one file size; returns the baseline's rows/s."""
        source = self.files / file_name(DAY)
        write_file(source, rows_for(DAY, size, 42, DEFECT_RATE))
        walls, peaks = [], []
        for _ in range(self.repeats_for(size)):
            env = self.database(f"bench_ingest_{size}")
            landing = Path(env["CONTRIBFLOW_LANDING_DIR"])
            first = landing / source.name
            os.link(source, first)
            wall, rss = self.ingest(env, DAY)
            walls.append(wall)
            peaks.append(rss)
        source.unlink()
        # The re-send of the same day: written aside now, put in place of the first file (ingest reads
        # only files directly in the landing folder) for its own run, then the first file is back
        # for the baseline.
        overlap = self.files / "resent" / file_name(DAY)
        overlap.parent.mkdir(exist_ok=True)
        overlap.unlink(missing_ok=True)  # the previous size's re-send
        write_file(overlap, _overlapping_rows(first, size))

        rows_in, loaded, rejected = self.ledger(env, first.name)
        floor = self.floor(env, first.name, size)
        self.measures.append(Measure.of("ingest", size, walls, peak_rss_mb=max(peaks), floor_s=floor,
                                        note=f"{loaded} loaded, {rejected} quarantined"))
        self.check(f"ingest {size}: nothing lost", f"{loaded} + {rejected} of {rows_in}",
                   loaded + rejected == rows_in == size)

        with self.connect(env["PGDATABASE"]) as conn:
            before = conn.execute("SELECT count(*) FROM raw.contributions").fetchone()[0]
        wall, rss = self.ingest(env, DAY)
        with self.connect(env["PGDATABASE"]) as conn:
            after = conn.execute("SELECT count(*) FROM raw.contributions").fetchone()[0]
        self.measures.append(Measure.of("re-ingest", size, [wall], peak_rss_mb=rss, floor_s=floor,
                                        note="ledger: no-op"))
        self.check(f"re-ingest {size}: no row added", f"{before} -> {after}", before == after)

        self.checkpoint(env)
        kept = self.files / "first" / first.name
        kept.parent.mkdir(exist_ok=True)
        os.replace(first, kept)
        os.replace(overlap, first)
        try:
            wall, rss = self.run(["ingest", "--date", DAY.isoformat(), "--file", str(first)], env)
        finally:
            os.replace(first, overlap)
            os.replace(kept, first)
        _, new_loaded, _ = self.ledger(env, overlap.name, latest=True)
        self.measures.append(Measure.of("overlap ½", size, [wall], peak_rss_mb=rss, floor_s=floor,
                                        note=f"{new_loaded} new rows loaded"))
        self.check(f"overlap {size}: only the new half loads", f"{new_loaded} loaded, {size // 2} new",
                   new_loaded == size // 2)

        if baseline_rate is None:
            baseline_rate = self.baseline(env, first, size, floor)
        else:
            self.measures.append(Measure("baseline (row by row)", size, size / baseline_rate,
                                         floor_s=floor, extrapolated=True, note="extrapolated by rows/s"))
        self.drop_database(env["PGDATABASE"])
        return baseline_rate

    def floor(self, env: dict[str, str], source: str, size: int) -> float:
        """Server-side COPY of the rows ingest loaded into an empty copy of raw.contributions."""
        clean = self.exports / f"clean_{size}.tsv"
        columns = ", ".join(RAW_COLUMNS)
        with self.connect(env["PGDATABASE"]) as conn:
            conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
            walls: dict[str, list[float]] = {}
            for order, _, _ in _FLOORS:
                conn.execute(sql.SQL(f"COPY (SELECT {columns} FROM raw.contributions WHERE source_file = {{}} "
                                     f"ORDER BY {order}) TO {{}}").format(source, str(clean)))
                for _ in range(self.repeats_for(size)):
                    conn.execute("CREATE TABLE bench.floor (LIKE raw.contributions INCLUDING ALL)")
                    conn.execute("CHECKPOINT")
                    started = time.perf_counter()
                    with conn.transaction():
                        conn.execute(sql.SQL(f"COPY bench.floor ({columns}) FROM {{}}").format(str(clean)))
                    walls.setdefault(order, []).append(time.perf_counter() - started)
                    rows = conn.execute("SELECT count(*) FROM bench.floor").fetchone()[0]
                    conn.execute("DROP TABLE bench.floor")
        clean.unlink()
        (file_order, case, note), *others = _FLOORS
        floor = Measure.of(case, rows, walls[file_order], note=note)
        floor.floor_s = floor.wall_s
        self.measures.append(floor)
        for order, case, note in others:
            self.measures.append(Measure.of(case, rows, walls[order], floor_s=floor.wall_s, note=note))
        return floor.wall_s

    def baseline(self, env: dict[str, str], path: Path, size: int, floor: float) -> float:
        walls, peaks = [], []
        for _ in range(self.repeats):
            with self.connect(env["PGDATABASE"]) as conn:
                conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
                conn.execute("DROP TABLE IF EXISTS bench.baseline")
                conn.execute("CREATE TABLE bench.baseline (LIKE raw.contributions INCLUDING ALL)")
            self.checkpoint(env)
            wall, rss = self.run([str(path), "bench.baseline"], env,
                                 command=[sys.executable, str(ROOT / "bench" / "baseline.py")])
            walls.append(wall)
            peaks.append(rss)
        measure = Measure.of("baseline (row by row)", size, walls, peak_rss_mb=max(peaks), floor_s=floor)
        self.measures.append(measure)
        with self.connect(env["PGDATABASE"]) as conn:
            ours = conn.execute(f"SELECT count(*), {CHECKSUM} FROM raw.contributions "
                                "WHERE source_file = %s AND run_id = (SELECT run_id FROM meta.source_file "
                                "WHERE file_name = %s AND outcome = 'LOADED' ORDER BY id LIMIT 1)",
                                (path.name, path.name)).fetchone()
            theirs = conn.execute(f"SELECT count(*), {CHECKSUM} FROM bench.baseline").fetchone()
        self.check(f"ingest {size} = baseline (rows, md5 of record hashes)",
                   f"{ours[0]} {ours[1]} vs {theirs[0]} {theirs[1]}", ours == theirs)
        return size / measure.wall_s

    # --- dbt ------------------------------------------------------------------------------------

    def publish_day(self, env: dict[str, str], day: str, extra: list[str]) -> tuple[float, float, float, float, float]:
        """dbt-build, dbt-test and publish of ``day`` as one run (write-audit-publish). Returns the
        build's wall seconds and peak RSS, the fact's cost — the delta model's own execution_time
        plus the publish transaction that applies it (and swaps dim) — and dbt's start-up."""
        run_id = f"bench-day-{day}-{time.time_ns()}"
        wall, rss = self.run(["dbt-build", "--date", day, *extra], env, run_id=run_id)
        run_results = json.loads((Path(env["CONTRIBFLOW_DBT_TARGET_DIR"]) / "run_results.json").read_text())
        delta = next(r for r in run_results["results"] if r["unique_id"].endswith(".fct_contributions_delta"))
        self.run(["dbt-test", "--date", day], env, run_id=run_id)
        self.run(["publish", "--date", day], env, run_id=run_id)
        with self.connect(env["PGDATABASE"]) as conn:
            publish_s = float(conn.execute("SELECT details->>'publish_s' FROM meta.etl_run WHERE run_id = %s "
                                           "AND step = 'publish'", (run_id,)).fetchone()[0])
        return wall, rss, delta["execution_time"] + publish_s, wall - run_results["elapsed_time"], publish_s

    def dbt_cases(self, history: int) -> None:
        """Write-audit-publish of day N+1 after N days of DAILY_ROWS rows, incremental and full refresh in turn,
        each on a fresh copy of the same history database."""
        env = self.database(f"bench_dbt_{history}")
        landing = Path(env["CONTRIBFLOW_LANDING_DIR"])
        days = max(1, history // DAILY_ROWS)
        started = time.perf_counter()
        for i in range(days + 1):
            day = DAY + dt.timedelta(days=i)
            write_file(landing / file_name(day), rows_for(day, DAILY_ROWS, 42, DEFECT_RATE))
            self.ingest(env, day)
            (landing / file_name(day)).unlink()
            if days - 2 <= i <= days - 1:
                # The first publication is a full build, whose delta (all of history) stays in
                # marts_build until the next build drops it; one ordinary day after it leaves the
                # measured day as every later day finds things: a day's delta to replace.
                self.publish_day(env, day.isoformat(), [])
        print(f"bench: {days} days of history and day {days + 1} loaded and built in "
              f"{time.perf_counter() - started:.0f}s", file=sys.stderr)
        next_day = (DAY + dt.timedelta(days=days)).isoformat()
        history_db = env["PGDATABASE"]
        pristine = f"{history_db}_pristine"
        self.copy_database(history_db, pristine)
        samples: dict[str, list[_DbtSample]] = {}
        kept: list[tuple[int, str]] = []
        for _ in range(self.repeats_for(history)):
            for mode, extra in (("incremental", []), ("full refresh", ["--full-refresh"])):
                self.copy_database(pristine, history_db)
                self.checkpoint(env)
                wall, rss, fct_s, startup_s, publish_s = self.publish_day(env, next_day, extra)
                with self.connect(history_db) as conn:
                    fct_rows = conn.execute(
                        "SELECT count(*), md5(string_agg(concat_ws('|', declaration_id, status, amount, "
                        "file_date, raw_loaded_at), ',' ORDER BY declaration_id)) FROM marts.fct_contributions"
                    ).fetchone()
                    if mode == "incremental":  # issue 27: the publication kept its history from the day alone
                        kept.append(conn.execute(
                            """SELECT (e.details->>'fct_contributions_versions_opened')::bigint, o.computed
                                 FROM meta.etl_run e, meta.publication p
                                 JOIN meta.publication_output o ON o.publication_id = p.id
                                  AND o.table_name = 'fct_contributions'
                                WHERE e.step = 'publish' ORDER BY e.id DESC, p.id DESC LIMIT 1""").fetchone())
                samples.setdefault(mode, []).append(_DbtSample(publish_s, fct_s, wall, rss, startup_s, tuple(fct_rows)))
        inc, full = samples["incremental"], samples["full refresh"]
        self.measures.append(Measure.of(
            f"dbt fct incremental @{_short(history)}", DAILY_ROWS, [s.fct_s for s in inc],
            peak_rss_mb=max(s.rss_mb for s in inc),
            note=f"dbt-build wall {statistics.median(s.wall_s for s in inc):.1f}s"))
        self.measures.append(Measure.of(
            f"dbt fct full refresh @{_short(history)}", history + DAILY_ROWS, [s.fct_s for s in full],
            peak_rss_mb=max(s.rss_mb for s in full),
            note=f"dbt-build wall {statistics.median(s.wall_s for s in full):.1f}s"))
        self.measures.append(Measure.of(f"publish of a 100k day @{_short(history)}", DAILY_ROWS,
                                        [s.publish_s for s in inc],
                                        note="the publish transaction (incremental), with its record and the "
                                             "as-of history"))
        self.check(f"publish @{_short(history)}: history and hashes from the day alone",
                   ", ".join(f"{opened} versions opened, hash {how}" for opened, how in kept),
                   all(opened <= DAILY_ROWS and how == "incremental" for opened, how in kept))
        self.reproduce_case(env, history)
        self.measures.append(Measure.of("dbt start-up per invocation", 0, [s.startup_s for s in inc + full],
                                        note="wall minus dbt's elapsed_time"))
        outcomes = {s.fct_rows for s in inc + full}
        self.check(f"dbt @{_short(history)}: incremental fct = full refresh",
                   " vs ".join(f"{n} rows {digest}" for n, digest in sorted(outcomes)), len(outcomes) == 1)
        self.trace_case(history_db, history, next_day)
        self.drop_database(pristine)
        self.drop_database(history_db)

    # --- reproduce (issue 27) ---------------------------------------------------------------------

    def reproduce_case(self, env: dict[str, str], history: int) -> None:
        """``contribflow reproduce`` of the latest publication the dbt cases left (history + one day,
        published by a full refresh): dbt rebuilds it from raw into the scratch schema, and every
        row of both marts is hashed and compared with the record."""
        with self.connect(env["PGDATABASE"]) as conn:
            latest, rows = conn.execute(
                "SELECT p.id, o.row_count FROM meta.publication p JOIN meta.publication_output o "
                "ON o.publication_id = p.id AND o.table_name = 'fct_contributions' ORDER BY p.id DESC LIMIT 1"
            ).fetchone()
        log = self.work / "subprocess.log"
        start = log.stat().st_size if log.exists() else 0
        self.checkpoint(env)
        wall, rss = self.run(["reproduce", "--publication", str(latest)], env)
        said = log.read_bytes()[start:].decode(errors="replace")
        self.measures.append(Measure.of(f"reproduce a publication @{_short(history)}", rows, [wall],
                                        peak_rss_mb=rss, note="dbt full refresh into marts_reproduce, "
                                                              "every row hashed"))
        self.check(f"reproduce @{_short(history)}: both marts identical to the record",
                   f"publication {latest}, {rows:,} fct rows", said.count(": identical (") == 2)

    # --- trace (issue 18) -------------------------------------------------------------------------

    def trace_case(self, db: str, history: int, day: str) -> None:
        """`contribflow trace` of one declaration that day ``day`` re-sent (two raw states or more), on the
        warehouse the dbt cases left (history + one day, published): the queries of trace.collect,
        in process, median of the repeats; and which indexes the plan of its raw lookup uses."""
        from contribflow.audit import trace

        with self.connect(db) as conn:
            conn.execute("ANALYZE raw.contributions")  # as autovacuum would have, on a settled warehouse
            prefix = "DEC_" + day.replace("-", "") + "_"
            # A row of that day's file with an earlier day's id: a re-sent declaration in a new state
            # (one re-sent unchanged is not stored again). Not timed: a scan of raw is fine here.
            resent = conn.execute(
                "SELECT declaration_id FROM raw.contributions WHERE file_date = %s::date "
                "AND NOT starts_with(declaration_id, %s) LIMIT 1", (day, prefix)).fetchone()[0]
            plans = {name: "\n".join(r[0] for r in conn.execute("EXPLAIN " + query, ([resent],)))
                     for name, query in (("raw", trace._RAW), ("staging", trace._STAGING), ("marts", trace._MART))}
            samples = []
            for _ in range(max(self.repeats, 3)):
                started = time.perf_counter()
                found = trace.collect(conn, declaration=resent)
                samples.append(time.perf_counter() - started)
            # Every arrival of the declaration is a raw state (a re-send on a later date is one too).
            arrivals = conn.execute("SELECT count(*) FROM raw.contributions WHERE declaration_id = %s",
                                    (resent,)).fetchone()[0]
        states = len(found["declarations"][0]["raw_states"])
        used = {name: sorted(set(re.findall(r"[Ii]ndex (?:Only )?Scan (?:Backward )?using (\S+)", plan)))
                for name, plan in plans.items()}
        scans = [name for name, plan in plans.items()
                 if re.search(r"Seq Scan on (contributions|fct_contributions)\b", plan)]
        indexes = "; ".join(f"{name}: {', '.join(i) or 'none'}" for name, i in used.items())
        self.measures.append(Measure.of(f"trace one declaration @{_short(history)}", 0, samples,
                                        note=f"{statistics.median(samples) * 1000:.1f} ms; {states} raw states; "
                                             f"indexes {indexes}"))
        self.check(f"trace @{_short(history)}: every raw state, raw/staging/marts through their indexes",
                   f"{states} states of {arrivals} in raw; {indexes}"
                   + (f"; SEQ SCAN in {', '.join(scans)}" if scans else ""),
                   "contributions_declaration_id_file_date_record_hash_revision_key" in used["raw"]
                   and states == arrivals >= 2 and not scans)

    # --- the whole daily run --------------------------------------------------------------------

    def bare_dbt_import(self) -> tuple[float, float]:
        """Median wall and CPU seconds of a process that only imports dbt and its adapter."""
        walls, cpus = [], []
        for _ in range(max(3, self.repeats)):
            started = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-c", "import dbt.cli.main, dbt.adapters.postgres"])
            _, status, usage = os.wait4(proc.pid, 0)
            walls.append(time.perf_counter() - started)
            cpus.append(usage.ru_utime + usage.ru_stime)
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit("bench: importing dbt failed")
        return statistics.median(walls), statistics.median(cpus)

    def daily_run(self, env: dict[str, str], day: dt.date, rows: int) -> _RunSample:
        """``contribflow run`` of ``day`` (its file landed beforehand), split into its steps' work
        and the rest."""
        landing = Path(env["CONTRIBFLOW_LANDING_DIR"])
        write_file(landing / file_name(day), rows_for(day, rows, 42, 0.01))
        self.checkpoint(env)
        run_id = f"bench-run-{day}-{time.time_ns()}"
        wall, _ = self.run(["run", "--date", day.isoformat(), "--no-generate"], env, run_id=run_id)
        stages = {s["stage"]: s for s in json.loads(
            (Path(env["CONTRIBFLOW_STATE_DIR"]) / "runs" / run_id / "stages.json").read_text())}
        with self.connect(env["PGDATABASE"]) as conn:
            steps = {step: (status, float(seconds or 0), details) for step, status, seconds, details in conn.execute(
                "SELECT step, status, duration_s, details FROM meta.etl_run WHERE run_id = %s", (run_id,))}
        failed = [s for s, (status, _, _) in steps.items() if status != "SUCCESS"]
        if failed or len(steps) < 7:
            raise SystemExit(f"bench: the run of {day} did not succeed: {steps}")
        parts = {"ingest": steps["ingest"][1],
                 "dbt-build nodes": float(steps["dbt-build"][2]["nodes_s"]),
                 "dbt-test nodes": float(steps["dbt-test"][2]["nodes_s"]),
                 "publish": float(steps["publish"][2]["publish_s"])}
        work = sum(parts.values())
        dbt_fixed = {s: stages[s]["wall_s"] - parts[f"{s} nodes"] for s in ("dbt-build", "dbt-test")}
        dbt_cpu = {s: stages[s]["cpu_s"] for s in ("dbt-build", "dbt-test")}
        return _RunSample(wall, work, wall - work, dbt_fixed, dbt_cpu, parts)

    def run_cases(self, rows: int, bare: tuple[float, float]) -> None:
        env = self.database(f"bench_run_{rows}")
        first = self.daily_run(env, DAY, rows)  # an empty state folder: dbt parses the whole project
        samples = [self.daily_run(env, DAY + dt.timedelta(days=i), rows) for i in range(1, self.repeats + 1)]
        n = _short(rows)
        self.measures.append(Measure.of(f"daily run {n}: wall", rows, [s.wall_s for s in samples],
                                        note=f"first run (full dbt parse) {first.wall_s:.1f}s"))
        self.measures.append(Measure.of(
            f"daily run {n}: steps' work", rows, [s.work_s for s in samples],
            note="; ".join(f"{k} {statistics.median(s.parts[k] for s in samples):.2f}" for k in first.parts)))
        self.measures.append(Measure.of(f"daily run {n}: fixed cost", 0, [s.fixed_s for s in samples],
                                        note="wall minus the steps' work"))
        for stage in ("dbt-build", "dbt-test"):
            self.measures.append(Measure.of(
                f"{stage} fixed cost @{n}", 0, [s.dbt_fixed[stage] for s in samples],
                note=f"{statistics.median(s.dbt_fixed[stage] - bare[0] for s in samples):+.2f}s vs bare import; "
                     f"CPU {statistics.median(s.dbt_cpu[stage] for s in samples):.2f}s vs import's {bare[1]:.2f}s"))
        self.drop_database(env["PGDATABASE"])


_VERIFY_RECORDS = """
WITH r AS (SELECT n, 'bench-run-' || n AS run_id, DATE '2000-01-01' + n AS day
             FROM generate_series(%(first)s::int, %(last)s::int) AS n),
steps AS (
    INSERT INTO meta.etl_run (run_id, step, logical_date, status, finished_at, duration_s, rows_in, rows_loaded,
                              rows_rejected, source_file, ran_on, details)
    SELECT run_id, step, day, 'SUCCESS', clock_timestamp(), 1.5, 100000, 99900, 100,
           'contributions_' || to_char(day, 'YYYYMMDD') || '.csv', 'bench', jsonb_build_object('n', n)
      FROM r, unnest(ARRAY['init-db', 'generate', 'pick', 'ingest', 'dbt-build', 'dbt-test', 'publish',
                           'purge-check', 'finish']) AS step
    RETURNING 1),
ledger AS (
    INSERT INTO meta.source_file (file_name, sha256, file_date, size_bytes, rows_in, rows_loaded, rows_rejected,
                                  outcome, run_id)
    SELECT 'contributions_' || to_char(day, 'YYYYMMDD') || '.csv', md5(run_id) || md5(run_id), day, 8000000,
           100000, 99900, 100, 'LOADED', run_id FROM r
    RETURNING 1),
issues AS (
    INSERT INTO meta.data_quality_issue (run_id, source_file, source_sha256, source_line, rule, column_name,
                                         failing_value)
    SELECT run_id, 'f.csv', md5(run_id), i, 'accepted_values', 'status', 'PAYED' FROM r, generate_series(1, 5) i
    RETURNING 1),
dbt AS (
    INSERT INTO meta.dbt_node_result (run_id, step, invocation_id, unique_id, resource_type, status,
                                      execution_time_s)
    SELECT run_id, 'dbt-test', run_id, 'test.contribflow.t' || i, 'test', 'pass', 0.1
      FROM r, generate_series(1, 20) i
    RETURNING 1),
fresh AS (
    INSERT INTO meta.source_freshness (run_id, source, status) SELECT run_id, 'raw.contributions', 'pass' FROM r
    RETURNING 1),
builds AS (
    INSERT INTO meta.mart_build (run_id, logical_date, status, published_at)
    SELECT run_id, day, 'PUBLISHED', clock_timestamp() FROM r
    RETURNING 1)
INSERT INTO meta.run_sla (run_id, logical_date, workflow_status) SELECT run_id, day, 'Succeeded' FROM r
"""
"""One batch of runs' meta records (each a ``bench-run-<n>``), sealed by the chain's triggers."""


def _overlapping_rows(previous: Path, size: int):
    """The second half of ``previous``'s lines as they were, then ``size // 2`` new declarations."""
    day = DAY + dt.timedelta(days=1)  # new declarations' ids, not the file's date
    with open(previous, encoding="utf-8") as fh:
        next(fh)
        for i, line in enumerate(fh):
            if i >= size - size // 2:
                yield line.rstrip("\n").split(",")
    for i in range(size // 2):
        yield declaration(43, day, i)


def _short(rows: int) -> str:
    return f"{rows // 1_000_000}M" if rows % 1_000_000 == 0 else f"{rows // 1000}k"


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(int(mem) / 2**20, 1),
            "python": platform.python_version(), "load_average_at_start": os.getloadavg()}


def targets(bench: Bench, sizes: list[int], histories: list[int]) -> list[Target]:
    def find(case: str, rows: int) -> Measure | None:
        return next((m for m in bench.measures if m.case == case and m.rows == rows), None)

    out: list[Target] = []
    size = 1_000_000 if 1_000_000 in sizes else max(sizes, default=0)
    ingest, base = find("ingest", size), find("baseline (row by row)", size)
    def floor_in(case: str) -> Measure | None:  # its rows: those loaded, not the size
        return next((m for m in bench.measures if ingest and m.case == case and m.floor_s == ingest.floor_s), None)

    hash_floor, load_floor = floor_in("floor, rows sorted by hash"), floor_in("floor, rows in load order")
    if ingest and hash_floor and load_floor:
        ratio = ingest.wall_s / hash_floor.wall_s
        out.append(Target(f"ingest {_short(size)} <= 1.0x the hash-ordered floor", f"{ratio:.2f}x "
                          f"({ingest.vs_floor:.2f}x the file-order floor, "
                          f"{ingest.wall_s / load_floor.wall_s:.2f}x the load-order floor)", ratio <= 1.0))
    if ingest and base:
        speedup = base.wall_s / ingest.wall_s
        out.append(Target(f"ingest {_short(size)} >= 20x faster than baseline",
                          f"{speedup:.0f}x" + (" (baseline extrapolated)" if base.extrapolated else ""),
                          speedup >= 20))
    rss = {m.rows: m.peak_rss_mb for m in bench.measures if m.case == "ingest"}
    if rss:
        out.append(Target("ingest peak RSS <= 200 MB", ", ".join(f"{_short(r)}: {v:.0f} MB" for r, v in rss.items()),
                          all(v <= 200 for v in rss.values())))
    if 1_000_000 in rss and 10_000_000 in rss:
        growth = rss[10_000_000] / rss[1_000_000]
        out.append(Target("peak RSS flat from 1M to 10M (<= 1.25x)", f"{growth:.2f}x", growth <= 1.25))
    reingest = find("re-ingest", size)
    if reingest:
        out.append(Target(f"re-ingest {_short(size)} <= 0.5 s", f"{reingest.wall_s:.2f} s", reingest.wall_s <= 0.5))
    bare = find("bare import of dbt + adapter", 0)
    for m in bench.measures:
        if m.case.startswith("daily run") and m.case.endswith("fixed cost"):
            out.append(Target(f"{m.case} <= 6 s", f"{m.wall_s:.2f} s", m.wall_s <= 6))
        if bare and m.case.startswith("dbt-") and " fixed cost @" in m.case:
            above = m.wall_s - bare.wall_s
            out.append(Target(f"{m.case} <= 1.5 s above the bare import", f"{above:+.2f} s", above <= 1.5))
    fct = {}
    for history in histories:
        inc = next(m for m in bench.measures if m.case == f"dbt fct incremental @{_short(history)}")
        full = next(m for m in bench.measures if m.case == f"dbt fct full refresh @{_short(history)}")
        fct[history] = inc.wall_s
        share = inc.wall_s / full.wall_s
        if history == 1_000_000:
            out.append(Target("fct incremental <= 35% of full refresh @1M", f"{share:.0%}", share <= 0.35))
    published = {h: m for h in histories for m in bench.measures if m.case == f"publish of a 100k day @{_short(h)}"}
    if len(published) > 1:
        low, high = min(published), max(published)
        growth = published[high].wall_s / published[low].wall_s
        out.append(Target(f"publish @{_short(high)} <= 1.5x publish @{_short(low)}", f"{growth:.2f}x", growth <= 1.5))
    for m in bench.measures:
        if m.case.startswith("trace one declaration @"):
            out.append(Target(f"{m.case} <= 50 ms", f"{m.wall_s * 1000:.1f} ms", m.wall_s <= 0.050))
    if 1_000_000 in fct and 10_000_000 in fct:
        growth = fct[10_000_000] / fct[1_000_000]
        out.append(Target("fct incremental @10M <= 1.5x its @1M", f"{growth:.2f}x", growth <= 1.5))
    return out


def table(measures: list[Measure]) -> str:
    head = f"{'case':<32} {'rows':>10} {'wall s':>8} {'rows/s':>10} {'peak RSS MB':>11} {'x floor':>8}  note"
    lines = [head, "-" * len(head)]
    for m in measures:
        rss = f"{m.peak_rss_mb:.0f}" if m.peak_rss_mb else "-"
        ratio = f"{m.vs_floor:.2f}" if m.vs_floor and m.case != "floor (server COPY)" else "-"
        rate = f"{m.rows_per_s:,.0f}" if m.rows else "-"
        note = "; ".join(filter(None, ["extrapolated" if m.extrapolated else "",
                                       f"median of {len(m.samples)}: {m.spread}" if m.spread else "", m.note]))
        lines.append(f"{m.case:<32} {m.rows:>10,} {m.wall_s:>8.2f} {rate:>10} {rss:>11} {ratio:>8}  {note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=os.environ.get("BENCH_SIZES", "100000 1000000"),
                        help="source file sizes in rows (default: '100000 1000000'; add 10000000)")
    parser.add_argument("--history", default=os.environ.get("BENCH_HISTORY", "1000000"),
                        help="rows of history before the measured dbt day (default 1000000; add 10000000)")
    parser.add_argument("--runs", default=os.environ.get("BENCH_RUNS", "10000 100000"),
                        help="rows of the days whose whole `contribflow run` is timed "
                             "(default '10000 100000'; '' for none)")
    parser.add_argument("--verify-runs", default=os.environ.get("BENCH_VERIFY_RUNS", "10000"),
                        help="runs' meta records `contribflow verify` walks (default 10000; '' for none)")
    parser.add_argument("--repeats", type=int, default=int(os.environ.get("BENCH_REPEATS", "3")),
                        help="runs of each timed case, the median reported (default 3)")
    parser.add_argument("--large-repeats", type=int, default=int(os.environ.get("BENCH_REPEATS_LARGE", "1")),
                        help=f"runs of each case above {LARGE:,} rows (default 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.replace(",", " ").split())
    histories = sorted(int(h) for h in args.history.replace(",", " ").split())
    runs = sorted(int(r) for r in args.runs.replace(",", " ").split())
    verify_runs = sorted(int(r) for r in args.verify_runs.replace(",", " ").split())

    at_start = machine()
    work = Path(tempfile.mkdtemp(prefix="cf-bench-"))
    os.chmod(work, 0o755)
    started = time.time()
    bench = Bench(work, max(1, args.repeats), max(1, args.large_repeats))
    try:
        if runs:
            bare = bench.bare_dbt_import()
            bench.measures.append(Measure("bare import of dbt + adapter", 0, bare[0],
                                          note="a process importing only dbt.cli.main and "
                                               f"dbt.adapters.postgres; CPU {bare[1]:.2f}s"))
        for rows in runs:
            print(f"bench: daily runs of {rows:,} rows", file=sys.stderr)
            bench.run_cases(rows, bare)
        rate = None
        for size in sizes:
            print(f"bench: ingest cases for {size:,} rows", file=sys.stderr)
            rate = bench.ingest_cases(size, rate)
        for history in histories:
            print(f"bench: dbt cases after {history:,} rows of history", file=sys.stderr)
            bench.dbt_cases(history)
        for count in verify_runs:
            print(f"bench: verify over {count:,} runs' records", file=sys.stderr)
            bench.verify_cases(count)
    finally:
        embedded.stop(work / "pg")
        shutil.rmtree(work, ignore_errors=True)

    met = targets(bench, sizes, histories)
    report = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True).stdout.strip(),
        "machine": {**at_start, "load_average_at_end": os.getloadavg()},
        "duration_s": round(time.time() - started),
        "sizes": sizes, "histories": histories, "runs": runs, "verify_runs": verify_runs, "repeats": bench.repeats,
        "large_repeats": bench.large_repeats, "defect_rate": DEFECT_RATE,
        "measures": [m.as_dict() for m in bench.measures],
        "checks": [asdict(c) for c in bench.checks],
        "targets": [asdict(t) for t in met],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    print(table(bench.measures))
    print()
    for item in bench.checks + met:
        print(f"  [{'ok' if item.ok else 'MISS'}] {item.name}: {item.measured}")
    print(f"\nmachine: {report['machine']['cpu']}, {report['machine']['cores']} cores, "
          f"load {report['machine']['load_average_at_start'][0]:.1f} at start; JSON: {args.out}")
    return 0 if all(c.ok for c in bench.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
