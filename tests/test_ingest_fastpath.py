"""The fast paths of ingest (issue 8) give exactly what the exact, line-by-line path gives.

The plain-block reader, the comma-delimited COPY of plain lines and the run-merging duplicate check
exist for speed only; these tests pin them to the slow, obviously correct behaviour.
"""

from __future__ import annotations

import datetime as dt
import random

import numpy as np
import pandas as pd
import psycopg
import pytest

from contribflow import cli
from contribflow.contract import COLUMNS
from contribflow.errors import FileRefused
from contribflow.ingest.load import SeenKeys
from contribflow.ingest.reader import chunks, records

from helpers import good_row, write_source

DAY = dt.date(2026, 11, 24)
HEADER = ",".join(COLUMNS) + "\n"

PIECES = [
    ",".join(good_row(1)) + "\n",
    "\n",
    "a,b\n",
    'x,"q\nq",3,4,5,6,7,8\n',
    '"a""b",2,3,4,5,6,7,8\n',
    'a,"b"c,3,4,5,6,7,8\n',
    "a,b,c,d,e,f,g,h,i\n",
    "a,b\r\n",
    "a,b,c,d,e,f,g,h\r\n",
    ",,,,,,,\n",
    "a\x00b,1,2,3,4,5,6,7\n",
    " ,1,2,3,4,5,6,7\n",
    "é,ü,2,3,4,5,6,7\n",
    "a,b\rc,d,e,f,g,h,i\n",
    '"multi\n\nline",2,3,4,5,6,7,8\n',
]


def _via_records(path):
    header, stream = records(path)
    return header, [(r.line, r.raw, r.fields, r.syntax_error) for r in stream]


def _via_chunks(path, size):
    header, stream = chunks(path, size)
    found, counted = [], 0
    for chunk in stream:
        counted += chunk.records
        for i, line in enumerate(chunk.lines.tolist()):
            found.append((line, chunk.raw(line), [column[i] for column in chunk.fields], None))
        for rec in chunk.broken:
            assert chunk.raw(rec.line) == rec.raw
            found.append((rec.line, rec.raw, rec.fields, rec.syntax_error))
    assert counted == len(found)
    return header, sorted(found, key=lambda r: r[0])


def _outcome(read):
    try:
        return read()
    except FileRefused as exc:
        return ("refused", str(exc))


def test_chunked_reader_matches_the_exact_reader_on_random_hostile_files(tmp_path):
    rng = random.Random(8)
    for _ in range(300):
        body = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 20)))
        if rng.random() < 0.3:
            body = body.rstrip("\n")
        if rng.random() < 0.1:
            body += '"unterminated,1\n'
        path = write_source(tmp_path, DAY, [], raw=(HEADER + body).encode())
        expected = _outcome(lambda path=path: _via_records(path))
        for size in (1, 2, 3, 7, 1000):
            assert _outcome(lambda path=path, size=size: _via_chunks(path, size)) == expected, (size, body)


def test_a_quoted_newline_across_a_chunk_boundary_keeps_its_line_and_text(tmp_path):
    rows = [",".join(good_row(1)), 'D2,1,2026-11-01,1.00,EUR,"INCOME\nTAX",DUE,LU', ",".join(good_row(3))]
    path = write_source(tmp_path, DAY, rows)
    _, stream = chunks(path, 2)
    first, second = list(stream)
    assert first.lines.tolist() == [2, 3] and first.plain is None  # the record ran past the block
    assert first.raw(3) == rows[1] + "\n"
    assert second.lines.tolist() == [5] and second.plain is not None
    assert [column[0] for column in second.fields] == good_row(3)


