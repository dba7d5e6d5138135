"""Correct over time: sequences of days run through the whole graph, each day's published marts
compared row for row with what the files say (tests/days.py works that out from the files alone).

A day is not a file: a day's file corrected and then sent back as it was, a corrected day whose
first version is withdrawn, a rejected day then a good one and the rejected day re-processed late,
and readers that keep reading while days are published. (Reversals over days, late files, the
largest amounts and withdrawals of whole days are in tests/test_state_over_time.py.)
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

from contribflow.local import runner
from contribflow.settings import Settings

from conftest import TEST_KEY
from days import Expectation, Row, Source, assert_published

pytestmark = pytest.mark.integration

D1, D2, D3 = (dt.date(2026, 11, d) for d in (2, 3, 4))


def run_day(day: dt.date, **env: str) -> dict[str, str]:
    """``contribflow run --date day --no-generate``: every stage of the graph, as `make run` runs it."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        results = runner.run_graph(Settings.from_env(), {"run-date": day.isoformat(), "generate": "false"})
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return {r.stage: r.state for r in results}


def ok(states: dict[str, str]) -> bool:
    return all(s in ("ok", "skipped") for s in states.values())


@pytest.fixture
def source(database) -> Source:
    return Source(Path(database["CONTRIBFLOW_LANDING_DIR"]))


@pytest.fixture
def expect() -> Expectation:
    return Expectation(TEST_KEY.encode())


def others(day: dt.date, n: int = 3, taxpayer: str = "TAXP_20002") -> list[Row]:
    """A few unrelated declarations first sent on ``day``."""
    return [Row(f"DEC_{day:%Y%m%d}_{i:06d}", taxpayer, day.isoformat(), f"{10 * i}.5", status="DUE",
                country=("LU", "FR", "DE", "BE")[i % 4]) for i in range(1, n + 1)]


def test_a_days_file_corrected_in_place_twice_and_back(database, sql, source, expect):
    """The source rewrites a day's file (v1 DUE, v2 PAID, v3 DUE again), the day re-run each time:
    the last version is what the marts show, and rows that did not change are not added again."""
    x = Row("DEC_20261102_900002", "TAXP_30004", status="DUE")
    rest = others(D1, 4)
    for version in ([x, *rest], [x.but(status="PAID"), *rest], [x, *rest]):
        expect.load(source.send(D1, version))
        assert ok(run_day(D1))
        assert_published(sql, expect, "a re-sent version of day 1")
    assert sql("select status from marts.fct_contributions where declaration_id = %s", (x.declaration_id,)) == [("DUE",)]
    assert sql("select count(*) from raw.contributions where declaration_id = any(%s)",
               ([r.declaration_id for r in rest],)) == [(len(rest),)]


def test_a_corrected_day_then_its_first_version_withdrawn(database, sql, source, expect, people):
    """The source corrects a day's file in place (v2 repeats x, drops y, adds z); the operator then
    withdraws v1. x stays, now from v2 (which repeated it: stored once, the repeat recorded); y,
    only in v1, leaves the marts; raw keeps every row."""
    from contribflow import cli

    x = Row("DEC_20261102_900005", "TAXP_30007", status="DUE")
    y = Row("DEC_20261102_900006", "TAXP_30007", status="DUE", amount="2.0")
    z = Row("DEC_20261102_900007", "TAXP_30008", status="PAID", amount="3.0")
    v1 = source.send(D1, [x, y])
    expect.load(v1)
    assert ok(run_day(D1))
    v2 = source.send(D1, [z, x])
    expect.load(v2)
    assert ok(run_day(D1))
    assert_published(sql, expect, "the corrected day")  # x is named from v2, its latest mention
    assert sql("select count(*) from raw.contributions") == [(3,)]  # x stored once
    first = sql("select run_id from meta.source_file where outcome = 'LOADED' order by id")[0][0]
    request = people.approved(["withdraw-file", "--date", D1.isoformat(), "--run", first,
                               "--reason", "v1 was a wrong export"])
    assert cli.main(["apply", str(request), "--no-publish"]) == 0
    expect.withdraw(v1)
    assert ok(run_day(D1))
    assert_published(sql, expect, "v1 withdrawn")
    assert sql("select declaration_id from marts.fct_contributions order by 1") == [(x.declaration_id,),
                                                                                 (z.declaration_id,)]
    assert sql("select count(*) from raw.contributions") == [(3,)]


def test_a_rejected_day_then_a_good_day_then_the_rejected_day_reprocessed_late(database, sql, source, expect,
                                                                               monkeypatch):
    x = Row("DEC_20261102_900003", "TAXP_30005", status="DUE")
    expect.load(source.send(D1, [x, *others(D1)]))
    assert ok(run_day(D1))
    bad = [x.but(status="PAID"), "DEC_20261103_800001,TAXP_1,2026-11-03,-1,EUR,INCOME_TAX,DUE,LU",
           "DEC_20261103_800002,TAXP_1,2026-11-03,1,USD,INCOME_TAX,DUE,LU", *others(D2, 2)]
    day2 = source.send(D2, bad)
    states = run_day(D2)  # 2 of 5 rows bad: over the 5% threshold, the file is rejected whole
    assert states["ingest"] == "failed" and states["publish"] == "blocked"
    assert_published(sql, expect, "the rejected day 2")
    expect.load(source.send(D3, [x.but(status="CANCELLED"), *others(D3)]))
    assert ok(run_day(D3))
    assert_published(sql, expect, "day 3 after the rejected day 2")
    # The runbook's re-processing of the rejected day, with a threshold for that one run: day 2 is
    # older than day 3, so it must not take x back from CANCELLED.
    expect.load(day2)
    assert ok(run_day(D2, CONTRIBFLOW_REJECT_THRESHOLD="0.5"))
    assert_published(sql, expect, "day 2 re-processed after day 3")
    assert sql("select status from marts.fct_contributions where declaration_id = %s",
               (x.declaration_id,)) == [("CANCELLED",)]


