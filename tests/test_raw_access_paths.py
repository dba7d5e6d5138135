"""How the daily transform finds the day's rows in raw (issue 8: a daily cost that follows the day)."""

from __future__ import annotations

import pytest

from contribflow import cli
from contribflow.settings import Settings
from contribflow.warehouse import transform

pytestmark = pytest.mark.integration

_ROWS = """
insert into raw.contributions (declaration_id, taxpayer_id, taxpayer_key, event_date, amount, currency,
                               contribution_type, status, country, file_date, source_file, source_line,
                               run_id, ingestion_ts, record_hash)
select 'D' || i, '12345', 'k', date '2026-01-01', 1, 'EUR', 'INCOME_TAX', 'DUE', 'LU', date '2026-01-01',
       'f.csv', i, 'r', timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second', md5(i::text)::uuid
  from generate_series(%s, %s) as i
"""


def test_the_incremental_fct_reads_the_new_rows_by_index_even_without_statistics(database, sql, monkeypatch):
    """The incremental fct query as dbt compiles it, planned right after a load that no ANALYZE has
    seen. Asked for "ingestion_ts after the watermark", the planner guessed a third of raw and
    scanned all of it (and a BRIN index would have excluded none of the new, unsummarized pages)."""
    assert cli.main(["init-db"]) == 0
    sql("alter table raw.contributions set (autovacuum_enabled = off)")
    sql(_ROWS, (1, 200_000))
    monkeypatch.setenv("CONTRIBFLOW_RUN_ID", "run-history")
    for stage in ("dbt-build", "dbt-test", "publish"):  # the published fct the delta is built against
        assert cli.main([stage, "--date", "2026-01-03"]) == 0
    sql(_ROWS, (200_001, 210_000))
    assert sql("select reltuples from pg_class where oid = 'raw.contributions'::regclass") == [(-1,)]

    settings = Settings.from_env()
    assert transform._invoke(settings, "compile", ["--select", "fct_contributions_delta"]).success
    compiled = next(transform.target_dir(settings).rglob("compiled/**/fct_contributions_delta.sql")).read_text()
    assert "ingestion_ts >" in compiled  # the incremental branch
    plan = "\n".join(r[0] for r in sql("explain " + compiled))
    assert "Seq Scan on contributions " not in plan, plan
    assert "contributions_ingestion_ts" in plan, plan
    arrived = sql(f"select count(*) from ({compiled}) as arrived")
    assert arrived == [(10_000,)]


def test_a_pending_withdrawal_is_found_by_index_and_its_rows_leave_the_delta(database, sql, monkeypatch, people):
    """A withdrawal the build applies: its file's rows are found through raw's ingestion_ts index
    within the span the withdrawal recorded (never a scan of raw), and they are no state."""
    assert cli.main(["init-db"]) == 0
    sql("alter table raw.contributions set (autovacuum_enabled = off)")
    sql(_ROWS, (1, 200_000))
    monkeypatch.setenv("CONTRIBFLOW_RUN_ID", "run-history")
    for stage in ("dbt-build", "dbt-test", "publish"):
        assert cli.main([stage, "--date", "2026-01-03"]) == 0
    sql(_ROWS, (200_001, 210_000))
    # A file of 100 rows loaded after them (each a new declaration), then withdrawn.
    sql("""insert into raw.contributions (declaration_id, taxpayer_id, taxpayer_key, event_date, amount, currency,
                                          contribution_type, status, country, file_date, source_file, source_line,
                                          run_id, ingestion_ts, record_hash)
           select 'W' || i, '12345', 'k', date '2026-01-02', 1, 'EUR', 'INCOME_TAX', 'DUE', 'LU', date '2026-01-02',
                  'contributions_20260102.csv', i, 'rw', timestamptz '2026-01-05 00:00:00+00' + i * interval '1 ms', md5('w' || i)::uuid
             from generate_series(1, 100) as i""")
    [(source_id,)] = sql("insert into meta.source_file (file_name, sha256, file_date, size_bytes, outcome, run_id) "
                         "values ('contributions_20260102.csv', 'sha', '2026-01-02', 1, 'LOADED', 'rw') returning id")
    # Withdrawn the only way there is since issue 28: an approved request, applied (not yet published).
    request = people.approved(["withdraw-file", "--date", "2026-01-02", "--reason", "test"])
    assert cli.main(["apply", str(request), "--no-publish"]) == 0
    assert sql("select source_file_id, raw_rows from meta.file_withdrawal") == [(source_id, 100)]
    settings = Settings.from_env()
    assert transform._invoke(settings, "run", ["--select", "file_withdrawals_applied"]).success
    assert transform._invoke(settings, "compile", ["--select", "fct_contributions_delta"]).success
    compiled = next(transform.target_dir(settings).rglob("compiled/**/fct_contributions_delta.sql")).read_text()
    assert "r.source_file = 'contributions_20260102.csv'" in compiled  # the withdrawal, as literals
    plan = "\n".join(r[0] for r in sql("explain " + compiled))
    assert "Seq Scan on contributions " not in plan, plan
    delta = sql(f"select count(*), count(*) filter (where declaration_id like 'W%%') from ({compiled}) as d")
    assert delta == [(10_000, 0)]
