{{
  config(
    materialized='table',
    indexes=[{'columns': ['declaration_id'], 'unique': true}]
  )
}}
{#- The declarations that leave marts.fct_contributions with this build: a withdrawal it applies
    took their every remaining state (each row of theirs in raw, and each repeat of one, is in a
    withdrawn file). `contribflow
    publish` deletes them from marts.fct_contributions; the audit view (fct_contributions) leaves
    them out. A declaration touched by a withdrawal that keeps a state is in the delta instead.
    Empty on a full refresh, which replaces every published row. -#}
{%- set published = adapter.get_relation(database=target.database, schema='marts',
                                          identifier='fct_contributions') if execute else none %}
-- depends_on: {{ ref('file_withdrawals_applied') }}
{#- Built after the delta, never beside it: replacing either drops its previous version with the
    audit view that reads both (fct_contributions), and two threads doing so at once deadlocked. #}
-- depends_on: {{ ref('fct_contributions_delta') }}
{% if published is not none and not flags.FULL_REFRESH %}
    with touched as (
        {{ withdrawn_declarations() }}
    )

    select touched.declaration_id
    from touched
    where not {{ has_state('touched.declaration_id') }}
{% else %}
    select cast(null as text) as declaration_id
    where false
{% endif %}