def _reader(conninfo: dict, stop: threading.Event, seen: list, errors: list) -> None:
    """Reads both marts in REPEATABLE READ snapshots, over and over, until told to stop: in every
    snapshot, dim_taxpayer must be exactly the aggregate of fct_contributions."""
    check = """
        with agg as (
            select taxpayer_key, count(*) as declarations,
                   coalesce(sum(amount) filter (where status = 'PAID' and contribution_type <> 'REFUND'), 0) as paid,
                   coalesce(sum(amount) filter (where status = 'DUE'), 0) as due
              from marts.fct_contributions group by taxpayer_key)
        select (select count(*) from marts.fct_contributions),
               (select count(*) from marts.dim_taxpayer),
               (select count(*) from agg full join marts.dim_taxpayer d using (taxpayer_key)
                 where d.taxpayer_key is null or agg.taxpayer_key is null or agg.declarations <> d.declarations
                    or agg.paid <> d.amount_paid or agg.due <> d.amount_due)"""
    with psycopg.connect(**conninfo) as conn:
        while not stop.is_set():
            try:
                with conn.transaction():
                    conn.execute("set transaction isolation level repeatable read")
                    if not conn.execute("select to_regclass('marts.dim_taxpayer') is not null").fetchone()[0]:
                        continue
                    first = conn.execute("select count(*), coalesce(sum(amount), 0) from marts.fct_contributions"
                                         ).fetchone()
                    time.sleep(0.05)  # let a publish commit between the two reads of one snapshot
                    fct, dim, mismatched = conn.execute(check).fetchone()
                    again = conn.execute("select count(*), coalesce(sum(amount), 0) from marts.fct_contributions"
                                         ).fetchone()
                    seen.append((fct, dim))
                    if mismatched or again != first or fct != first[0] or (fct and not dim):
                        errors.append(f"inconsistent snapshot: fct {first} then {again}, dim {dim}, "
                                      f"{mismatched} taxpayers differ from fct's aggregate")
            except psycopg.Error as exc:  # a reader must never be broken by a publish
                errors.append(f"{type(exc).__name__}: {exc}")
                conn.rollback()


def test_readers_in_repeatable_read_and_pg_dump_during_days_of_publishing(database, sql, source, expect, tmp_path):
    from contribflow.local import embedded

    conninfo = {"host": database["PGHOST"], "user": database["PGUSER"], "dbname": database["PGDATABASE"]}
    expect.load(source.send(D1, others(D1, 40)))
    assert ok(run_day(D1))
    stop, seen, errors = threading.Event(), [], []
    readers = [threading.Thread(target=_reader, args=(conninfo, stop, seen, errors)) for _ in range(2)]
    for reader in readers:
        reader.start()
    dumps = []

    def dump_loop() -> None:
        while not stop.is_set():
            out = tmp_path / f"marts-{len(dumps)}.sql"
            done = subprocess.run([str(embedded.bin_dir() / "pg_dump"), "-h", database["PGHOST"], "-U",
                                   database["PGUSER"], "-d", database["PGDATABASE"], "--schema", "marts",
                                   "--data-only", "-f", str(out)], capture_output=True, text=True)
            dumps.append((done.returncode, done.stderr, out))

    dumper = threading.Thread(target=dump_loop)
    dumper.start()
    try:
        for day, rows in ((D2, others(D2, 40) + [r.but(status="PAID") for r in others(D1, 20)]),
                          (D3, others(D3, 40) + [r.but(status="CANCELLED") for r in others(D1, 10)])):
            expect.load(source.send(day, rows))
            assert ok(run_day(day))
    finally:
        stop.set()
        for thread in (*readers, dumper):
            thread.join()
    assert not errors, errors[:3]
    assert len({s for s in seen}) >= 2, "the readers must have seen more than one publication"
    assert_published(sql, expect, "days published under readers")
    assert dumps and all(code == 0 for code, _, _ in dumps), [e for c, e, _ in dumps if c][:2]
    # Each dump holds one whole publication: its fct and dim agree, as in every reader's snapshot.
    for _, _, path in dumps:
        text = path.read_text()
        fct_rows = _copy_block(text, "marts.fct_contributions")
        dim_rows = _copy_block(text, "marts.dim_taxpayer")
        per_taxpayer = {}
        for row in fct_rows:
            per_taxpayer[row[1]] = per_taxpayer.get(row[1], 0) + 1
        assert {r[0]: int(r[4]) for r in dim_rows} == per_taxpayer, path.name


def _copy_block(dump: str, table: str) -> list[list[str]]:
    """The rows of ``table``'s COPY block in a plain pg_dump."""
    lines = dump.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"COPY {table} "))
    end = lines.index("\\.", start)
    return [line.split("\t") for line in lines[start + 1:end]]
