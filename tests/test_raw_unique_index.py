"""raw.contributions' one unique index, (declaration_id, record_hash) (migration 0009).

It replaced two indexes: the unique record hash (a row already there is a no-op) and the
declaration_id index that trace reads. These tests hold it to both jobs, on a new warehouse and on
one upgraded with rows in it.
"""

from __future__ import annotations

import datetime as dt

import pytest

from contribflow import cli, migrate

from helpers import good_row, write_source

DAY = dt.date(2026, 11, 2)


def _indexes(sql) -> dict[str, str]:
    return dict(sql("select indexname, indexdef from pg_indexes "
                    "where schemaname = 'raw' and tablename = 'contributions'"))


def _ingest(landing, day, rows) -> None:
    path = write_source(landing, day, rows)
    assert cli.main(["ingest", "--date", day.isoformat(), "--file", str(path)]) == 0


def _loaded_as_before(sql, day, rows) -> None:
    """Rows in raw as an ingest of the schema before 0009 left them (today's ingest writes the
    ledger columns of later migrations, so it cannot run against that schema)."""
    for line, row in enumerate(rows, 2):
        sql("""insert into raw.contributions (declaration_id, taxpayer_id, taxpayer_key, event_date, amount,
                   currency, contribution_type, status, country, file_date, source_file, source_line, run_id,
                   record_hash)
               select d, t, md5(t), e::date, a::numeric, c, k, s, n, %s, 'old.csv', %s, 'old-run',
                      raw.record_hash(d, t, e::date, a::numeric, c, k, s, n)
                 from (values (%s, %s, %s, %s, %s, %s, %s, %s)) v (d, t, e, a, c, k, s, n)""",
            (day, line, *row))


@pytest.mark.integration
def test_an_upgraded_warehouse_keeps_its_rows_and_dedups_and_traces_through_the_one_index(
        database, sql, tmp_path, monkeypatch):
    landing = tmp_path / "landing"
    shipped = migrate.migration_files()
    before = [m for m in shipped if m[0] < "0009"]
    assert any(version.startswith("0009") for version, _ in shipped)  # the upgrade this test crosses
    monkeypatch.setattr(migrate, "migration_files", lambda: before)
    assert cli.main(["init-db"]) == 0
    assert {"contributions_record_hash_key", "contributions_declaration_id"} <= set(_indexes(sql))
    _loaded_as_before(sql, DAY, [good_row(n) for n in range(1, 6)])

    monkeypatch.setattr(migrate, "migration_files", lambda: shipped)
    assert cli.main(["init-db"]) == 0
    indexes = _indexes(sql)
    assert set(indexes) == {"contributions_declaration_id_record_hash_key", "contributions_ingestion_ts"}
    assert "UNIQUE INDEX" in indexes["contributions_declaration_id_record_hash_key"]
    assert indexes["contributions_declaration_id_record_hash_key"].endswith("(declaration_id, record_hash)")
    assert sql("select count(*) from raw.contributions") == [(5,)]

    # The next day re-sends two declarations unchanged (no-ops) and one in a new state (a new row).
    _ingest(landing, DAY + dt.timedelta(days=1),
            [good_row(1), good_row(2), good_row(3, status="PAID"), good_row(6)])
    assert sql("select declaration_id, count(*) from raw.contributions group by 1 order by 1") == [
        ("DEC_20261101_000001", 1), ("DEC_20261101_000002", 1), ("DEC_20261101_000003", 2),
        ("DEC_20261101_000004", 1), ("DEC_20261101_000005", 1), ("DEC_20261101_000006", 1)]

    from contribflow import trace
    sql("set enable_seqscan = off")
    plan = "\n".join(r[0] for r in sql("EXPLAIN " + trace._RAW, (["DEC_20261101_000003"],)))
    assert "contributions_declaration_id_record_hash_key" in plan, plan


@pytest.mark.integration
def test_the_same_row_under_another_declaration_is_a_new_row(database, sql, tmp_path):
    """Uniqueness is the record hash's, not the declaration's: two declarations with equal values
    otherwise are two rows, and each declaration keeps every state it was sent in."""
    assert cli.main(["init-db"]) == 0
    a, b = good_row(1), good_row(2)
    assert a[1:] == b[1:]
    _ingest(tmp_path / "landing", DAY, [a, b])
    _ingest(tmp_path / "landing", DAY + dt.timedelta(days=1), [good_row(1, status="PAID"), b])
    assert sql("select count(*), count(distinct record_hash), count(distinct declaration_id) "
               "from raw.contributions") == [(3, 3, 2)]
