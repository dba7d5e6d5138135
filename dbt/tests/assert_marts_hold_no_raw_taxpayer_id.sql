-- Pseudonymisation guard: no column of any marts table, published or being built, may be called taxpayer_id.
select
    table_name,
    column_name
from information_schema.columns
where table_schema in ('marts', 'marts_build') and column_name = 'taxpayer_id'
