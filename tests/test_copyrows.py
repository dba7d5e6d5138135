"""contribflow/_copyrows.c, the compiled encoder of ingest's usual path, against its definition in
Python: the same SHA-256, the same HMAC, and byte for byte the same COPY text in the same order.

It is an optional build (pyproject.toml), so the first test makes sure it was built here: without
it every other test of ingest would silently exercise only the Python path.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import random

import numpy as np
import pytest

from contribflow import cli, ingest
from contribflow.contract import file_name
from contribflow.generate import rows_for, write_file
from contribflow.pseudonym import Pseudonymiser
from contribflow.reader import chunks
from contribflow.settings import Settings

from helpers import good_row

DAY = dt.date(2026, 11, 24)

compiled = ingest._copyrows


def test_the_compiled_encoder_is_built_where_the_tests_run():
    assert compiled is not None, (
        "contribflow._copyrows was not built (no C compiler or Python headers at install time?); "
        "ingest falls back to Python, and these tests would not cover the path production takes"
    )


def test_sha256_and_hmac_agree_with_python_at_every_block_boundary():
    """Both compressions: the one chosen for this CPU (``compiled.SHA256`` says which) and the
    portable one every other CPU uses."""
    rng = random.Random(3)
    for size in [*range(0, 200), 1000, 4096]:
        data = rng.randbytes(size)
        expected = hashlib.sha256(data).digest()
        assert compiled.sha256(data) == expected, (compiled.SHA256, size)
        assert compiled.sha256(data, True) == expected, ("portable", size)
    for key_size in (0, 1, 32, 63, 64, 65, 200):
        key = rng.randbytes(key_size)
        for size in (0, 5, 55, 56, 64, 119, 120, 300):
            data = rng.randbytes(size)
            assert compiled.hmac_sha256(key, data) == hmac.digest(key, data, "sha256"), (key_size, size)


class _Counting:
    """The compiled module, counting the chunks it encodes."""

    def __init__(self) -> None:
        self.calls = 0

    def plain_copy(self, *args):
        self.calls += 1
        return compiled.plain_copy(*args)


def _encoded(tmp_path, rows: list[list[str]], chunk_rows: int, use_compiled: bool,
             trailing_newline: bool = True) -> list[tuple[int, bytes, list]]:
    """Every chunk of a file of ``rows`` validated and encoded, with or without the compiled path
    (which must then have encoded every chunk)."""
    text = "\n".join([",".join(ingest.COLUMNS), *(",".join(r) for r in rows)])
    path = tmp_path / file_name(DAY)
    path.write_text(text + ("\n" if trailing_newline else ""))
    settings = Settings.from_env({"CONTRIBFLOW_PSEUDONYM_KEY": "test-key-not-a-secret",
                                  "CONTRIBFLOW_RUN_ID": "run-1"})
    header, stream = chunks(path, chunk_rows)
    preparer = ingest._Preparer(settings, DAY, path.name, header)
    counting = _Counting()
    preparer.compiled = counting if use_compiled else None
    out = []
    for chunk in stream:
        validated = preparer.validate(chunk)
        out.append((validated.good, b"".join(validated.encode()), validated.rejected))
    preparer.seen.close()
    assert counting.calls == (len(out) if use_compiled else 0)
    return out


@pytest.mark.parametrize("chunk_rows", [1, 7, 5000])
@pytest.mark.parametrize("trailing_newline", [True, False], ids=["newline-at-end", "no-newline-at-end"])
def test_the_compiled_copy_text_is_the_python_one_byte_for_byte(tmp_path, chunk_rows, trailing_newline):
    rows = list(rows_for(DAY, 3000, seed=11, defect_rate=0.02))
    python = _encoded(tmp_path, rows, chunk_rows, use_compiled=False, trailing_newline=trailing_newline)
    fast = _encoded(tmp_path, rows, chunk_rows, use_compiled=True, trailing_newline=trailing_newline)
    assert sum(good for good, _, _ in fast) > 2800
    assert sum(len(rejected) for _, _, rejected in fast) > 20
    assert fast == python


def test_the_compiled_path_keys_each_taxpayer_as_the_pseudonymiser_does(tmp_path):
    taxpayers = ["1", "12345", "A" * 32, "zZ09"]
    rows = [good_row(i, taxpayer=taxpayers[i % 4]) for i in range(1, 41)]
    [(good, payload, rejected)] = _encoded(tmp_path, rows, 100, use_compiled=True)
    expected = Pseudonymiser(b"test-key-not-a-secret")
    lines = payload.decode().splitlines()
    assert good == 40 and rejected == [] and len(lines) == 40
    for line in lines:
        fields = line.split(",")  # record_hash, taxpayer_key, source_line, file_date, source_file, run_id, the line
        assert fields[1] == expected.key_of(fields[7])
        assert fields[0] == hashlib.sha256(",".join(fields[6:]).encode()).hexdigest()[:32]
        assert fields[2:6] == [str(int(fields[6][1:]) + 1), DAY.isoformat(), file_name(DAY), "run-1"]
    assert [line.split(",")[0] for line in lines] == sorted(line.split(",")[0] for line in lines)


def test_the_compiled_encoder_refuses_inputs_it_cannot_encode_faithfully():
    codes = np.zeros(1, dtype=np.int64)
    numbers = np.array([2], dtype=np.int64)
    with pytest.raises(ValueError, match="newline"):
        compiled.plain_copy(["a,b"], codes, ["1"], b"k", numbers, ",x", 10)
    with pytest.raises(ValueError, match="index of ids"):
        compiled.plain_copy(["a,b\n"], np.array([1], dtype=np.int64), ["1"], b"k", numbers, ",x", 10)
    with pytest.raises(TypeError, match="int64"):
        compiled.plain_copy(["a,b\n"], np.zeros(1, dtype=np.int32), ["1"], b"k", numbers, ",x", 10)
    with pytest.raises(ValueError, match="values for"):
        compiled.plain_copy(["a,b\n"], codes, ["1"], b"k", np.array([2, 3], dtype=np.int64), ",x", 10)
    assert compiled.plain_copy([], np.zeros(0, dtype=np.int64), [], b"k",
                               np.zeros(0, dtype=np.int64), ",x", 10) == []


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
    assert counting.calls == 5
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
