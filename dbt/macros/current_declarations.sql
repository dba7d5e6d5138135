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
    (file_withdrawals_applied, built before the models that call this). Like the fact delta's
    watermark, the withdrawals are read first and written into the query as literals: each file's
    rows are then found through raw's ingestion_ts index within the span its withdrawal recorded,
    and a build with no withdrawal to apply (every ordinary day) does not read raw here at all; a
    join with the table instead let the planner, without statistics, scan all of raw. -#}
{% macro withdrawn_declarations() %}
    {%- set spans = [] -%}
    {%- if execute -%}
        {%- set spans_sql -%}
            select file_name, run_id,
                   to_char(first_loaded_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'),
                   to_char(last_loaded_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')
            from {{ ref('file_withdrawals_applied') }}
            where first_loaded_at is not null
            order by id
        {%- endset -%}
        {%- set spans = run_query(spans_sql).rows -%}
    {%- endif -%}
    {%- if spans | length == 0 %}
    select cast(null as text) as declaration_id
    where false
    {%- else %}
    select distinct r.declaration_id
    from {{ source('raw', 'contributions') }} as r
    where
        {%- for span in spans %}
        {% if not loop.first %}or {% endif -%}
        (r.ingestion_ts between (timestamp '{{ span[2] }}' at time zone 'UTC')
                            and (timestamp '{{ span[3] }}' at time zone 'UTC')
         and r.source_file = '{{ span[0] | replace("'", "''") }}'
         and r.run_id = '{{ span[1] | replace("'", "''") }}')
        {%- endfor %}
    {%- endif %}
{% endmacro %}