def test_seen_keys_merging_and_spilling_runs_finds_every_repeat_across_many_chunks():
    rng = np.random.default_rng(8)
    ids = [f"D{n}" for n in rng.integers(0, 8_000, size=20_000)] + [None, None]
    seen = SeenKeys(max_run=3_000)
    marked = np.concatenate([seen.mark(pd.Series(ids[i:i + 700])) for i in range(0, len(ids), 700)])
    assert marked.tolist() == pd.Series(ids).duplicated().tolist()[:-2] + [False, False]
    assert seen.count == len(set(ids) - {None})
    assert seen.runs and seen._spilled  # some runs in memory, the big ones in temporary files
    assert sum(len(run) for run in seen.runs) < 3_000
    seen.close()
    assert seen._spilled == []


def _ingest(landing, rows, query):
    path = write_source(landing, DAY, rows)
    assert cli.main(["init-db"]) == 0
    assert cli.main(["ingest", "--date", DAY.isoformat(), "--file", str(path)]) == 0
    loaded = query("""select declaration_id, taxpayer_id, taxpayer_key, event_date, amount::text, currency,
                             contribution_type, status, country, file_date, source_file, source_line,
                             run_id, record_hash::text
                        from raw.contributions order by source_line""")
    quarantined = query("select source_line, raw_line, reasons from raw.contributions_quarantine order by source_line")
    return loaded, quarantined


@pytest.mark.integration
@pytest.mark.parametrize("chunk_rows", [3, 1000])
def test_plain_and_quoted_files_load_the_same_rows(database, sql, pg_server, tmp_path, monkeypatch, chunk_rows):
    """The same records, written plain (fast path, comma-delimited COPY) and with every field quoted
    (exact path, tab-delimited COPY), give the same raw rows, hashes and quarantine."""
    monkeypatch.setenv("CONTRIBFLOW_REJECT_THRESHOLD", "0.9")
    monkeypatch.setenv("CONTRIBFLOW_CHUNK_ROWS", str(chunk_rows))
    monkeypatch.setenv("CONTRIBFLOW_RUN_ID", "run.with_odd-characters")  # a comma, backslash or tab is refused
    rows = [good_row(i, amount=f"{i}.5", taxpayer=str(10000 + i % 4)) for i in range(1, 13)]
    rows[2][3] = "-1.00"
    rows[5][6] = "LOST"
    rows[7][0] = rows[6][0]
    rows[9] = rows[9][:5]
    plain = [",".join(r) for r in rows]
    quoted = [",".join(f'"{v}"' for v in r) for r in rows]
    landing = tmp_path / "landing"
    first = _ingest(landing, plain, sql)

    other = database["PGDATABASE"] + "_q"
    admin = psycopg.connect(host=pg_server["PGHOST"], user=pg_server["PGUSER"],
                            dbname=pg_server["PGDATABASE"], autocommit=True)
    admin.execute(f'CREATE DATABASE "{other}"')
    try:
        monkeypatch.setenv("PGDATABASE", other)
        with psycopg.connect(host=pg_server["PGHOST"], user=pg_server["PGUSER"], dbname=other,
                             autocommit=True) as conn:
            second = _ingest(landing, quoted, lambda q: conn.execute(q).fetchall())
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)')
        admin.close()

    assert len(first[0]) == len(second[0]) == 8
    assert first[0] == second[0]
    assert {r[12] for r in first[0]} == {"run.with_odd-characters"}
    assert [q[0] for q in first[1]] == [q[0] for q in second[1]] == [4, 7, 9, 11]
    assert [q[2] for q in first[1]] == [q[2] for q in second[1]]
    assert first[1][0][1] == plain[2] + "\n" and second[1][0][1] == quoted[2] + "\n"


@pytest.mark.integration
def test_a_last_line_without_newline_loads_through_the_plain_path(database, sql, tmp_path, monkeypatch):
    path = write_source(tmp_path / "landing", DAY, [], raw=(HEADER + ",".join(good_row(1))).encode())
    monkeypatch.setenv("CONTRIBFLOW_CHUNK_ROWS", "10")
    assert cli.main(["init-db"]) == 0
    assert cli.main(["ingest", "--date", DAY.isoformat(), "--file", str(path)]) == 0
    assert sql("select declaration_id, amount::text, source_line from raw.contributions") == [("DEC_20261101_000001", "100.00", 2)]


