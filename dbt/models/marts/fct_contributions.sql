{{ config(materialized='view') }}
{#- The audit relation: exactly what marts.fct_contributions will hold once this build is
    published (the published rows the delta does not replace or fct_contributions_removed does not
    remove, plus the delta), so that every test
    of fct_contributions runs against what analysts would read, without copying the history.
    It lives in marts_build, out of analysts' sight, and is never published itself. -#}
{%- set published = adapter.get_relation(database=target.database, schema='marts',
                                          identifier='fct_contributions') if execute else none %}
{%- set columns = ['declaration_id', 'taxpayer_key', 'event_date', 'amount', 'currency', 'contribution_type',
                   'status', 'country', 'file_date', 'source_file', 'source_line', 'raw_loaded_at'] %}
-- depends_on: {{ ref('fct_contributions_removed') }}
{% if published is not none and not flags.FULL_REFRESH %}
    select {{ columns | join(', ') }}
    from {{ published }} as kept
    where
        not exists (
            select from {{ ref('fct_contributions_delta') }} as replaced
            where replaced.declaration_id = kept.declaration_id
        )
        and not exists (
            select from {{ ref('fct_contributions_removed') }} as removed
            where removed.declaration_id = kept.declaration_id
        )
    union all
{% endif %}
select {{ columns | join(', ') }}
from {{ ref('fct_contributions_delta') }}
