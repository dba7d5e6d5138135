{{
  config(
    materialized='incremental',
    unique_key='declaration_id',
    incremental_strategy='delete+insert',
    on_schema_change='fail',
    indexes=[{'columns': ['declaration_id'], 'unique': true}, {'columns': ['taxpayer_key']}],
    pre_hook="select pg_advisory_xact_lock_shared(hashtextextended('contribflow:raw-writer', 0))"
  )
}}
{#- A daily run costs the day's rows, not the history: only raw rows that arrived after the newest
    one already here are read (found through raw's BRIN index on ingestion_ts). A late file for an
    older date never overwrites a declaration with a stale status. The pre-hook waits for any ingest
    in flight (it holds the same lock exclusively), so no row can commit behind the watermark. -#}
{% if is_incremental() %}
with arrived as (
    {{ current_declarations(
        source('raw', 'contributions'),
        where="ingestion_ts > (select coalesce(max(raw_loaded_at), '-infinity') from " ~ this ~ ")"
    ) }}
)
select arrived.*
from arrived
left join {{ this }} as known using (declaration_id)
where known.declaration_id is null
   or (arrived.file_date, arrived.raw_loaded_at) >= (known.file_date, known.raw_loaded_at)
{% else %}
select * from {{ ref('stg_contributions') }}
{% endif %}
