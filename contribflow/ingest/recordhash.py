"""The record hash: which rows of raw are the same declaration in the same state.

A row's hash is the first 128 bits of SHA-256 over its business values in canonical text, joined by
commas: declaration_id, taxpayer_id, event_date (ISO, as validated), amount as numeric(14,2) prints
it (``10.5`` and ``010.50`` are both ``10.50``), currency, contribution_type, status, country. An
identifier that holds a comma or a double quote is quoted as CSV quotes it, so that no two rows
share a text; no other value can hold one. It is stored as a ``uuid``: 16 bytes, compared with
memcmp.

It identifies a state, not an arrival: the same declaration in the same state on two file dates
(a reversal DUE -> PAID -> DUE) has one hash and two rows. raw's one unique index is
``(declaration_id, file_date, record_hash, revision)`` (migration 0010; ingest.py says how a state
that returns within one file date gets its revision).

Ingest computes it, so that each chunk can be sent to PostgreSQL in the order of that index: a
file has one file date and a COPY one revision (0), so sorting by declaration_id, then record hash,
is the index's order, and the index takes its entries in order instead of at random pages, which is
most of the cost of a load. The source numbers its declarations in the order it sends them, so a
day's new rows land at the index's right edge.
``raw.record_hash()`` is the same definition in SQL, for audits; the tests prove the two agree.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

_CANONICAL = r"(?:0|[1-9][0-9]{0,11})\.[0-9]{2}"
_CANONICAL_AMOUNT = re.compile(_CANONICAL, re.ASCII).fullmatch
_CANONICAL_RUN = re.compile(f"(?:{_CANONICAL}\n)*+", re.ASCII).match


def canonical_amount(amount: str) -> str:
    """A validated amount (``^\\d{1,12}(\\.\\d{1,2})?$``) as PostgreSQL's numeric(14,2) prints it."""
    whole, _, fraction = amount.partition(".")
    return f"{int(whole)}.{fraction:0<2}"


def all_canonical(amounts: list[str]) -> bool:
    """Whether every (validated) amount is already as numeric(14,2) prints it, in one C scan of the
    amounts joined by newlines (none can hold one)."""
    joined = "\n".join(amounts) + "\n"
    run = _CANONICAL_RUN(joined)  # a possessive run of zero or more: it always matches
    return not amounts or (run is not None and run.end() == len(joined))


def canonical_amounts(amounts: list[str]) -> list[str]:
    if all_canonical(amounts):
        return amounts
    return [a if _CANONICAL_AMOUNT(a) else canonical_amount(a) for a in amounts]


def csv_field(value: str) -> str:
    """A value as it stands in the hashed text: quoted as CSV does when it holds a comma or quote."""
    if "," not in value and '"' not in value:
        return value
    return '"' + value.replace('"', '""') + '"'


def _csv_fields(values: list[str]) -> list[str]:
    joined = "".join(values)
    return [csv_field(v) for v in values] if "," in joined or '"' in joined else values


def digests(columns: Sequence[np.ndarray], lines: list[str] | None = None) -> bytes:
    """The SHA-256 of each row's canonical text, concatenated (32 bytes a row).

    ``columns`` are the validated business values in contract order (contract.COLUMNS). ``lines``,
    when given, are the rows' source lines, each exactly its values in contract order joined by
    commas plus a newline: where the amounts are canonical too, a line minus its newline is the
    canonical text, and it is hashed without being rebuilt.
    """
    sha256 = hashlib.sha256
    given = columns[3].tolist()
    amounts = canonical_amounts(given)
    if lines is not None and amounts is given:
        return b"".join([sha256(line.encode()[:-1]).digest() for line in lines])
    values = [c.tolist() for c in columns]
    values[0], values[1], values[3] = _csv_fields(values[0]), _csv_fields(values[1]), amounts
    return b"".join([sha256(",".join(row).encode()).digest() for row in zip(*values)])


def load_order(declaration_ids: Sequence[str], digests: bytes) -> tuple[np.ndarray, list[str]]:
    """The order that sorts the rows as raw's unique index does, and each row's hash as 32 hex digits.

    By declaration id (code points, which is its UTF-8 bytes' order, as the compiled encoder
    compares them), then by record hash, then file order. The first 8 bytes of a hash, big-endian,
    order it as the uuid's memcmp does (ties cost nothing). Where the database's collation is not
    ``C``, the index may order some identifiers differently: that costs locality, never correctness.
    """
    by_hash = np.frombuffer(digests, dtype=">u8")[::4]
    order = np.lexsort((by_hash, np.asarray(declaration_ids, dtype=str)))
    text = digests.hex()
    return order, [text[i:i + 32] for i in range(0, len(text), 64)]
