"""Every publication recorded (``meta.publication``), and the as-of history of the marts (issue 27).

``publish`` calls ``record`` in the transaction that changes the marts, after the changes, before
the commit: a publication row and its inputs and outputs exist exactly when its marts do, and a
REPEATABLE READ reader sees the marts, their history and their record of one publication together.

- **Inputs**: the build's high-water marks (``marts_build.build_high_water``, written by the fact
  delta's post-hook inside its transaction, under the raw-writer lock: the macro
  ``record_high_water``), the withdrawals in force, and every LOADED source file up to the ledger's
  high-water mark with its sha256 (``meta.publication_input``).
- **Code**: package version, the settings git_revision and image_digests (CONTRIBFLOW_GIT_REVISION,
  CONTRIBFLOW_IMAGE_DIGESTS), dbt's version and the project checksum dbt-build recorded
  (``transform.project_checksum``).
- **Outputs**: each published table's row count and content hash (``meta.publication_output``;
  the hash is defined in migration 0014 and docs/auditors.md). After the first recorded
  publication (and on a full refresh) the hash is kept up to date from the day's changes: the
  previous hash, minus the digests of the versions this publication closed, plus those it opened
  (``computed = 'incremental'``); ``contribflow reproduce --check-published`` recomputes it from
  every row.
- **History** (``marts.fct_contributions_history``, ``marts.dim_taxpayer_history``): for the keys
  the publication touched (the delta's and removed declarations; the touched taxpayers), the
  current version whose row changed is closed (valid_to_publication = this one) and the new row
  opened. A row written again unchanged (same digest) keeps its version. Cost: the day's keys,
  through the partial unique index on the current versions. Without a previous record (the first
  publication after migration 0014) or on a full refresh, every key is compared, once.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import psycopg

from contribflow import __version__
from contribflow.db import connect
from contribflow.errors import StageError
from contribflow.settings import Settings
from contribflow.warehouse.marts import DIM_COLUMNS, FCT_COLUMNS


@dataclass(frozen=True)
class Hashed:
    """A published table: its key, its columns in order, and the SQL function of its row digest."""

    name: str
    key: str
    columns: tuple[str, ...]
    digest_function: str

    def digest(self, alias: str) -> str:
        """The row digest of ``alias``'s row, 32 hex digits (meta.fct_row_digest / meta.dim_row_digest)."""
        return f"{self.digest_function}({', '.join(f'{alias}.{c}' for c in self.columns)})"


TABLES = (Hashed("fct_contributions", "declaration_id", FCT_COLUMNS, "meta.fct_row_digest"),
          Hashed("dim_taxpayer", "taxpayer_key", DIM_COLUMNS, "meta.dim_row_digest"))
"""The published tables a publication records, in marts (their history: <name>_history)."""
MARTS = "marts"


def one(cursor: psycopg.Cursor) -> tuple:
    """The one row a query returns (an aggregate, an INSERT … RETURNING)."""
    row = cursor.fetchone()
    if row is None:
        raise StageError("a query that returns one row returned none")
    return tuple(row)


def content(conn: psycopg.Connection, relation: str, table: Hashed) -> tuple[int, str]:
    """(rows, content hash) of ``relation`` holding ``table``'s columns, every row hashed."""
    # OFFSET 0 keeps the digest a column of the subquery: meta.hex128 is inlined on a column, not on
    # the md5 expression it would otherwise be handed (which it reads thrice).
    count, digest = one(conn.execute(
        f"""SELECT count(*), meta.digest_hex(coalesce(sum(meta.hex128(d)), 0))
              FROM (SELECT {table.digest('t')} AS d FROM {relation} t OFFSET 0) rows"""))
    return count, digest


