{#- The current version of each declaration among `relation`'s rows (raw.contributions): the state
    of the latest file that mentioned it (the greatest file_date), then the latest arrival
    (ingestion_ts: a state that returned within one file date, migration 0010's revision, arrived
    later), then the later line. Rows of a withdrawn file (meta.file_withdrawal, `contribflow
    withdraw-file`) are not part of any declaration's state. Shared by stg_contributions (all
    history) and the incremental branch of fct_contributions_delta (the rows that arrived since the
    last publication, and the declarations a withdrawal touches). -#}
{% macro current_declarations(relation, where=none) %}
    select distinct on (declaration_id)
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
        ingestion_ts as raw_loaded_at
    from {{ relation }} as r
    where {{ not_withdrawn('r') }}
    {% if where %}and ({{ where }}){% endif %}
    order by declaration_id, file_date desc, ingestion_ts desc, source_line desc
{% endmacro %}

{#- Whether raw row `alias` belongs to no withdrawn file (raw rows are tied to their file by
    (source_file, run_id)). meta.file_withdrawal is small: a hash anti-join. -#}
{% macro not_withdrawn(alias) %}
    not exists (
        select from {{ source('meta', 'file_withdrawal') }} as withdrawn
        where withdrawn.file_name = {{ alias }}.source_file and withdrawn.run_id = {{ alias }}.run_id
    )
{% endmacro %}

{#- The declarations with a row in a file whose withdrawal this build applies
    (file_withdrawals_applied), found through raw's ingestion_ts index within the span the
    withdrawal recorded. -#}
{% macro withdrawn_declarations() %}
    select distinct r.declaration_id
    from {{ ref('file_withdrawals_applied') }} as w
    inner join {{ source('raw', 'contributions') }} as r
        on r.ingestion_ts between w.first_loaded_at and w.last_loaded_at
        and r.source_file = w.file_name
        and r.run_id = w.run_id
{% endmacro %}
