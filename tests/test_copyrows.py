"""contribflow/ingest/_copyrows.c, the compiled encoder of ingest's usual path, against its definition in
Python: the same SHA-256, the same HMAC, and its binary COPY loads exactly the rows the Python
path's text COPY loads, sent in the same order.

It is an optional build (pyproject.toml), so the first test makes sure it was built here: without
it every other test of ingest would silently exercise only the Python path.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import random

import numpy as np
import psycopg
import pytest

from contribflow import cli
from contribflow.contract import file_name
from contribflow.generate import rows_for, write_file
from contribflow.ingest import load as ingest
from contribflow.ingest.pseudonym import Pseudonymiser
from contribflow.ingest.reader import chunks
from contribflow.settings import Settings

DAY = dt.date(2026, 11, 24)

compiled = ingest._copyrows


def test_the_compiled_encoder_is_built_where_the_tests_run():
    assert compiled is not None, (
        "contribflow.ingest._copyrows was not built (no C compiler or Python headers at install time?); "
        "ingest falls back to Python, and these tests would not cover the path production takes"
    )


def test_sha256_and_hmac_agree_with_python_at_every_block_boundary():
    """OpenSSL's libcrypto through the encoder (``compiled.OPENSSL`` names the version) agrees with
    hashlib and hmac at every length around SHA-256's 64-byte blocks and its padding."""
    assert compiled.OPENSSL.startswith("OpenSSL ")
    rng = random.Random(3)
    for size in [*range(0, 200), 1000, 4096]:
        data = rng.randbytes(size)
        assert compiled.sha256(data) == hashlib.sha256(data).digest(), size
    for key_size in (0, 1, 32, 63, 64, 65, 200):
        key = rng.randbytes(key_size)
        for size in (0, 5, 55, 56, 64, 119, 120, 300):
            data = rng.randbytes(size)
            assert compiled.hmac_sha256(key, data) == hmac.digest(key, data, "sha256"), (key_size, size)


class _Counting:
    """The compiled module, counting the chunks it encodes."""

    def __init__(self) -> None:
        self.calls = 0

    def binary_copy(self, *args):
        self.calls += 1
        return compiled.binary_copy(*args)


def _encoded(path, chunk_rows: int, use_compiled: bool) -> list[ingest.Prepared]:
    """Every chunk of the file at ``path`` validated and encoded, with or without the compiled
    path (which must then have encoded every chunk)."""
    settings = Settings.from_env({"CONTRIBFLOW_PSEUDONYM_KEY": "test-key-not-a-secret",
                                  "CONTRIBFLOW_RUN_ID": "run-1"})
    header, stream = chunks(path, chunk_rows)
    preparer = ingest._Preparer(settings, DAY, path.name, header)
    counting = _Counting()
    preparer.compiled = counting if use_compiled else None
    prepared = [preparer.validate(chunk).encoded() for chunk in stream]
    preparer.seen.close()
    assert counting.calls == (len(prepared) if use_compiled else 0)
    return prepared


_EDGES = [  # (event_date, amount): calendar and numeric edges the binary encoding must get right
    ("1970-01-01", "0.00"), ("2000-01-01", "0.01"), ("2000-02-29", "9999.99"), ("1999-12-31", "10000.00"),
    ("2100-12-31", "123456789012.99"), ("2400-02-29", "100000000.00"), ("1900-03-01", "1.10"),
    ("0001-01-01", "99999999.99"), ("9999-12-31", "100000000000.00"), ("1600-02-29", "20000.05"),
    # The source's own spelling (pandas' float repr) and other valid, non-canonical ones:
    ("2026-01-12", "343.3"), ("2026-01-13", "0.0"), ("2026-01-14", "12.0"), ("2026-01-15", "7"),
    ("2026-01-16", "0"), ("2026-01-17", "00012.5"), ("2026-01-18", "000000000001.1"), ("2026-01-19", "999999999999"),
]