def _history(conn: psycopg.Connection, table: Hashed, keys_sql: str | None, publication: int,
             published_at) -> tuple[int, int, int, int]:
    """Close the changed current versions and open the new ones for the keys ``keys_sql`` selects
    (None: every key). Returns (closed, closed digests' sum, opened, opened digests' sum)."""
    history, current = f"{MARTS}.{table.name}_history", f"{MARTS}.{table.name}"
    cols = ", ".join(table.columns)
    among = f" AND {{alias}}.{table.key} = ANY(ARRAY({keys_sql}))" if keys_sql else ""
    conn.execute("DROP TABLE IF EXISTS publication_rows")
    conn.execute(f"""CREATE TEMP TABLE publication_rows ON COMMIT DROP AS
                     SELECT {cols}, {table.digest('t')} AS row_digest FROM {current} t
                      WHERE true{among.format(alias='t')}""")
    conn.execute(f"CREATE UNIQUE INDEX ON publication_rows ({table.key})")
    conn.execute("ANALYZE publication_rows")
    closed, closed_sum = one(conn.execute(
        f"""WITH closed AS (
                UPDATE {history} h SET valid_to_publication = %(pub)s, valid_to = %(at)s
                 WHERE h.valid_to_publication IS NULL{among.format(alias='h')}
                   AND NOT EXISTS (SELECT FROM publication_rows n
                                    WHERE n.{table.key} = h.{table.key} AND n.row_digest = h.row_digest)
                RETURNING h.row_digest)
            SELECT count(*), coalesce(sum(meta.hex128(row_digest)), 0) FROM closed""",
        {"pub": publication, "at": published_at}))
    opened, opened_sum = one(conn.execute(
        f"""WITH opened AS (
                INSERT INTO {history} ({cols}, row_digest, valid_from_publication, valid_from)
                SELECT {cols}, row_digest, %(pub)s, %(at)s FROM publication_rows n
                 WHERE NOT EXISTS (SELECT FROM {history} h
                                    WHERE h.{table.key} = n.{table.key} AND h.valid_to_publication IS NULL)
                RETURNING row_digest)
            SELECT count(*), coalesce(sum(meta.hex128(row_digest)), 0) FROM opened""",
        {"pub": publication, "at": published_at}))
    conn.execute("DROP TABLE publication_rows")
    return closed, closed_sum, opened, opened_sum


def record(conn: psycopg.Connection, settings: Settings, build_id: int, full_refresh: bool,
           fct_keys_sql: str, dim_keys_sql: str | None) -> dict[str, int | str]:
    """Record the publication of build ``build_id`` (inside publish's transaction, after its DML),
    keep the history, and return what the step reports. ``*_keys_sql``: the keys the publication
    may have changed (a query); ignored on a full refresh or the first recorded publication."""
    run_id, logical_date, dbt_version, dbt_checksum = one(conn.execute(
        "SELECT run_id, logical_date, dbt_version, dbt_checksum FROM meta.mart_build WHERE id = %s",
        (build_id,)))
    high = conn.execute("SELECT to_regclass('marts_build.build_high_water') IS NOT NULL").fetchone()[0]
    raw_high_water, ledger_high_water = (conn.execute(
        "SELECT raw_high_water, ledger_high_water FROM marts_build.build_high_water").fetchone() or (None, None)) \
        if high else (None, None)
    previous = conn.execute("SELECT max(id) FROM meta.publication").fetchone()[0]
    publication, published_at = one(conn.execute(
        """INSERT INTO meta.publication (build_id, run_id, logical_date, full_refresh, raw_high_water,
                                        ledger_high_water, withdrawal_ids, project_version, git_revision,
                                        dbt_version, dbt_checksum, image_digests)
           VALUES (%s, %s, %s, %s, %s, %s,
                   ARRAY(SELECT id FROM meta.file_withdrawal WHERE applied_build_id IS NOT NULL ORDER BY id),
                   %s, %s, %s, %s, %s)
           RETURNING id, published_at""",
        (build_id, run_id, logical_date, full_refresh, raw_high_water, ledger_high_water, __version__,
         settings.git_revision, dbt_version, dbt_checksum, json.dumps(dict(settings.image_digests)))))
    if ledger_high_water is not None:
        conn.execute(
            """INSERT INTO meta.publication_input (publication_id, source_file_id, file_name, sha256, file_date,
                                                   run_id, rows_loaded, withdrawn)
               SELECT %(pub)s, s.id, s.file_name, s.sha256, s.file_date, s.run_id, s.rows_loaded,
                      EXISTS (SELECT FROM meta.file_withdrawal w
                               WHERE w.file_name = s.file_name AND w.run_id = s.run_id
                                 AND w.id = ANY(p.withdrawal_ids))
                 FROM meta.source_file s, meta.publication p
                WHERE p.id = %(pub)s AND s.outcome = 'LOADED' AND s.id <= %(hwm)s""",
            {"pub": publication, "hwm": ledger_high_water})
    full = full_refresh or previous is None
    done: dict[str, int | str] = {"publication_id": publication}
    for table, keys_sql in zip(TABLES, (fct_keys_sql, dim_keys_sql), strict=True):
        closed, closed_sum, opened, opened_sum = _history(conn, table, None if full or keys_sql is None else keys_sql,
                                                           publication, published_at)
        if full:
            rows, digest = one(conn.execute(
                f"""SELECT count(*), meta.digest_hex(coalesce(sum(meta.hex128(row_digest)), 0))
                      FROM {MARTS}.{table.name}_history WHERE valid_to_publication IS NULL"""))
        else:
            before = conn.execute(
                "SELECT row_count, content_hash FROM meta.publication_output WHERE publication_id = %s "
                "AND table_name = %s", (previous, table.name)).fetchone()
            if before is None:
                raise StageError(f"publication {previous} recorded no output for {table.name}: "
                                 "run a full refresh (dbt-build --full-refresh) to record it from every row")
            rows, digest = one(conn.execute(
                "SELECT %s::bigint - %s + %s, meta.digest_hex(meta.hex128(%s) - %s + %s)",
                (before[0], closed, opened, before[1], closed_sum, opened_sum)))
        conn.execute(
            """INSERT INTO meta.publication_output (publication_id, table_name, row_count, content_hash, computed)
               VALUES (%s, %s, %s, %s, %s)""",
            (publication, table.name, rows, digest, "full" if full else "incremental"))
        done[f"{table.name}_versions_opened"] = opened
        done[f"{table.name}_versions_closed"] = closed
    return done