def _file_for(day, rows, order, quoted):
    """``rows`` (contract order) written with the columns in ``order``, plain or every field quoted."""
    fmt = (lambda v: f'"{v}"') if quoted else str
    lines = [",".join(fmt(r[COLUMNS.index(c)]) for c in order) for r in rows]
    return ",".join(order), lines


@pytest.mark.integration
@pytest.mark.parametrize("quoted", [False, True], ids=["plain", "quoted"])
@pytest.mark.parametrize("reorder", [False, True], ids=["contract-order", "other-order"])
def test_ingest_computes_the_record_hash_that_sql_defines(database, sql, tmp_path, monkeypatch, quoted, reorder):
    """recordhash.py and raw.record_hash() agree on every path, whatever the spelling of an amount;
    so a re-send spelling 10.5 as 010.50 is the same row, and nothing is loaded twice."""
    monkeypatch.setenv("CONTRIBFLOW_CHUNK_ROWS", "4")
    amounts = ["10.5", "010.50", "7", "0.05", "00", "123456789012.99", "3.10", "0"]
    rows = [good_row(i, amount=a, taxpayer=str(20000 + i)) for i, a in enumerate(amounts, 1)]
    order = list(reversed(COLUMNS)) if reorder else list(COLUMNS)
    header, lines = _file_for(DAY, rows, order, quoted)
    path = write_source(tmp_path / "landing", DAY, [], raw=(header + "\n" + "\n".join(lines)).encode())
    assert cli.main(["init-db"]) == 0
    assert cli.main(["ingest", "--date", DAY.isoformat(), "--file", str(path)]) == 0
    mismatched = sql("""select declaration_id from raw.contributions
                         where record_hash <> raw.record_hash(declaration_id, taxpayer_id, event_date, amount,
                                                              currency, contribution_type, status, country)""")
    assert sql("select count(*) from raw.contributions") == [(len(rows),)]
    assert mismatched == []

    respelled = [r[:3] + [f"{float(r[3]):.2f}"] + r[4:] for r in rows]
    assert [r[3] for r in respelled] != amounts
    _, lines = _file_for(DAY, respelled, list(COLUMNS), quoted)
    # Re-sent for the same date (another file date would be a new arrival, migration 0010).
    later = write_source(tmp_path / "landing", DAY, lines)  # the day's file corrected in place
    assert cli.main(["ingest", "--date", DAY.isoformat(), "--file", str(later)]) == 0
    assert sql("select count(*) from raw.contributions") == [(len(rows),)]


@pytest.mark.integration
def test_raw_defaults_let_copy_insert_in_batches_and_keep_loads_in_order(database, sql, tmp_path, monkeypatch):
    """COPY inserts one row at a time when a column default is volatile (clock_timestamp() was);
    statement_timestamp() is not, and a later load's rows are still stamped after an earlier one's."""
    monkeypatch.setenv("CONTRIBFLOW_CHUNK_ROWS", "2")
    assert cli.main(["init-db"]) == 0
    volatile = sql(r"""select a.attname, p.proname from pg_attrdef d
                         join pg_attribute a on (a.attrelid, a.attnum) = (d.adrelid, d.adnum)
                         join pg_proc p on pg_get_expr(d.adbin, d.adrelid) ~ ('\m' || p.proname || '\(')
                        where d.adrelid = 'raw.contributions'::regclass and p.provolatile = 'v'""")
    assert volatile == []
    for n, day in enumerate((DAY, DAY + dt.timedelta(days=1))):
        path = write_source(tmp_path / "landing", day, [good_row(10 * n + i) for i in range(5)])
        assert cli.main(["ingest", "--date", day.isoformat(), "--file", str(path)]) == 0
    stamps = sql("""select file_date, count(distinct ingestion_ts), min(ingestion_ts), max(ingestion_ts)
                      from raw.contributions group by file_date order by file_date""")
    assert [s[1] for s in stamps] == [3, 3]  # three chunks, so three COPY statements, per file
    assert stamps[0][3] < stamps[1][2]


