"""recordhash.py without a database: canonical amounts, the two ways to hash a row, the order.

That Python and raw.record_hash() agree is proven against PostgreSQL in test_ingest_fastpath.py.
"""

from __future__ import annotations

import hashlib
import random
import re
import uuid
from decimal import Decimal

import numpy as np

from contribflow import contract
from contribflow.ingest.recordhash import canonical_amount, canonical_amounts, digests, load_order


def _amounts(n: int) -> list[str]:
    rng = random.Random(8)
    out = []
    for _ in range(n):
        whole = "0" * rng.randint(0, 2) + str(rng.randint(0, 10 ** rng.randint(1, 10)))
        fraction = rng.choice(["", ".5", ".05", ".50", ".99", ".0", ".00"])
        out.append((whole + fraction)[-15:].lstrip(".") or "0")
    return [a for a in out if re.fullmatch(contract.AMOUNT, a)]


def test_a_canonical_amount_is_how_numeric_14_2_prints_it():
    amounts = _amounts(2000) + ["0", "00", "000.5", "10", "10.5", "010.50", "123456789012.99"]
    assert len(amounts) > 1500
    for amount in amounts:
        assert canonical_amount(amount) == str(Decimal(amount).quantize(Decimal("0.01"))), amount


def test_canonical_amounts_returns_the_same_list_when_nothing_needs_rewriting():
    already = ["1.00", "0.50", "123.45"]
    assert canonical_amounts(already) is already
    assert canonical_amounts(["1.00", "007.5", "3"]) == ["1.00", "7.50", "3.00"]


def _rows(n: int) -> list[list[str]]:
    return [[f"D{i:08d}", str(10000 + i), "2026-11-01", f"{i}.{i % 100:02d}", "EUR", "INCOME_TAX",
             "DUE", "LU"] for i in range(n)]


def test_hashing_the_source_line_equals_hashing_the_joined_values():
    rows = _rows(500)
    columns = [np.array(c, dtype=object) for c in zip(*rows)]
    lines = [",".join(r) + "\n" for r in rows]
    expected = b"".join(hashlib.sha256(",".join(r).encode()).digest() for r in rows)
    assert digests(columns, lines) == digests(columns) == expected


def test_a_line_is_not_trusted_when_an_amount_needs_its_canonical_form():
    rows = _rows(3)
    rows[1][3] = "1.5"
    columns = [np.array(c, dtype=object) for c in zip(*rows)]
    lines = [",".join(r) + "\n" for r in rows]
    canonical = [r[:3] + [canonical_amount(r[3])] + r[4:] for r in rows]
    assert digests(columns, lines) == b"".join(hashlib.sha256(",".join(r).encode()).digest() for r in canonical)


def test_load_order_sorts_the_rows_as_raws_unique_index_does():
    rows = _rows(2000)[::-1]  # the source's numbering backwards
    rows[5][0] = rows[9][0]  # one declaration in two states: its rows are ordered by hash
    data = digests([np.array(c, dtype=object) for c in zip(*rows)])
    ids = [r[0] for r in rows]
    order, hexes = load_order(ids, data)
    assert len(hexes) == 2000 and all(len(h) == 32 for h in hexes)
    assert hexes[0] == data[:16].hex()
    as_keys = [(ids[i].encode(), uuid.UUID(hexes[i]).bytes) for i in order.tolist()]
    assert as_keys == sorted(as_keys)
    assert order.tolist()[:3] == [1999, 1998, 1997]