def publications(settings: Settings) -> list[dict]:
    """Every recorded publication, oldest first, with its outputs and a count of its input files."""
    with connect(settings) as conn:
        rows = conn.execute(
            """SELECT p.id, p.logical_date, p.published_at, p.run_id, p.build_id, p.full_refresh,
                      p.raw_high_water, p.ledger_high_water, p.withdrawal_ids, p.project_version,
                      p.git_revision, p.dbt_version, p.dbt_checksum, p.image_digests, p.published_by,
                      (SELECT count(*) FROM meta.publication_input i WHERE i.publication_id = p.id AND NOT i.withdrawn),
                      (SELECT coalesce(jsonb_object_agg(o.table_name, jsonb_build_object(
                                 'rows', o.row_count, 'content_hash', o.content_hash, 'computed', o.computed)),
                               '{}')
                         FROM meta.publication_output o WHERE o.publication_id = p.id)
                 FROM meta.publication p ORDER BY p.id""").fetchall()
    keys = ("id", "logical_date", "published_at", "run_id", "build_id", "full_refresh", "raw_high_water",
            "ledger_high_water", "withdrawal_ids", "project_version", "git_revision", "dbt_version",
            "dbt_checksum", "image_digests", "published_by", "input_files", "outputs")
    out = []
    for row in rows:
        item = dict(zip(keys, row, strict=True))
        item["logical_date"] = item["logical_date"].isoformat() if item["logical_date"] else None
        for name in ("published_at", "raw_high_water"):
            item[name] = item[name].astimezone(dt.UTC).isoformat() if item[name] is not None else None
        out.append(item)
    return out


def listing(settings: Settings, as_json: bool) -> str:
    items = publications(settings)
    if as_json:
        return json.dumps(items, indent=2)
    if not items:
        return "no publication recorded yet (publish records each one, from migration 0014 on)"
    lines = [f"{'id':>5}  {'date':10}  {'published at (UTC)':19}  {'build':>5}  {'files':>5}  "
             f"{'fct rows':>10}  {'fct hash':32}  {'dim rows':>9}  {'dim hash':32}  git revision"]
    for p in items:
        fct, dim = p["outputs"].get("fct_contributions", {}), p["outputs"].get("dim_taxpayer", {})
        lines.append(f"{p['id']:>5}  {p['logical_date'] or '-':10}  {p['published_at'][:19].replace('T', ' '):19}  "
                     f"{p['build_id']:>5}  {p['input_files']:>5}  {fct.get('rows', '-'):>10}  "
                     f"{fct.get('content_hash', '-'):32}  {dim.get('rows', '-'):>9}  "
                     f"{dim.get('content_hash', '-'):32}  {p['git_revision']}")
    return "\n".join(lines)
