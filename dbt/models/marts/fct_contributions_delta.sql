{{
  config(
    materialized='table',
    indexes=[{'columns': ['declaration_id'], 'unique': true}],
    pre_hook=["select pg_advisory_xact_lock_shared(hashtextextended('contribflow:raw-writer', 0))",
              "set local work_mem = '64MB'"],
    post_hook=["{{ record_high_water() }}"]
  )
}}
{#- Write-audit-publish: the day's changes to the published marts.fct_contributions, built where
    analysts cannot see them (marts_build). `contribflow publish` applies them to marts
    (delete+insert by declaration_id) once every test passed on marts_build.fct_contributions,
    the view of what marts.fct_contributions would then hold. marts.fct_contributions is never
    copied: a day's build and publication cost the day's rows, not the history.
    With --full-refresh, or before the first publication, the delta is every current declaration
    (and publish replaces the published rows with it).
    Withdrawn files (meta.file_withdrawal): their rows are no declaration's state (the macro
    current_declarations); the declarations a withdrawal not yet published touches are restated
    here from what remains, or removed (fct_contributions_removed). -#}
{#- A daily build costs the day's rows, not the history: only raw rows that arrived after the newest
    one already published are read, through raw's btree index on ingestion_ts (migration 0005; a BRIN
    index excluded nothing until VACUUM summarized the newest pages, so all of raw was scanned).
    A late file for an older date never overwrites a declaration with a stale status. The pre-hook
    waits for any ingest in flight (it holds the same lock exclusively), so no row can commit
    behind the watermark.
    The watermark (found through the index on raw_loaded_at) is read first and written into the
    query as a literal: behind a subquery the planner cannot see how few rows are newer, and scans
    all of raw instead of using the index. Only publish changes the published table, and the
    builds, tests and publications of two runs never interleave (meta.mart_build), so reading it
    before the pre-hook's lock reads the same value. The day's rows are
    asked for as a range, up to raw's newest row (read after the lock, so nothing is left out):
    where raw has no statistics yet the planner takes a range to be narrow, and where they are
    stale it reads the range's true ends from the index; given only "after the watermark", it
    guessed a third of raw and scanned all of it.
    No index on taxpayer_key: nothing reads fct by it (per-taxpayer figures are dim_taxpayer), and
    its random inserts were more than half of a daily run, growing with history once it no longer
    fits in memory. The published table is the one read here: watermark and lookups. -#}
{%- set published = adapter.get_relation(database=target.database, schema='marts',
                                          identifier='fct_contributions') if execute else none %}
-- depends_on: {{ ref('stg_contributions') }}
-- depends_on: {{ ref('file_withdrawals_applied') }}
{% if published is not none and not flags.FULL_REFRESH %}
    {%- set watermark_sql -%}
        select to_char(max(raw_loaded_at) at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') from {{ published }}
    {%- endset -%}
    {%- set newest = run_query(watermark_sql).columns[0].values()[0] if execute else none -%}
    {%- set watermark = "timestamp '" ~ (newest or '-infinity') ~ "' at time zone 'UTC'" %}
    with arrived as (
        {{ current_declarations(since=watermark) }}
    ),

    touched as (
        {#- A withdrawal this build applies: each declaration it touches is restated from all of its
            raw rows outside withdrawn files (the state of the latest remaining file), whatever the
            watermark; one with none left is in fct_contributions_removed instead. #}
        {{ withdrawn_declarations() }}
    ),

    restated as (
        {{ current_declarations(among='select touched.declaration_id from touched') }}
    )

    select * from restated
    union all
    select arrived.*
    from arrived
    left join lateral (
        {#- One index lookup per arrived row (the limit keeps the planner from hashing all of the
            table; declaration_id is the published table's unique key: at most one row, no order). #}
        select
            true as found,
            here.file_date,
            here.raw_loaded_at
        from {{ published }} as here
        where here.declaration_id = arrived.declaration_id
        limit 1  -- noqa: AM09
    ) as known on true
    where
        not exists (
            select from touched
            where touched.declaration_id = arrived.declaration_id
        )
        and (
            {#- The macro's order: a later file date wins, then a later arrival (a state that
                returned within one file date arrived later: ingestion_ts orders revisions too). #}
            known.found is null
            or (arrived.file_date, arrived.raw_loaded_at) >= (known.file_date, known.raw_loaded_at)
        )
{% else %}
    select
        declaration_id,
        taxpayer_key,
        event_date,
        amount,
        currency,
        contribution_type,
        status,
        country,
        file_date,
        source_file,
        source_line,
        raw_loaded_at
    from {{ ref('stg_contributions') }}
{% endif %}
