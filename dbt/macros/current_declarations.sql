{#- The current version of each declaration among `relation`'s rows: a later file wins, and within
    a file the later line. Shared by stg_contributions (all history) and the incremental branch of
    fct_contributions (only the rows that arrived since the last run). -#}
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
    from {{ relation }}
    {% if where %}where {{ where }}{% endif %}
    order by declaration_id, file_date desc, ingestion_ts desc, source_line desc
{% endmacro %}
