"""raw.contributions' one unique index: (declaration_id, record_hash) (migration 0009), then
(declaration_id, file_date, record_hash, revision) (migration 0010).

0009's replaced two indexes: the unique record hash (a row already there is a no-op) and the
declaration_id index that trace reads. 0010's keeps both jobs, with a state's arrival for a file date
as what is unique (a reversal to an earlier state is a new row). These tests hold each to its jobs,
on a new warehouse and on one upgraded with rows in it.
"""

from __future__ import annotations

import datetime as dt

import pytest

from contribflow import cli
from contribflow.warehouse import migrate

from helpers import good_row, write_source

DAY = dt.date(2026, 11, 2)


def _indexes(sql) -> dict[str, str]:
    return dict(sql("select indexname, indexdef from pg_indexes "
                    "where schemaname = 'raw' and tablename = 'contributions'"))


def _ingest(landing, day, rows) -> None:
    path = write_source(landing, day, rows)
    assert cli.main(["ingest", "--date", day.isoformat(), "--file", str(path)]) == 0


def _loaded_as_before(sql, day, rows, source_file: str = "old.csv") -> None:
    """Rows in raw as an ingest of an older schema left them (today's ingest writes the ledger
    columns and tables of later migrations, so it cannot run against that schema)."""
    for line, row in enumerate(rows, 2):
        sql("""insert into raw.contributions (declaration_id, taxpayer_id, taxpayer_key, event_date, amount,
                   currency, contribution_type, status, country, file_date, source_file, source_line, run_id,
                   record_hash)
               select d, t, md5(t), e::date, a::numeric, c, k, s, n, %s, %s, %s, 'old-run',
                      raw.record_hash(d, t, e::date, a::numeric, c, k, s, n)
                 from (values (%s, %s, %s, %s, %s, %s, %s, %s)) v (d, t, e, a, c, k, s, n)""",
            (day, source_file, line, *row))


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
    # Upgraded across 0009 and 0010 (the code that loads next needs 0010's): 0010's index, which
    # keeps 0009's jobs (tested here) and adds its own (test_0010_upgrade_…).
    indexes = _indexes(sql)
    name = "contributions_declaration_id_file_date_record_hash_revision_key"
    assert set(indexes) == {name, "contributions_ingestion_ts"}
    assert "UNIQUE INDEX" in indexes[name]
    assert sql("select count(*) from raw.contributions") == [(5,)]

    # The next day re-sends two declarations unchanged and one in a new state: since 0010 each is
    # an arrival for another file date (a new row; the marts show the latest file's state) ...
    _ingest(landing, DAY + dt.timedelta(days=1),
            [good_row(1), good_row(2), good_row(3, status="PAID"), good_row(6)])
    # ... and the same rows again for that date are no-ops.
    path = write_source(landing, DAY + dt.timedelta(days=1), [good_row(6), good_row(2), good_row(1)])
    assert cli.main(["ingest", "--date", (DAY + dt.timedelta(days=1)).isoformat(), "--file", str(path)]) == 0
    assert sql("select declaration_id, count(*) from raw.contributions group by 1 order by 1") == [
        ("DEC_20261101_000001", 2), ("DEC_20261101_000002", 2), ("DEC_20261101_000003", 2),
        ("DEC_20261101_000004", 1), ("DEC_20261101_000005", 1), ("DEC_20261101_000006", 1)]

    from contribflow.audit import trace
    sql("set enable_seqscan = off")
    plan = "\n".join(r[0] for r in sql("EXPLAIN " + trace._RAW, (["DEC_20261101_000003"],)))
    assert name in plan, plan


@pytest.mark.integration
def test_the_same_row_under_another_declaration_is_a_new_row(database, sql, tmp_path):
    """Uniqueness is the record hash's, not the declaration's: two declarations with equal values
    otherwise are two rows, and each declaration keeps every state it was sent in."""
    assert cli.main(["init-db"]) == 0
    a, b = good_row(1), good_row(2)
    assert a[1:] == b[1:]
    _ingest(tmp_path / "landing", DAY, [a, b])
    _ingest(tmp_path / "landing", DAY, [good_row(1, status="PAID"), b])  # b again for DAY: a no-op
    assert sql("select count(*), count(distinct record_hash), count(distinct declaration_id) "
               "from raw.contributions") == [(3, 3, 2)]


@pytest.mark.integration
def test_0010_upgrade_keeps_rows_and_hashes_dedups_keeps_reversals_and_traces_through_the_new_index(
        database, sql, tmp_path, monkeypatch):
    landing = tmp_path / "landing"
    shipped = migrate.migration_files()
    assert any(version.startswith("0010") for version, _ in shipped)
    monkeypatch.setattr(migrate, "migration_files", lambda: [m for m in shipped if m[0] < "0010"])
    assert cli.main(["init-db"]) == 0
    _loaded_as_before(sql, DAY, [good_row(n) for n in range(1, 6)], "contributions_20261102.csv")
    _loaded_as_before(sql, DAY + dt.timedelta(days=1), [good_row(1, status="PAID"), good_row(6)],
                      "contributions_20261103.csv")
    before = sql("select declaration_id, file_date, record_hash, ingestion_ts, source_line from raw.contributions "
                 "order by 1, 4")

    monkeypatch.setattr(migrate, "migration_files", lambda: shipped)
    assert cli.main(["init-db"]) == 0
    assert cli.main(["init-db"]) == 0  # applied once: a second init-db changes nothing
    indexes = _indexes(sql)
    name = "contributions_declaration_id_file_date_record_hash_revision_key"
    assert set(indexes) == {name, "contributions_ingestion_ts"}
    assert "UNIQUE INDEX" in indexes[name]
    assert indexes[name].endswith("(declaration_id, file_date, record_hash, revision)")
    # Every row and hash kept, each revision 0, and each hash still the SQL definition's.
    assert sql("select declaration_id, file_date, record_hash, ingestion_ts, source_line from raw.contributions "
               "order by 1, 4") == before
    assert sql("select count(*) filter (where revision <> 0), count(*) filter (where record_hash <> raw.record_hash("
               "declaration_id, taxpayer_id, event_date, amount, currency, contribution_type, status, country)) "
               "from raw.contributions") == [(0, 0)]

    # Dedup still works: the second day re-sent again (another file, the same rows) adds nothing ...
    path = write_source(landing, DAY + dt.timedelta(days=1), [good_row(6), good_row(1, status="PAID")])
    assert cli.main(["ingest", "--date", (DAY + dt.timedelta(days=1)).isoformat(), "--file", str(path)]) == 0
    assert sql("select count(*) from raw.contributions") == [(len(before),)]
    # ... and a return to day one's state on day three is a new arrival (0009 made it a no-op).
    _ingest(landing, DAY + dt.timedelta(days=2), [good_row(1)])
    assert sql("select file_date, status from raw.contributions where declaration_id = %s order by ingestion_ts",
               ("DEC_20261101_000001",)) == [(DAY, "DUE"), (DAY + dt.timedelta(days=1), "PAID"),
                                             (DAY + dt.timedelta(days=2), "DUE")]

    from contribflow.audit import trace
    sql("set enable_seqscan = off")  # 9 rows: ask whether the index serves the lookup
    plan = "\n".join(r[0] for r in sql("EXPLAIN " + trace._RAW, (["DEC_20261101_000001"],)))
    assert f"using {name}" in plan, plan
    assert "Seq Scan on contributions" not in plan, plan
