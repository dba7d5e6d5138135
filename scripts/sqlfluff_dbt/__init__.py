"""The dbt context that sqlfluff's jinja templater lacks, for `make lint-sql` (library_path in .sqlfluff).

sqlfluff's dbt builtins (apply_dbt_builtins) give ref, source, config, var, is_incremental and this;
the models also read `execute`, `adapter.get_relation`, `target`, `flags.FULL_REFRESH` and
`run_query`, which only a dbt compile against a live warehouse has. These stand-ins render each model
as a daily build does: marts.fct_contributions is published, it is not a full refresh, and one file
withdrawal waits to be applied, so the incremental branches and every withdrawal clause are linted
(sqlfluff also renders the branches not taken here as variants). Nothing here reaches dbt itself.
"""

from __future__ import annotations

from types import SimpleNamespace

# dbt sets execute while it runs a model (False only while it parses the project).
execute = True
target = SimpleNamespace(database="warehouse", schema="staging")
flags = SimpleNamespace(FULL_REFRESH=False)


class _Adapter:
    """adapter.get_relation: every relation asked for exists (marts.fct_contributions is published)."""

    def get_relation(self, database: str, schema: str, identifier: str) -> str:
        return f"{schema}.{identifier}"


adapter = _Adapter()


class _Column:
    def __init__(self, values: list[str]) -> None:
        self._values = values

    def values(self) -> list[str]:
        return self._values


class _Table:
    """What run_query returns, for the two queries the project runs: the watermark (one value, read as
    columns[0].values()[0]) and file_withdrawals_applied (rows of file_name, run_id, first and last
    ingestion_ts)."""

    columns = [_Column(["2026-01-01 06:00:00.000000"])]
    rows = [("contributions_20260101.csv", "run-1", "2026-01-01 06:00:00.000000", "2026-01-01 06:05:00.000000")]


def run_query(sql: str) -> _Table:
    return _Table()


def env_var(name: str, default: str = "") -> str:
    return default
