{#- The current version of each declaration: the state of the latest file that mentioned it (the
    greatest file_date), then the latest arrival (ingestion_ts: a state that returned within one
    file date, migration 0010's revision, arrived later), then the later line. A file mentions a
    declaration by a row of raw.contributions, or, when it repeated a state already stored for the
    same file date, by a row of raw.contributions_restated (migration 0012): that state, with the
    repeating file's name, line and time. Rows of a withdrawn file (meta.file_withdrawal,
    `contribflow withdraw-file`) are no declaration's state. Under `contribflow reproduce`: only rows up
    to a publication's high-water mark, and its withdrawals (vars; the macros as_of_raw, not_withdrawn).
    `since`: only the mentions that arrived after this timestamp (a SQL expression), up to the
    newest of each table (the incremental fact build); `among`: only these declarations (a query
    of declaration ids). Shared by stg_contributions (all history) and fct_contributions_delta. -#}
{% macro current_declarations(since=none, among=none) %}
    {%- set raw = source('raw', 'contributions') -%}
    {%- set restated = source('raw', 'contributions_restated') -%}
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
        raw_loaded_at
    from (
        select
            r.declaration_id, r.taxpayer_key, r.event_date, r.amount, r.currency, r.contribution_type,
            r.status, r.country, r.file_date, r.source_file, r.source_line, r.ingestion_ts as raw_loaded_at
        from {{ raw }} as r
        where {{ not_withdrawn('r') }}{{ as_of_raw('r') }}
        {%- if since %}
            and r.ingestion_ts > {{ since }}
            and r.ingestion_ts <= (select max(loaded.ingestion_ts) from {{ raw }} as loaded)
        {%- endif %}
        {%- if among %}
            and r.declaration_id in ({{ among }})
        {%- endif %}
        union all
        select
            r.declaration_id, r.taxpayer_key, r.event_date, r.amount, r.currency, r.contribution_type,
            r.status, r.country, m.file_date, m.source_file, m.source_line, m.ingestion_ts as raw_loaded_at
        from {{ restated }} as m
        inner join {{ raw }} as r
            on m.declaration_id = r.declaration_id and m.file_date = r.file_date
            and m.record_hash = r.record_hash and m.revision = r.revision
        where {{ not_withdrawn('m') }}{{ as_of_raw('m') }}
        {%- if since %}
            and m.ingestion_ts > {{ since }}
            and m.ingestion_ts <= (select max(loaded.ingestion_ts) from {{ restated }} as loaded)
        {%- endif %}
        {%- if among %}
            and m.declaration_id in ({{ among }})
        {%- endif %}
    ) as mentions
    order by declaration_id asc, file_date desc, raw_loaded_at desc, source_line desc
{% endmacro %}

{#- Whether declaration `declaration_id` has a state left outside withdrawn files: a row of raw, or
    a repeat of one, whose file is not withdrawn. -#}
{% macro has_state(declaration_id) %}
    (exists (
        select from {{ source('raw', 'contributions') }} as r
        where r.declaration_id = {{ declaration_id }} and {{ not_withdrawn('r') }}
    ) or exists (
        select from {{ source('raw', 'contributions_restated') }} as m
        where m.declaration_id = {{ declaration_id }} and {{ not_withdrawn('m') }}
    ))
{% endmacro %}

{#- Whether the row `alias` of raw (or of its repeats) belongs to no withdrawn file (rows are tied to
    their file by (source_file, run_id)). meta.file_withdrawal is small: a hash anti-join. -#}
{% macro not_withdrawn(alias) %}
    {%- set as_of = var('as_of_withdrawn', none) %}
    {%- if as_of is none %}
    not exists (
        select from {{ source('meta', 'file_withdrawal') }} as withdrawn
        where withdrawn.file_name = {{ alias }}.source_file and withdrawn.run_id = {{ alias }}.run_id
    )
    {%- elif as_of | length == 0 %}
    true
    {%- else %}
    ({{ alias }}.source_file, {{ alias }}.run_id) not in (
        {%- for w in as_of %}
        ('{{ w[0] | replace("'", "''") }}', '{{ w[1] | replace("'", "''") }}'){% if not loop.last %},{% endif %}
        {%- endfor %}
    )
    {%- endif %}
{% endmacro %}

{#- The declarations with a row in a file whose withdrawal this build applies
    (file_withdrawals_applied, built before the models that call this). Like the fact delta's
    watermark, the withdrawals are read first and written into the query as literals: each file's
    rows are then found through raw's ingestion_ts index within the span its withdrawal recorded,
    and a build with no withdrawal to apply (every ordinary day) does not read raw here at all; a
    join with the table instead let the planner, without statistics, scan all of raw. -#}
{% macro withdrawn_declarations() %}
    {%- set withdrawals = [] -%}
    {%- if execute -%}
        {%- set withdrawals_sql -%}
            select file_name, run_id,
                   to_char(first_loaded_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'),
                   to_char(last_loaded_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')
            from {{ ref('file_withdrawals_applied') }}
            order by id
        {%- endset -%}
        {%- set withdrawals = run_query(withdrawals_sql).rows -%}
    {%- endif -%}
    {%- set spans = [] -%}
    {%- for w in withdrawals if w[2] -%}{%- do spans.append(w) -%}{%- endfor -%}
    {%- if withdrawals | length == 0 %}
    select cast(null as text) as declaration_id
    where false
    {%- else %}
    {%- if spans | length > 0 %}
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
    union
    {%- endif %}
    {#- A withdrawn file's repeats of states stored earlier (raw.contributions_restated: a small
        table, read whole). #}
    select distinct m.declaration_id
    from {{ source('raw', 'contributions_restated') }} as m
    where (m.source_file, m.run_id) in (
        {%- for w in withdrawals %}
        ('{{ w[0] | replace("'", "''") }}', '{{ w[1] | replace("'", "''") }}'){% if not loop.last %},{% endif %}
        {%- endfor %}
    )
    {%- endif %}
{% endmacro %}

{#- What the build could read of raw, recorded for its publication (meta.publication, migration
    0014): run as the fact delta's post-hook, in that model's transaction, which holds the
    raw-writer lock from its pre-hook, so no load commits between the delta's read and this one;
    a later load's rows have later ingestion_ts (it takes the lock first). The ledger's high-water
    mark is the newest LOADED file's id (its ledger row commits with its rows). -#}
{% macro record_high_water() %}
    drop table if exists {{ this.schema }}.build_high_water;
    create table {{ this.schema }}.build_high_water as
    select
        greatest(
            (select max(r.ingestion_ts) from {{ source('raw', 'contributions') }} as r),
            (select max(m.ingestion_ts) from {{ source('raw', 'contributions_restated') }} as m)
        ) as raw_high_water,
        (select max(s.id) from {{ source('meta', 'source_file') }} as s where s.outcome = 'LOADED')
            as ledger_high_water
{% endmacro %}

{#- `contribflow reproduce` (contribflow/warehouse/reproduce.py) rebuilds a publication from raw
    alone: its vars `as_of_high_water` (a timestamptz literal) and `as_of_withdrawn` (the
    [file name, run id] pairs withdrawn at that publication) replace "all of raw" and
    meta.file_withdrawal. Unset (every daily build): no filter. -#}
{% macro as_of_raw(alias) %}
    {%- if var('as_of_high_water', none) is not none %}
        and {{ alias }}.ingestion_ts <= timestamptz '{{ var("as_of_high_water") | replace("'", "''") }}'
    {%- endif %}
{% endmacro %}
