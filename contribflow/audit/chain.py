"""verify: walk the hash chain of the audit trail (migration 0015) and check every sealed row.

The chain's definitions are in docs/verify.md. This module recomputes them on its own instead of
calling the warehouse's functions, so that a function replaced behind the pipeline's back cannot
vouch for itself: the links are recomputed here in Python (hashlib), the rows' hashes by SQL this
module sends (the same canonical encoding as ``meta.chain_canon`` and ``meta.chain_row_hash``, which
a test holds equal).

What verify finds, reported as the first (lowest sequence number) of:
- an entry whose link or previous link does not match, or a missing sequence number (an entry edited,
  removed or inserted), or a head that is not the last entry;
- a sealed row whose content no longer hashes to its latest entry (edited, by anyone, with or without
  triggers), or that is gone (deleted) while its latest entry is not a ``delete``;
- a row in its final state with no entry at all (inserted with the triggers bypassed).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import psycopg
from psycopg import sql

ROW_DOMAIN = "contribflow-chain-row/1"
LINK_DOMAIN = "contribflow-chain-link/1"
GENESIS = bytes(32)

# The session settings the canonical text of a row is computed under (migration 0015 pins the same
# on its functions): to_jsonb's timestamps with a UTC offset, floats shortest-exact, bytea in hex.
SESSION = {"TimeZone": "UTC", "extra_float_digits": "1", "bytea_output": "hex", "IntervalStyle": "postgres"}

CANON_SQL = """coalesce((SELECT string_agg(e.key || '=' || octet_length(convert_to(e.value #>> ARRAY[]::text[], 'UTF8'))
                                      || ':' || (e.value #>> ARRAY[]::text[]), ';' ORDER BY e.key COLLATE "C")
                           FROM jsonb_each({doc}) AS e WHERE jsonb_typeof(e.value) <> 'null'), '')"""


def canon(fields: dict[str, str | None]) -> str:
    """The canonical text of an object (docs/verify.md): non-null members by name, bytewise,
    ``name=<UTF-8 length>:<value>`` joined by ``;``."""
    return ";".join(f"{k}={len(v.encode('utf-8'))}:{v}"
                    for k, v in sorted(fields.items(), key=lambda kv: kv[0].encode("utf-8")) if v is not None)


def link_of(prev: bytes, seq: int, relation: str, row_key: str, kind: str, row_hash: bytes | None,
            reason: str | None, sealed_by: str, sealed_at_us: int) -> bytes:
    text = canon({"seq": str(seq), "relation": relation, "row_key": row_key, "kind": kind,
                  "row_hash": None if row_hash is None else row_hash.hex(), "reason": reason,
                  "sealed_by": sealed_by, "sealed_at": str(sealed_at_us)})
    return hashlib.sha256(prev + f"{LINK_DOMAIN}\n{text}".encode()).digest()


@dataclass(frozen=True)
class Broken:
    relation: str
    row_key: str
    seq: int | None
    why: str

    def __str__(self) -> str:
        at = f"seq {self.seq}" if self.seq is not None else "no chain entry"
        return f"{self.relation} row {self.row_key} ({at}): {self.why}"


@dataclass(frozen=True)
class Result:
    entries: int
    relations: int
    rows: int
    head_seq: int
    head_link: str
    broken: Broken | None

    @property
    def intact(self) -> bool:
        return self.broken is None

    def summary(self) -> str:
        if self.broken is None:
            return (f"intact: {self.entries} chain entries, {self.rows} sealed rows in {self.relations} "
                    f"relations; head seq {self.head_seq} link {self.head_link}")
        return f"broken: {self.broken}"


def head(conn: psycopg.Connection) -> tuple[int, str]:
    """The chain head: (seq, link as hex)."""
    seq, link = conn.execute("SELECT seq, link FROM meta.audit_chain_head").fetchall()[0]
    return seq, bytes(link).hex()


def _row_problems(conn: psycopg.Connection, relation: str, key_column: str, sealed_when: str) -> list[Broken]:
    """Each sealed row whose content or presence does not match its latest entry (the first one by
    seq), and the first final row with no entry."""
    schema, table = relation.split(".", 1)
    doc = "to_jsonb(r)"
    row_hash = sql.SQL("sha256(convert_to({domain} || chr(10) || {rel} || chr(10) || " + CANON_SQL.format(doc=doc)
                       + ", 'UTF8'))").format(domain=sql.Literal(ROW_DOMAIN), rel=sql.Literal(relation))
    query = sql.SQL("""
        WITH latest AS (SELECT DISTINCT ON (row_key) row_key, seq, kind, row_hash FROM meta.audit_chain
                         WHERE relation = {rel} ORDER BY row_key, seq DESC),
             cur AS (SELECT {doc} ->> {key} AS row_key, {row_hash} AS h, ({sealed}) AS final
                       FROM {table} r)
        SELECT coalesce(l.row_key, c.row_key), l.seq,
               CASE WHEN c.row_key IS NULL THEN 'the row is gone (deleted) but its entry is not a delete'
                    WHEN l.kind = 'delete' THEN 'the row is back after its delete entry'
                    WHEN l.row_key IS NULL THEN 'the row is final but not in the chain (inserted around it)'
                    WHEN NOT c.final THEN 'the row was sealed but is no longer in its final state'
                    ELSE 'its content does not match the hash it was sealed with (changed since)' END
          FROM latest l FULL JOIN cur c ON c.row_key = l.row_key
         WHERE (c.row_key IS NULL AND l.kind <> 'delete')
            OR (l.row_key IS NULL AND c.final)
            OR (l.row_key IS NOT NULL AND c.row_key IS NOT NULL
                AND (l.kind = 'delete' OR NOT c.final OR l.row_hash IS DISTINCT FROM c.h))
         ORDER BY l.seq NULLS LAST, 1 LIMIT 1""").format(
        rel=sql.Literal(relation), doc=sql.SQL(doc), key=sql.Literal(key_column), row_hash=row_hash,
        sealed=sql.SQL(sealed_when), table=sql.Identifier(schema, table))
    return [Broken(relation, key, seq, why) for key, seq, why in conn.execute(query).fetchall()]


def verify(conn: psycopg.Connection) -> Result:
    for name, value in SESSION.items():
        conn.execute(sql.SQL("SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
    registry = conn.execute(
        "SELECT relation, key_column, sealed_when FROM meta.chained_relation ORDER BY relation").fetchall()
    problems: list[Broken] = []
    prev, expected, entries = GENESIS, 1, 0
    with conn.cursor(name="audit_chain_walk") as cur:  # server-side: the chain need not fit in memory
        cur.itersize = 10_000
        cur.execute("""SELECT seq, relation, row_key, kind, row_hash, reason, sealed_by,
                              (extract(epoch FROM sealed_at) * 1000000)::bigint, prev_link, link
                         FROM meta.audit_chain ORDER BY seq""")
        for seq, relation, row_key, kind, row_hash, reason, sealed_by, at_us, prev_link, link in cur:
            entries += 1
            if seq != expected:
                problems.append(Broken(relation, row_key, seq, f"chain entries {expected}..{seq - 1} are "
                                       "missing (removed from the chain)"))
                break
            row_hash = None if row_hash is None else bytes(row_hash)
            if bytes(prev_link) != prev:
                problems.append(Broken(relation, row_key, seq, "its previous link is not the link of the entry "
                                       "before it (an entry was removed, inserted or rewritten)"))
                break
            if link_of(prev, seq, relation, row_key, kind, row_hash, reason, sealed_by, at_us) != bytes(link):
                problems.append(Broken(relation, row_key, seq, "the chain entry does not hash to its link "
                                       "(the entry was edited)"))
                break
            prev, expected = bytes(link), seq + 1
    conn.commit()
    head_seq, head_link = head(conn)
    if not problems and (head_seq != expected - 1 or head_link != prev.hex()):
        problems.append(Broken("meta.audit_chain_head", "head", head_seq,
                               f"the head is not the last chain entry (seq {expected - 1}, link {prev.hex()})"))
    for relation, key_column, sealed_when in registry:
        problems += _row_problems(conn, relation, key_column, sealed_when)
    rows = conn.execute("SELECT count(DISTINCT (relation, row_key)) FROM meta.audit_chain").fetchone()[0]
    conn.commit()
    first = min(problems, key=lambda p: (p.seq is None, p.seq or 0), default=None)
    return Result(entries, len(registry), rows, head_seq, head_link, first)