@pytest.mark.integration
@pytest.mark.parametrize("chunk_rows", [1, 7, 5000])
@pytest.mark.parametrize("trailing_newline", [True, False], ids=["newline-at-end", "no-newline-at-end"])
def test_the_compiled_binary_copy_loads_the_rows_of_the_python_text_copy(database, sql, tmp_path, chunk_rows,
                                                                        trailing_newline):
    # One row per chunk is one COPY per row: 300 rows prove the chunk boundaries as well as 3000 (1 min).
    n = 300 if chunk_rows == 1 else 3000
    rows = list(rows_for(DAY, n, seed=11, defect_rate=0.02))
    rows += [[f"E{i}", f"T{i}", day, amount, "EUR", "REFUND", "PAID", "FR"] for i, (day, amount) in enumerate(_EDGES)]
    path = tmp_path / file_name(DAY)
    text = "\n".join([",".join(ingest.COLUMNS), *(",".join(r) for r in rows)])
    path.write_text(text + ("\n" if trailing_newline else ""))
    assert cli.main(["init-db"]) == 0
    loaded = {}
    with psycopg.connect(autocommit=True) as conn:
        for use_compiled in (False, True):
            table = "public.compiled" if use_compiled else "public.python"
            conn.execute(f"CREATE TABLE {table} (LIKE raw.contributions INCLUDING DEFAULTS)")
            prepared = _encoded(path, chunk_rows, use_compiled)
            for chunk in prepared:
                if chunk.good:
                    with conn.cursor().copy(chunk.copy.format(table=table)) as copy:
                        for piece in chunk.payload:
                            copy.write(piece)
            loaded[use_compiled] = (
                sql(f"select {', '.join(ingest.RAW_COLUMNS)} from {table} order by source_line"),
                sql(f"select record_hash from {table} order by ctid"),
                [(c.rows_in, c.good, c.rejected) for c in prepared],
            )
    rows_python, order_python, chunks_python = loaded[False]
    rows_compiled, order_compiled, chunks_compiled = loaded[True]
    assert len(rows_compiled) > n * 0.96 and chunks_compiled == chunks_python
    assert sum(len(rejected) for _, _, rejected in chunks_compiled) > n // 150
    assert rows_compiled == rows_python
    assert {(r[3], str(r[4])) for r in rows_compiled} >= {(dt.date.fromisoformat(d), a) for d, a in _EDGES[:7]}
    assert {(r[3], str(r[4])) for r in rows_compiled} >= {
        (dt.date(2026, 1, 12), "343.30"), (dt.date(2026, 1, 13), "0.00"), (dt.date(2026, 1, 17), "12.50"),
        (dt.date(2026, 1, 19), "999999999999.00")}
    assert order_compiled == order_python  # each chunk sent in record-hash order, the same order
    key = Pseudonymiser(b"test-key-not-a-secret")
    assert all(r[2] == key.key_of(r[1]) for r in rows_compiled)


def test_the_compiled_encoder_refuses_inputs_it_cannot_encode_faithfully():
    codes = np.zeros(1, dtype=np.int64)
    numbers = np.array([2], dtype=np.int64)
    good = "D1,T1,2026-11-01,1.00,EUR,PAID,DUE,LU\n"

    def encode(line=good, codes=codes, numbers=numbers):
        return compiled.binary_copy([line], codes, ["T1"], b"k", numbers, b"", 10)

    assert len(encode()) == 1
    for line in (good[:-1], "D1,T1,2026-11-01,1.00,EUR,PAID,DUE\n", "D1,T1,2026-11-01,1.00,EUR,PAID,DUE,LU,X\n",
                 good.replace("2026-11-01", "2026-02-30"), good.replace("2026-11-01", "2026-11-1x"),
                 good.replace("1.00", "1."), good.replace("1.00", ".5"), good.replace("1.00", "1.234"),
                 good.replace("1.00", "1e5"), good.replace("1.00", ""), good.replace("1.00", "-1.00"),
                 good.replace("1.00", "1234567890123.00"), good.replace("1.00", "1234567890123")):
        with pytest.raises(ValueError, match="newline|eight plain values") as refused:
            encode(line)
        assert "T1" not in str(refused.value), "the message names the line, never its values"
    with pytest.raises(TypeError, match=r"lines\[0\] is not a str"):
        compiled.binary_copy([b"x\n"], codes, ["T1"], b"k", numbers, b"", 10)
    with pytest.raises(TypeError, match=r"ids\[0\] is not a str"):
        compiled.binary_copy([good], codes, [1], b"k", numbers, b"", 10)
    with pytest.raises(ValueError, match="index of ids"):
        encode(codes=np.array([1], dtype=np.int64))
    with pytest.raises(TypeError, match="int64"):
        encode(codes=np.zeros(1, dtype=np.int32))
    with pytest.raises(ValueError, match="values for"):
        encode(numbers=np.array([2, 3], dtype=np.int64))
    for number in (0, 2 ** 31):
        with pytest.raises(ValueError, match="line number"):
            encode(numbers=np.array([number], dtype=np.int64))
    assert compiled.binary_copy([], np.zeros(0, dtype=np.int64), [], b"k", np.zeros(0, dtype=np.int64), b"", 10) == []


@pytest.mark.integration
def test_a_usual_file_loads_through_the_compiled_path_with_the_hashes_and_keys_sql_expects(
        database, sql, tmp_path, monkeypatch):
    counting = _Counting()
    monkeypatch.setattr(ingest, "_copyrows", counting)
    monkeypatch.setenv("CONTRIBFLOW_CHUNK_ROWS", "400")
    path = tmp_path / "landing" / file_name(DAY)
    path.parent.mkdir()
    write_file(path, rows_for(DAY, 2000, seed=5, defect_rate=0.01))
    assert cli.main(["init-db"]) == 0
    assert cli.main(["ingest", "--date", DAY.isoformat(), "--file", str(path)]) == 0
    assert counting.calls == 6  # 40 rows, then 400 at a time
    loaded = sql("""select count(*),
                           count(*) filter (where record_hash = raw.record_hash(declaration_id, taxpayer_id,
                               event_date, amount, currency, contribution_type, status, country))
                      from raw.contributions""")
    quarantined = sql("select count(*) from raw.contributions_quarantine")[0][0]
    assert loaded[0][0] == loaded[0][1] and loaded[0][0] + quarantined == 2000 and quarantined > 5
    key = Settings.from_env().require_pseudonym_key()
    pairs = sql("select distinct taxpayer_id, taxpayer_key from raw.contributions")
    assert len(pairs) > 100
    assert all(k == hmac.digest(key, t.encode(), "sha256").hex() for t, k in pairs)
    assert sql("select min(source_line), max(source_line) from raw.contributions")[0][0] == 2