@pytest.mark.integration
@pytest.mark.parametrize("batch_rows, batch_chars", [(4, 8 << 20), (10**9, 1)], ids=["by_rows", "by_size"])
def test_chunks_that_meet_known_rows_skip_only_those_and_the_load_goes_back_to_plain_copy(
        database, sql, tmp_path, monkeypatch, batch_rows, batch_chars):
    """The optimistic COPY's savepoint across chunks: new rows (plain COPY), then a chunk that repeats
    rows already in raw (rolled back to its savepoint, loaded through the slow path), one that repeats
    nothing (plain COPY again), and bad rows spread over every chunk written in batches. Every row
    is accounted for: loaded, already there, or quarantined with its reasons."""
    from contribflow.ingest import load as ingest

    monkeypatch.setattr(ingest, "_QUARANTINE_BATCH", batch_rows)
    monkeypatch.setattr(ingest, "_QUARANTINE_BATCH_BYTES", batch_chars)
    written = []
    monkeypatch.setattr(ingest._Load, "_quarantine", lambda self, write=ingest._Load._quarantine: (
        written.append(len(self.rejected)), write(self))[1])
    monkeypatch.setenv("CONTRIBFLOW_CHUNK_ROWS", "10")
    monkeypatch.setenv("CONTRIBFLOW_REJECT_THRESHOLD", "0.5")
    landing = tmp_path / "landing"
    assert cli.main(["init-db"]) == 0
    # An earlier file of the same date (the same state for another date would be a new arrival).
    earlier = write_source(landing, DAY, [good_row(n) for n in range(100, 110)])  # then corrected in place
    assert cli.main(["ingest", "--date", DAY.isoformat(), "--file", str(earlier)]) == 0

    rows = [good_row(n) for n in range(1, 21)]          # lines 2-21: new (first chunk is 1 row)
    rows += [good_row(n) for n in range(100, 110)]      # lines 22-31: loaded by the earlier file
    rows += [good_row(n) for n in range(200, 230)]      # lines 32-61: new again
    for line in (3, 12, 25, 40, 50, 60):                # a bad amount in most chunks
        rows[line - 2][3] = "-1.0"
    path = write_source(landing, DAY, rows)
    assert cli.main(["ingest", "--date", DAY.isoformat(), "--file", str(path)]) == 0

    loaded = sql("select count(*) from raw.contributions where run_id = "
                 "(select run_id from meta.source_file order by id desc limit 1)")[0][0]
    assert loaded == 60 - 6 - 9  # line 25's row is bad, the other 9 of the earlier file's are there already
    assert sql("select count(*) from raw.contributions") == [(10 + loaded,)]
    quarantined = sql("select source_line, reasons from raw.contributions_quarantine order by source_line")
    assert [line for line, _ in quarantined] == [3, 12, 25, 40, 50, 60]
    assert all(any("amount_not_negative" in r for r in reasons) for _, reasons in quarantined)
    # Written in batches: by rows, the first four then the rest at the end; by size, each chunk's
    # (lines 3 and 12 share a chunk).
    assert [n for n in written if n] == ([4, 2] if batch_rows == 4 else [2, 1, 1, 1, 1])
    details = sql("select details from meta.etl_run where step = 'ingest' order by id desc limit 1")[0][0]
    assert details["rows_already_loaded"] == 9
    # Chunks of lines 2, 3-12, 13-22, 23-32, 33-42, 43-52, 53-61: the two that hold earlier file's rows
    # and the next one (which finds nothing to skip) go through the slow path; the last two are COPYed.
    assert details["chunks_deduplicated"] == 3
